"""IVF-PQ built in chunks: a training sample and chunks of ids, never every vector at once.

Memory is checked by counts: the largest read the build makes is at most one chunk, every
row is read for adding exactly once, and the index equals the one built from every vector
in memory (same sample, same lists and codes, same search results).
"""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.store import MetadataDB
from retrieval.store import vectors as vmod
from retrieval.store.vectors import VectorIndex
from tests.store.test_index_types import _synthetic_store, clustered

N, D, CHUNK = 4_000, 32, 700


class Reader:
    """``read(a, b)`` over an in-memory matrix that counts what the build asked for."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self.sizes: list[int] = []
        self.added = np.zeros(len(x), np.int64)

    def __call__(self, a: int, b: int) -> np.ndarray:
        self.sizes.append(min(b, len(self.x)) - a)
        return self.x[a:b]


def test_chunked_build_reads_a_chunk_at_a_time_and_equals_the_full_build(tmp_path):
    x = clustered(N, D, seed=5)
    ids = np.arange(10, 10 + N, dtype=np.int64) * 3
    read = Reader(x)
    chunked = VectorIndex.build_chunked(ids, read, "g1", tmp_path / "windows.faiss", chunk=CHUNK, tune=False)
    full = VectorIndex.build(ids, x, "g1", "ivfpq", tune=False)
    assert max(read.sizes) <= CHUNK  # never more than a chunk of vectors in memory
    assert chunked.ntotal == full.ntotal == N and np.array_equal(chunked.ids(), ids)
    np.testing.assert_array_equal(faiss_codes(chunked), faiss_codes(full))
    q = clustered(50, D, seed=6)
    for vi in (chunked, full):
        vi.params.update(nprobe=8, quantizer_ef=32, rerank=10)
    s1, i1 = chunked.search(q, 10)
    s2, i2 = full.search(q, 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)
    chunked.save(tmp_path / "windows.faiss")  # the float16 copy moves into place, its build file goes
    assert not list(tmp_path.glob("*.build.*"))
    again = VectorIndex.load(tmp_path / "windows.faiss")
    assert again is not None and np.array_equal(again.search(q, 10)[1], i1)


def faiss_codes(vi: VectorIndex) -> np.ndarray:
    """Every list's ids, in list order: the IVF assignment of each vector."""
    invlists = vi.index.invlists
    out = []
    for k in range(vi.index.nlist):
        n = invlists.list_size(k)
        ptr = invlists.get_ids(k)
        out.append(np.sort(vmod.faiss.rev_swig_ptr(ptr, n).copy()) if n else np.zeros(0, np.int64))
        out.append(np.array([-1]))
    return np.concatenate(out)


def test_store_rebuild_of_ivfpq_reads_duckdb_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(vmod, "IVFPQ_MIN_VECTORS", 1_000)
    monkeypatch.setattr(vmod, "BUILD_CHUNK", 400)
    reads: list[int] = []
    between = MetadataDB.vectors_between

    def counted(self, level, first, last, dim):
        got = between(self, level, first, last, dim)
        reads.append(len(got[0]))
        return got

    def refused(self, level, *a, **k):
        if level == "window":
            raise AssertionError("every window vector read at once")
        return whole(self, level, *a, **k)

    whole = MetadataDB.vectors
    with _synthetic_store(tmp_path / "ix", 200, 10) as store:  # 2000 windows
        monkeypatch.setattr(MetadataDB, "vectors_between", counted)
        monkeypatch.setattr(MetadataDB, "vectors", refused)
        store.set_index_type("ivfpq")
        vi = store.rebuild("window")
        assert vi.kind == "ivfpq" and vi.ntotal == 2000
        assert max(reads) <= 400 and reads.count(400) >= 5  # chunks, each read whole
        monkeypatch.setattr(MetadataDB, "vectors", whole)
        ids, raw = store.db.vectors("window", store.require_recipe().dim)
        np.testing.assert_array_equal(vi.ids(), ids)
        exact = vi.vectors_of(ids[:50])
        np.testing.assert_allclose(exact, store.postprocess.apply(raw[:50]), atol=2e-3)  # the float16 copy
        assert not list((tmp_path / "ix").glob("*.build.*"))


def test_refit_reads_a_sample_of_at_most_fit_sample_max(tmp_path, monkeypatch):
    from retrieval.store import store as smod

    with _synthetic_store(tmp_path / "ix", 60, 10) as store:  # 600 windows
        monkeypatch.setattr(smod, "FIT_SAMPLE_MAX", 250)
        asked: list[int] = []
        by_id = MetadataDB.vectors_by_id

        def counted(self, level, ids, dim):
            asked.append(len(ids))
            return by_id(self, level, ids, dim)

        monkeypatch.setattr(MetadataDB, "vectors", lambda *a, **k: pytest.fail("every vector read for the fit"))
        monkeypatch.setattr(MetadataDB, "vectors_by_id", counted)
        with store.db.transaction():
            store.refit_postprocess()
        assert asked == [250] and store.db.get("fitted_on") == "600"  # the fit covers the index, sees a sample
        assert store.postprocess.mode == store.require_recipe().postprocess and store.postprocess.state


def test_an_update_appends_to_the_mapped_copy_without_loading_it(tmp_path):
    """Rows added to a saved (memory-mapped) ivfpq index go to a new file, copied a chunk at a time:
    the float16 copy stays a memory map, and a save and load give the same index as adding in memory."""
    x = clustered(N + 500, D, seed=7)
    ids = np.arange(N + 500, dtype=np.int64) * 2
    path = tmp_path / "windows.faiss"
    VectorIndex.build_chunked(ids[:N], Reader(x[:N]), "g1", path, chunk=CHUNK, tune=False).save(path)
    vi = VectorIndex.load(path)
    assert isinstance(vi._exact, np.memmap)
    for a in range(N, N + 500, 200):  # as Store._update_in_place adds, chunk by chunk
        vi.add(ids[a:a + 200], x[a:a + 200])
        assert isinstance(vi._exact, np.memmap)  # never pulled into memory
    np.testing.assert_allclose(vi.vectors_of(ids[N:]), x[N:], atol=2e-3)
    assert np.array_equal(vi.ids(), ids)
    q = clustered(20, D, seed=8)
    before = vi.search(q, 10)
    vi.save(path)
    assert not list(tmp_path.glob("*.build.*")) and len(list(tmp_path.glob("*.exact.npy"))) == 1
    again = VectorIndex.load(path)
    after = again.search(q, 10)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(again.vectors_of(ids), vi.vectors_of(ids))
