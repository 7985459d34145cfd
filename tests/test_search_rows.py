"""`Index.search_rows` (what `retrieve query` prints) gives the rows of `Index.search`, without pandas."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from retrieval import synth
from retrieval.configure import Choices
from retrieval.index import Index
from retrieval.ingest import IngestOptions, ingest
from retrieval.render import clean_record
from tests.conftest import write


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(index, first root)``: the demo corpus plus a second root holding another file at one
    of its paths, with metadata columns (an integer column with NULLs, a text column)."""
    tmp_path = tmp_path_factory.mktemp("rows")
    corpus = tmp_path / "corpus"
    synth.write_demo_corpus(corpus, per_class=4)
    other = tmp_path / "other"
    write(other / "tone" / "tone_00.wav", synth.sine(880, 1.3, 16000), 16000)
    write(other / "long.wav", synth.chirp(300, 3000, 9.0, 16000), 16000)
    csv = tmp_path / "meta.csv"
    csv.write_text("file,take,site\ntone/tone_01.wav,3,north\nchirp/chirp_00.wav,,south\nnoise/noise_02.wav,12,\n")
    ix = tmp_path / "ix"
    ingest([corpus, other], ix, Choices(window_s=1.0, hop_s=0.5), IngestOptions(labels_csv=csv))
    return ix, corpus


def _frame_rows(hits) -> list[dict]:
    return [clean_record(r) for r in hits.to_dict(orient="records")]


@pytest.mark.parametrize("windows", [False, True])
def test_rows_equal_the_dataframe(built: tuple[Path, Path], windows: bool) -> None:
    two_roots, corpus = built
    with Index.open(two_roots) as idx:
        for clip, where, k in itertools.product(
                (corpus / "tone" / "tone_01.wav", corpus / "chirp" / "chirp_00.wav"),
                (None, "take >= 3", "site = 'south' OR label = 'noise'", "take > 99"), (1, 4, 500)):
            frame = idx.search(clip, k, windows=windows, where=where)
            rows, warnings = idx.search_rows(clip, k, windows=windows, where=where)
            assert [clean_record(r) for r in rows] == _frame_rows(frame)
            assert warnings == frame.attrs["warnings"] == []
            if rows:
                assert list(rows[0]) == list(frame.columns)


def test_rows_by_file_name_each_file_once_and_rank_from_one(built: tuple[Path, Path]) -> None:
    two_roots, corpus = built
    with Index.open(two_roots) as idx:
        rows, _ = idx.search_rows(corpus / "tone" / "tone_00.wav", 50)
        n_files = len(idx.files())
    assert len(rows) == n_files  # k beyond the corpus: every file once
    assert len({r["file_id"] for r in rows}) == len(rows)
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    # the same relative path under two roots is two files, each named with its root
    assert sorted(r["root"] for r in rows if r["path"] == "tone/tone_00.wav") == sorted(
        str(p.resolve()) for p in (corpus, two_roots.parent / "other"))
    takes = {r["path"]: r["take"] for r in rows if r["root"] == str(corpus.resolve())}
    assert takes["tone/tone_01.wav"] == 3 and takes["chirp/chirp_00.wav"] is None
    assert isinstance(takes["tone/tone_01.wav"], int)  # an integer, not 3.0


def test_a_silent_clip_warns_in_rows_too(built: tuple[Path, Path]) -> None:
    two_roots, _ = built
    with Index.open(two_roots) as idx:
        rows, warnings = idx.search_rows(np.zeros(16000, np.float32), 3, sample_rate=16000)
        frame = idx.search(np.zeros(16000, np.float32), 3, sample_rate=16000)
    assert warnings and warnings == frame.attrs["warnings"]
    assert [clean_record(r) for r in rows] == _frame_rows(frame)
