"""Store format 1 ("segments") -> 2 ("windows") (retrieval.store.migrate): an index written
before the rename opens, is migrated in place, and answers every query exactly as before;
a migration killed after its database commit is completed by the next open."""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import pytest

from retrieval.errors import StoreError
from retrieval.index import Index
from retrieval.store import Store
from retrieval.store import migrate
from retrieval.store.db import MetadataDB
from tests.serve_fixtures import build_index


def _to_format_1(folder: Path) -> None:
    """Rewrite the index files in ``folder`` (an index or a snapshot of one) to format 1's names."""
    con = duckdb.connect(str(folder / "meta.duckdb"))
    con.execute("ALTER TABLE windows RENAME COLUMN window_id TO segment_id")
    con.execute("ALTER TABLE windows RENAME TO segments")
    con.execute("UPDATE segments SET level = 'segment' WHERE level = 'window'")
    con.execute("ALTER TABLE files RENAME COLUMN n_windows TO n_segments")
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if "window_scores" in tables:
        con.execute("ALTER TABLE window_scores RENAME COLUMN window_id TO segment_id")
    con.execute("UPDATE manifest SET key = 'faiss_segment' WHERE key = 'faiss_window'")
    con.execute("UPDATE manifest SET value = '1' WHERE key = 'schema_version'")
    con.execute("CHECKPOINT")
    con.close()
    for old, new in migrate.FILE_GROUPS:
        commit = folder / f"{new}.json"
        if not commit.exists():
            continue
        meta = json.loads(commit.read_text())
        for member in folder.glob(f"{new}*"):
            if member != commit:
                os.replace(member, folder / (old + member.name[len(new):]))
        (folder / f"{old}.json").write_text(json.dumps(migrate._renamed(meta, new, old)))
        commit.unlink()


def _answers(ix: Path, clips: list[Path]) -> list:
    with Index.open(ix) as idx:
        out = [idx.search_rows(c, 7, windows=w)[0] for c in clips for w in (False, True)]
        meta, vecs = idx.embeddings("window")
        out.append((meta.to_dict("list"), vecs.tolist()))
        out.append({k: v for k, v in idx.store.info().items() if k not in ("reading", "snapshot")})
        assert not idx.store.repaired  # the FAISS files were carried over, not rebuilt
    return out


@pytest.fixture()
def format_1(tmp_path: Path) -> tuple[Path, list[Path], list]:
    corpus, ix = build_index(tmp_path)
    with Index.open(ix, writable=True) as idx:
        idx.store.search_vectors("window")  # the derived copy of search vectors, renamed too
    clips = sorted(corpus.rglob("*.wav"))[::5]
    before = _answers(ix, clips)
    assert (ix / "windows.search.json").exists()
    _to_format_1(ix)
    for snap in (ix / "snapshots").glob("[0-9]*"):
        if (snap / "meta.duckdb").exists():
            _to_format_1(snap)
    assert (ix / "segments.faiss").exists() and not (ix / "windows.faiss").exists()
    return ix, clips, before


def _assert_format_2(ix: Path) -> None:
    assert not list(ix.glob("segments.*")), sorted(p.name for p in ix.glob("segments.*"))
    assert (ix / "windows.faiss").exists() and (ix / "windows.search.json").exists()
    con = duckdb.connect(str(ix / "meta.duckdb"), read_only=True)
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert "windows" in tables and "segments" not in tables
        assert con.execute("SELECT DISTINCT level FROM windows ORDER BY level").fetchall() == [("file",), ("window",)]
        keys = {r[0] for r in con.execute("SELECT key FROM manifest").fetchall()}
        assert "faiss_window" in keys and "faiss_segment" not in keys
        assert con.execute("SELECT value FROM manifest WHERE key = 'schema_version'").fetchall() == [("2",)]
    finally:
        con.close()


def test_a_format_1_index_opens_migrated_with_the_same_answers(format_1: tuple[Path, list[Path], list]) -> None:
    ix, clips, before = format_1
    assert _answers(ix, clips) == before  # a reader's open migrates first
    _assert_format_2(ix)
    assert _answers(ix, clips) == before  # and a second open finds nothing to do


def test_a_writer_open_migrates_too(format_1: tuple[Path, list[Path], list]) -> None:
    ix, clips, before = format_1
    Store.open(ix, writable=True).close()
    _assert_format_2(ix)
    assert _answers(ix, clips) == before


def test_a_migration_killed_after_its_commit_is_completed_by_the_next_open(
        format_1: tuple[Path, list[Path], list]) -> None:
    ix, clips, before = format_1
    db = MetadataDB(ix / "meta.duckdb")  # the schema migrates in its own transaction ...
    assert not migrate.needs_migration(db)
    db.close()
    os.replace(ix / "segments.faiss", ix / "windows.faiss")  # ... and one file had moved when the run died
    assert migrate.files_pending(ix)
    assert _answers(ix, clips) == before
    _assert_format_2(ix)


def test_a_migration_killed_before_its_commit_leaves_format_1(format_1: tuple[Path, list[Path], list],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    ix, clips, before = format_1

    def die(*args: object) -> None:
        raise KeyboardInterrupt

    migrate_schema = migrate.migrate_schema
    monkeypatch.setattr(migrate, "migrate_schema", lambda db: False)
    db = MetadataDB(ix / "meta.duckdb")
    monkeypatch.undo()
    db.set = die  # type: ignore[method-assign]  # the version is written last, inside the transaction
    with pytest.raises(KeyboardInterrupt):
        migrate_schema(db)
    db.close()
    con = duckdb.connect(str(ix / "meta.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'segments'").fetchall()[0][0]
    assert con.execute("SELECT value FROM manifest WHERE key = 'schema_version'").fetchall() == [("1",)]
    con.close()
    assert _answers(ix, clips) == before
    _assert_format_2(ix)


def test_an_old_index_in_a_folder_nobody_may_write_says_where_to_migrate_it(
        format_1: tuple[Path, list[Path], list], monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader's open migrates through a writer; where DuckDB cannot open the file for writing
    (a read-only mount, another user's folder: simulated, since the tests run as root and root
    writes anything), the open stops with one line saying what to do, and changes nothing."""
    ix, clips, before = format_1
    connect = duckdb.connect

    def read_only_mount(path: str, read_only: bool = False, **kwargs: object) -> duckdb.DuckDBPyConnection:
        if not read_only:
            raise duckdb.IOException(f'IO Error: Cannot open file "{path}": Read-only file system')
        return connect(path, read_only=True, **kwargs)

    monkeypatch.setattr(duckdb, "connect", read_only_mount)
    with pytest.raises(StoreError) as err:
        Store.open(ix)
    message = str(err.value)
    assert "older format" in message and "migrated once by a process that can write it" in message
    assert "Read-only file system" in message and f"retrieve info --index {ix}" in message
    assert "\n" not in message
    monkeypatch.undo()
    assert (ix / "segments.faiss").exists()  # nothing was changed ...
    assert _answers(ix, clips) == before  # ... and a writable open later migrates as usual
    _assert_format_2(ix)
