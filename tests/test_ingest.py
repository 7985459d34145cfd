"""Incremental ingest: add, change, move, copy and delete files; recipes never mix."""

import json
import os
import shutil

import numpy as np
import pytest

from retrieval import synth
from retrieval.configure import Choices
from retrieval.errors import RecipeMismatchError
from retrieval.index import Index
from retrieval.ingest import IngestOptions, ingest
from retrieval.store import Store
from tests.conftest import write


def _run(corpus, index, **kw):
    return json.loads(ingest(corpus, index, Choices(**kw), IngestOptions(commit_every=3)).to_json())


def _paths(index):
    with Store.open(index) as s:
        return sorted(r[0] for r in s.db.con.execute("SELECT path FROM files").fetchall())


def _vector_rows(index):
    with Store.open(index) as s:
        return s.db.con.execute("SELECT count(*), count(DISTINCT window_id) FROM windows").fetchall()[0]


def test_first_run_then_nothing_to_do(corpus, tmp_path):
    ix = tmp_path / "ix"
    first = _run(corpus, ix)
    assert first["files_indexed"] == 20 and first["files_failed"] == 0 and first["windows"] >= 20
    again = _run(corpus, ix)
    assert again["files_indexed"] == 0 and again["files_unchanged"] == 20 and again["windows"] == 0
    with Store.open(ix) as s:
        info = s.info()
    assert info["consistent"] and info["files"] == 20 and info["file_vectors"] == 20


def test_add_change_move_copy_delete(corpus, tmp_path):
    ix = tmp_path / "ix"
    _run(corpus, ix)
    def raw_file_vector(path):
        with Index.open(ix) as idx:
            meta, vecs = idx.embeddings("file", processed=False)
        return vecs[meta.path.tolist().index(path)], int(meta.file_id[meta.path == path].iloc[0])

    before, before_id = raw_file_vector("tone/tone_00.wav")
    rows_before = _vector_rows(ix)

    write(corpus / "new" / "n.wav", synth.chirp(300, 3000, 1.3, 16000), 16000)   # add
    write(corpus / "noise" / "noise_00.wav", synth.sine(2000, 1.0, 16000), 16000)  # change content
    os.rename(corpus / "tone" / "tone_00.wav", corpus / "tone" / "renamed.wav")  # move
    shutil.copy2(corpus / "chirp" / "chirp_01.wav", corpus / "chirp" / "copy.wav")  # copy
    os.remove(corpus / "clicks" / "clicks_03.wav")  # delete

    s = _run(corpus, ix)
    assert (s["files_indexed"], s["files_moved"], s["files_removed"], s["files_unchanged"]) == (3, 1, 1, 17)
    paths = _paths(ix)
    assert "tone/renamed.wav" in paths and "tone/tone_00.wav" not in paths
    assert "clicks/clicks_03.wav" not in paths and "chirp/copy.wav" in paths and "new/n.wav" in paths
    total, distinct = _vector_rows(ix)
    assert total == distinct  # no duplicate ids
    with Index.open(ix) as idx:
        hits = idx.search(corpus / "tone" / "renamed.wav", k=1)
        assert hits.path[0] == "tone/renamed.wav" and hits.score[0] == pytest.approx(1.0, abs=1e-5)
        changed = idx.search(corpus / "noise" / "noise_00.wav", k=1)
        assert changed.path[0] == "noise/noise_00.wav" and changed.score[0] == pytest.approx(1.0, abs=1e-5)
        assert idx.info()["consistent"]
    after, after_id = raw_file_vector("tone/renamed.wav")
    assert after_id == before_id  # the row was re-pointed, not re-embedded
    np.testing.assert_array_equal(after, before)
    assert rows_before[0] > 0


def test_touch_without_change_is_not_reembedded(corpus, tmp_path):
    ix = tmp_path / "ix"
    _run(corpus, ix)
    os.utime(corpus / "tone" / "tone_01.wav", (1e9, 1e9))
    s = _run(corpus, ix)
    assert s["files_indexed"] == 0 and s["files_unchanged"] == 20


def test_a_different_recipe_is_refused_with_the_differences(corpus, tmp_path):
    ix = tmp_path / "ix"
    _run(corpus, ix, pooling="mean")
    with pytest.raises(RecipeMismatchError, match=r"pooling: 'mean' != 'max'"):
        _run(corpus, ix, pooling="max")
    with pytest.raises(RecipeMismatchError, match=r"window_samples"):
        _run(corpus, ix, window_s=1.0, hop_s=0.5)
    assert _run(corpus, ix)["files_unchanged"] == 20  # settings come from the index


def test_labels_from_folders_and_csv(corpus, tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label,take,site\n./tone/tone_00.wav,special,1,north\nchirp/chirp_00.wav,,7,south\n"
                   "missing.wav,x,0,none\n")
    ix = tmp_path / "ix"
    warnings = []
    ingest(corpus, ix, Choices(), IngestOptions(labels_csv=csv, on_warning=warnings.append))
    with Index.open(ix) as idx:
        files = idx.files().set_index("path")
    assert files.loc["tone/tone_00.wav", "label"] == "special"
    assert files.loc["tone/tone_01.wav", "label"] == "tone"
    assert files.loc["chirp/chirp_00.wav", "take"] == 7 and files.loc["chirp/chirp_00.wav", "site"] == "south"
    assert any("1 of 3 rows" in w for w in warnings)
    with Index.open(ix) as idx:
        hits = idx.search(corpus / "chirp" / "chirp_00.wav", k=5, where="take >= 5")
    assert hits.path.tolist() == ["chirp/chirp_00.wav"]


def test_window_vectors_and_file_vector_pool_exactly(tmp_path):
    corpus = tmp_path / "c"
    write(corpus / "long.wav", synth.chirp(200, 4000, 9.3, 16000), 16000)
    ix = tmp_path / "ix"
    _run(corpus, ix, window_s=2.0, hop_s=1.0, pooling="mean")
    with Index.open(ix) as idx:
        meta, segs = idx.embeddings("window", processed=False)
        _, files = idx.embeddings("file", processed=False)
    assert meta.start_s.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 7.3]
    with Store.open(ix) as s:
        counts = np.array([r[0] for r in s.db.con.execute(
            "SELECT n_frames FROM windows WHERE level = 'window' ORDER BY window_id").fetchall()])
    np.testing.assert_allclose(files[0], (segs * counts[:, None]).sum(0) / counts.sum(), rtol=1e-5, atol=1e-6)
