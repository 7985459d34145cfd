"""The read queries of MetadataDB that search, Index and the server call, on hand-made rows.

Rows are written through ``insert_files`` (so ids follow the real allocation), then every
query is checked against what was written: ids, vectors, bounds, filters and counts.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from retrieval.errors import InputError
from retrieval.store import ErrorRow, FileRow, MetadataDB, Store

DIM = 3


def _row(name: str, label: str, vectors: np.ndarray, silent: list[bool], hop: int = 100) -> FileRow:
    w = len(vectors)
    starts = np.arange(w, dtype=np.int64) * hop
    return FileRow(path=name, size=10, mtime=1.0, content_hash=name * 2, duration_s=w / 10, sample_rate=8000,
                   channels=1, format="wav", n_samples=int(starts[-1]) + 2 * hop, status="ok", label=label,
                   starts=starts, ends=starts + 2 * hop, rms_db=np.full(w, -20, np.float32),
                   silent=np.array(silent), n_frames=np.full(w, 4, np.int64),
                   window_vectors=vectors.astype(np.float32), file_vector=vectors.mean(axis=0).astype(np.float32))


@pytest.fixture
def db(tmp_path):
    rng = np.random.default_rng(0)
    db = MetadataDB(tmp_path / "meta.duckdb")
    db.create_windows(DIM)
    with db.transaction():
        db.insert_files([_row("b.wav", "dog", rng.normal(size=(3, DIM)), [False, True, False]),
                         _row("a.wav", "cat", rng.normal(size=(2, DIM)), [False, False])], DIM)
        db.add_errors([ErrorRow("z.wav", "error", "decode", "bad"), ErrorRow("c.wav", "warning", "decode", "odd")])
    yield db
    db.close()


def test_vector_queries_agree_on_ids_and_filters(db):
    ids, vecs = db.vectors("window", DIM)
    assert len(ids) == 4 and vecs.shape == (4, DIM) and vecs.dtype == np.float32  # the silent window has no vector
    np.testing.assert_array_equal(db.vector_ids("window"), ids)
    table = db.vector_rows("window")
    assert table.column("window_id").to_pylist() == ids.tolist()
    assert "content_hash" not in table.column_names and {"path", "label", "start_sample"} <= set(table.column_names)
    dog_ids, dog_vecs = db.vectors("window", DIM, "f.label = ?", ["dog"])
    np.testing.assert_array_equal(db.vector_ids("window", "f.label = ?", ["dog"]), dog_ids)
    assert len(dog_ids) == 2 and set(db.vector_rows("window", "f.label = ?", ["dog"]).column("path").to_pylist()) \
        == {"b.wav"}
    assert db.count_ids("window", int(ids[2])) == (4, 2)
    got_ids, got = db.vectors_by_id("window", ids[[3, 0]], DIM)
    np.testing.assert_array_equal(got_ids, ids[[0, 3]])
    np.testing.assert_array_equal(got, vecs[[0, 3]])
    assert len(db.vector_ids("file")) == 2


def test_one_files_vectors_and_one_windows_bounds(db):
    window_ids = db.vector_ids("window")
    rows = db.file_vector_rows(window_id=int(window_ids[0]))
    assert sorted(r[2] for r in rows) == ["file", "window", "window"]  # the window's file: 2 windows, 1 file row
    owner = rows[0][1]
    assert {r[1] for r in rows} == {owner} and db.file_vector_rows(file_id=owner) == rows
    assert all(len(r[3]) == DIM for r in rows)
    assert db.file_vector_rows(file_id=10_000) == []
    with pytest.raises(InputError, match="exactly one"):
        db.file_vector_rows()
    assert db.window(int(window_ids[1])) == (owner, 200, 400)  # the second vector: the file's third window
    assert db.window(int(db.vector_ids("file")[0])) is None  # a file row is no window
    assert db.window(10_000) is None
    bounds = db.window_bounds()
    assert bounds.num_rows == 6 and bounds.column_names == ["window_id", "file_id", "start_sample", "end_sample"]


def test_files_errors_and_counts(db):
    files = db.files_table(by_path=True)
    assert files.column("path").to_pylist() == ["a.wav", "b.wav"] and "content_hash" not in files.column_names
    assert db.errors_table().column("path").to_pylist() == ["c.wav", "z.wav"]
    assert db.file_counts() == (2, 0, pytest.approx(0.5))
    assert db.error_counts() == (1, 1)
    assert db.silent_windows() == 1


def test_hit_tables_are_kept_until_the_metadata_changes(db, tmp_path):
    store = Store(tmp_path, db, writable=True)
    windows, files = store.hit_tables()
    assert store.hit_tables()[0] is windows  # cached: no second scan
    assert len(windows) == 6 and set(files["path"]) == {"a.wav", "b.wav"}
    with db.transaction():
        db.attach_metadata(pa.table({"path": ["a.wav"], "site": ["north"]}))
    windows2, files2 = store.hit_tables()
    assert files2 is not files and files2.loc[files2.path == "a.wav", "site"].tolist() == ["north"]
