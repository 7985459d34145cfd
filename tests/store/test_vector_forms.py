"""The two forms of ``windows.vector``: the BLOB new indexes use and the ``FLOAT[dim]`` of indexes
made before it. An old index opens, reads and takes new files; every read gives what the
same rows give in a new index, bit for bit, and search returns the same hits."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pytest

from retrieval import synth
from retrieval.configure import Choices
from retrieval.index import Index
from retrieval.ingest import IngestOptions, ingest
from retrieval.store import MetadataDB, Store
from retrieval.store import db as db_module
from tests.conftest import write
from tests.store.test_migrate import _to_format_1
from tests.store.test_queries import DIM, _row


def _legacy(monkeypatch: pytest.MonkeyPatch) -> None:
    """New tables get the ``FLOAT[dim]`` column older code made."""
    monkeypatch.setattr(db_module, "vector_column_sql", lambda dim: f"FLOAT[{dim}]")


def _filled(path, rows) -> MetadataDB:
    db = MetadataDB(path)
    db.create_windows(DIM)
    with db.transaction():
        db.insert_files(rows, DIM)
    db.checkpoint()
    return db


def _rows():
    rng = np.random.default_rng(3)
    return [_row("b.wav", "dog", rng.normal(size=(3, DIM)), [False, True, False]),
            _row("a.wav", "cat", rng.normal(size=(2, DIM)), [False, False])]


def test_new_tables_hold_uncompressed_blobs_of_little_endian_float32(tmp_path):
    rows = _rows()
    db = _filled(tmp_path / "meta.duckdb", rows)
    try:
        assert db.blob_vectors()
        kinds = db.con.execute("SELECT DISTINCT compression FROM pragma_storage_info('windows') "
                               "WHERE column_name = 'vector' AND segment_type <> 'VALIDITY'").fetchall()
        assert kinds == [("Uncompressed",)]
        first = db.con.execute("SELECT vector FROM windows WHERE vector IS NOT NULL ORDER BY window_id LIMIT 1"
                               ).fetchall()[0][0]
        assert first == rows[0].window_vectors[0].astype("<f4").tobytes()
    finally:
        db.close()


def test_every_read_agrees_between_the_two_forms(tmp_path, monkeypatch):
    new = _filled(tmp_path / "new.duckdb", _rows())
    with monkeypatch.context() as m:
        _legacy(m)
        old = _filled(tmp_path / "old.duckdb", _rows())
    try:
        assert new.blob_vectors() and not old.blob_vectors()
        for level in ("window", "file"):
            ids, vecs = new.vectors(level, DIM)
            old_ids, old_vecs = old.vectors(level, DIM)
            np.testing.assert_array_equal(ids, old_ids)
            assert vecs.dtype == old_vecs.dtype == np.float32 and vecs.tobytes() == old_vecs.tobytes()
            table, old_table = new.vector_rows(level), old.vector_rows(level)
            assert table.schema.field("vector").type == old_table.schema.field("vector").type == \
                pa.list_(pa.float32(), DIM)
            assert table.drop(["indexed_at"]).equals(old_table.drop(["indexed_at"]))
            got = new.vectors_between(level, int(ids[0]), int(ids[-1]) - 1, DIM)
            old_got = old.vectors_between(level, int(ids[0]), int(ids[-1]) - 1, DIM)
            np.testing.assert_array_equal(got[0], old_got[0])
            assert got[1].tobytes() == old_got[1].tobytes()
            by_id, old_by_id = new.vectors_by_id(level, ids[::-1], DIM), old.vectors_by_id(level, ids[::-1], DIM)
            assert by_id[1].tobytes() == old_by_id[1].tobytes()
            assert new.count_vectors(level) == old.count_vectors(level)
        owner = int(new.vector_ids("file")[0]) - 4  # the first file's id: its 3 windows and pooled row follow it
        assert new.file_vector_rows(file_id=owner) == old.file_vector_rows(file_id=owner) != []
        for db in (new, old):  # rows copied inside one table keep its form
            with db.transaction():
                db.copy_file(owner, "copy.wav", 10, 1.0, "dog")
        np.testing.assert_array_equal(new.vectors("window", DIM)[1], old.vectors("window", DIM)[1])
        assert new.vector_rows("file").column("vector").to_pylist() == \
            old.vector_rows("file").column("vector").to_pylist()
    finally:
        new.close()
        old.close()


@pytest.mark.parametrize("names", ["windows", "segments"])
def test_an_old_index_opens_takes_new_files_and_searches_as_a_new_one(corpus, tmp_path, monkeypatch, names):
    """``names``: the old index's vocabulary (``segments``: store format 1, migrated on open)."""
    def run(ix):
        return json.loads(ingest(corpus, ix, Choices(), IngestOptions(commit_every=3)).to_json())

    with monkeypatch.context() as m:
        _legacy(m)
        run(tmp_path / "old")
    if names == "segments":
        _to_format_1(tmp_path / "old")
    run(tmp_path / "new")
    # The corpus changes; both take the change with today's code.
    write(corpus / "new" / "n.wav", synth.chirp(300, 3000, 1.3, 16000), 16000)
    os.remove(corpus / "clicks" / "clicks_03.wav")
    shutil.copy2(corpus / "chirp" / "chirp_01.wav", corpus / "chirp" / "copy.wav")
    for name in ("old", "new"):
        summary = run(tmp_path / name)
        assert summary["files_indexed"] == 2 and summary["files_removed"] == 1
    found = {}
    for name, blob in (("old", False), ("new", True)):
        with Store.open(tmp_path / name) as s:
            assert s.db.blob_vectors() is blob
            info = s.info()
            assert info["consistent"] and info["files"] == 21
        with Index.open(tmp_path / name) as idx:
            meta, raw = idx.embeddings("window", processed=False)
            hits = idx.search(corpus / "tone" / "tone_01.wav", k=5)
            found[name] = (meta.drop(columns=["indexed_at"]), raw, hits.drop(columns=["indexed_at"], errors="ignore"))
    old, new = found["old"], found["new"]
    assert old[0].equals(new[0]) and old[1].tobytes() == new[1].tobytes()
    assert old[2].equals(new[2])


def test_blob_columns_round_trip_across_chunks_slices_and_offset_widths():
    from retrieval.store.columns import blob_rows, vector_blobs

    rng = np.random.default_rng(5)
    x = rng.normal(size=(9, DIM)).astype(np.float32)
    null = np.zeros(9, bool)
    null[[2, 7]] = True
    col = vector_blobs(x, null)
    assert col.null_count == 2 and col[3].as_py() == x[3].astype("<f4").tobytes() and col[2].as_py() is None
    whole = vector_blobs(x)
    narrow = whole.cast(pa.binary())  # DuckDB hands BLOBs back with 32-bit offsets
    for chunks in ([whole.slice(0, 4), whole.slice(4, 5)], [narrow.slice(0, 1), narrow.slice(1, 8)]):
        assert blob_rows(pa.chunked_array(chunks), DIM).tobytes() == x.tobytes()
    assert blob_rows(whole.slice(3, 4), DIM).tobytes() == x[3:7].tobytes()
    assert blob_rows(pa.chunked_array([], pa.large_binary()), DIM).shape == (0, DIM)
    with pytest.raises(ValueError, match="NULL"):
        blob_rows(col, DIM)
    with pytest.raises(ValueError, match="12 bytes"):
        blob_rows(pa.array([b"\0" * 8], pa.binary()), DIM)
