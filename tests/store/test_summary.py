"""``info.json`` (retrieval.store.summary): ``retrieve info`` answers from it only while no file
of the index changed since it was recorded, and always says what a full open would say."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from retrieval.cli import cli
from retrieval.legacy import INFO_KEYS, with_legacy_keys
from retrieval.store import Store
from retrieval.store.summary import SUMMARY, read_fresh
from tests.serve_fixtures import build_index


@pytest.fixture()
def built(tmp_path: Path) -> tuple[Path, Path]:
    return build_index(tmp_path)


def _info(ix: Path, *flags: str) -> dict:
    res = CliRunner().invoke(cli, ["info", "--index", str(ix), "--json", *flags])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_a_writer_records_it_and_it_says_what_a_verified_open_says(built: tuple[Path, Path]) -> None:
    _, ix = built
    fresh = read_fresh(ix)
    assert fresh is not None and fresh["consistent"] and fresh["repaired_on_open"] == []
    assert with_legacy_keys(fresh, INFO_KEYS) == _info(ix, "--verify")  # the full open: FAISS read and checksummed


def test_a_change_to_the_corpus_is_seen_after_the_next_ingest(built: tuple[Path, Path]) -> None:
    corpus, ix = built
    before = _info(ix)["files"]
    extra = next(corpus.rglob("*.wav"))
    shutil.copy(extra, extra.with_name("added_copy.wav"))
    res = CliRunner().invoke(cli, ["index", str(corpus), "--index", str(ix)])
    assert res.exit_code == 0, res.output
    assert _info(ix)["files"] == before + 1 == read_fresh(ix)["files"]


@pytest.mark.parametrize("damage", ["delete", "same_size", "wal"])
def test_a_changed_file_makes_it_stale_and_info_takes_the_full_path(built: tuple[Path, Path], damage: str) -> None:
    _, ix = built
    assert read_fresh(ix) is not None
    win = ix / "windows.faiss"
    if damage == "delete":
        win.unlink()
    elif damage == "same_size":  # a stray write keeps the size; the modification time moves
        data = bytearray(win.read_bytes())
        data[len(data) // 2] ^= 0x5A
        win.write_bytes(bytes(data))
    else:  # what a writer killed after a commit leaves
        (ix / "meta.duckdb.wal").write_bytes(b"")
    assert read_fresh(ix) is None
    if damage == "wal":
        (ix / "meta.duckdb.wal").unlink()
        return
    # Same-size damage is caught by the checksum, which only --verify (or a search) reads.
    info = _info(ix, "--verify") if damage == "same_size" else _info(ix)
    assert info["consistent"] and "window" in info["repaired_on_open"]
    assert read_fresh(ix) is not None and _info(ix)["repaired_on_open"] == []  # the full read recorded it again


def test_a_malformed_summary_is_ignored(built: tuple[Path, Path]) -> None:
    _, ix = built
    for text in ("{not json", "[]", '{"stamp": {}, "info": {}}'):
        (ix / SUMMARY).write_text(text)
        assert read_fresh(ix) is None
        assert _info(ix)["consistent"]


def test_a_writer_that_left_faiss_stale_records_none(built: tuple[Path, Path]) -> None:
    _, ix = built
    (ix / SUMMARY).unlink()
    (ix / "files.faiss").unlink()
    with Store.open(ix, writable=True):
        pass  # closing must not rebuild FAISS just to write a summary
    assert not (ix / "files.faiss").exists() and read_fresh(ix) is None
