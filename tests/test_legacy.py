"""The deprecated names from before "segment" became "window" (retrieval.legacy): old scripts,
commands and notebooks keep working, with the same values under both names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from retrieval.cli import cli
from retrieval.index import Index
from retrieval.legacy import INFO_KEYS, with_legacy_keys
from tests.serve_fixtures import build_index


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_index(tmp_path_factory.mktemp("legacy"))


def test_with_legacy_keys_adds_each_old_key_beside_its_new_one() -> None:
    rows = [{"rank": 1, "window_id": 7, "file_id": 2}, {"windows": 3}]
    assert with_legacy_keys(rows) == [{"rank": 1, "window_id": 7, "segment_id": 7, "file_id": 2}, {"windows": 3}]
    info = {"windows": 5, "index": {"window": {"ntotal": 5}, "file": {"ntotal": 1}}}
    assert with_legacy_keys(info, INFO_KEYS) == {"windows": 5, "segments": 5, "index": {
        "window": {"ntotal": 5}, "segment": {"ntotal": 5}, "file": {"ntotal": 1}}}
    assert "segment_id" not in rows[0]  # a copy


def test_cli_old_options_and_keys(built: tuple[Path, Path]) -> None:
    corpus, ix = built
    clip = str(sorted(corpus.rglob("*.wav"))[0])
    run = CliRunner().invoke
    new = run(cli, ["query", clip, "--index", str(ix), "--windows", "--json"])
    old = run(cli, ["query", clip, "--index", str(ix), "--segments", "--json"])
    assert new.exit_code == old.exit_code == 0, (new.output, old.output)
    assert json.loads(new.output) == json.loads(old.output)
    rows = json.loads(new.output)
    assert rows and all(r["segment_id"] == r["window_id"] for r in rows)
    assert "--segments" not in run(cli, ["query", "--help"]).output
    csv_head = run(cli, ["query", clip, "--index", str(ix), "--csv"]).output.splitlines()[0].split(",")
    assert "window_id" in csv_head and "segment_id" in csv_head
    table = run(cli, ["query", clip, "--index", str(ix)]).output
    assert "segment_id" not in table
    info = json.loads(run(cli, ["info", "--index", str(ix), "--json"]).output)
    assert info["segments"] == info["windows"] > 0 and info["segments_silent"] == info["windows_silent"]
    assert info["faiss_ntotal_segment"] == info["faiss_ntotal_window"]
    assert info["index"]["segment"] == info["index"]["window"]
    ev = [run(cli, ["eval", "--index", str(ix), "--label-column", "label", "--level", level, "--json"])
          for level in ("window", "segment")]
    assert ev[0].exit_code == ev[1].exit_code == 0, (ev[0].output, ev[1].output)
    assert json.loads(ev[0].output) == json.loads(ev[1].output)
    assert "segment" not in run(cli, ["eval", "--help"]).output


def test_python_api_old_keywords_and_level(built: tuple[Path, Path]) -> None:
    corpus, ix = built
    clip = sorted(corpus.rglob("*.wav"))[0]
    with Index.open(ix) as idx:
        new = idx.search(clip, 5, windows=True)
        with pytest.deprecated_call():
            old = idx.search(clip, 5, segments=True)
        assert new.equals(old)
        wid = int(new["window_id"].iloc[0])
        with pytest.deprecated_call():
            old_rows = idx.search_indexed_rows(3, segment_id=wid, segments=True)
        assert old_rows == idx.search_indexed_rows(3, window_id=wid, windows=True)
        with pytest.raises(TypeError):
            idx.search(clip, 5, windows=True, segments=True)
        with pytest.deprecated_call():
            meta_old, vecs_old = idx.embeddings("segment")
        meta, vecs = idx.embeddings("window")
        assert meta.equals(meta_old) and (vecs == vecs_old).all()
