"""FAISS vector indexes, derived from DuckDB and rebuildable from it.

Inner product on L2-normalised vectors (cosine), FAISS ids equal to DuckDB
``window_id``. Three kinds (:data:`INDEX_TYPES`):

    flat    ``IndexIDMap2(IndexFlatIP)``: exact; 4 bytes x D per vector.
    hnsw    ``IndexIDMap2(IndexHNSWFlat)``, M=32: a graph over the float32 vectors.
            FAISS cannot remove ids from it, so :meth:`VectorIndex.remove` masks them
            (every search excludes them) until the next rebuild; ivfpq does the same.
    ivfpq   ``IndexIVFPQFastScan``: about n / 64 inverted lists (16384 at 1M) found
            through an HNSW graph over their centroids, which come from a two-level
            spherical k-means; 4-bit PQ codes scanned with SIMD (64 sub-quantisers,
            32 bytes per vector at D >= 128). Re-ranked exactly: the ``k x rerank``
            best codes are re-scored against a float16 copy of the vectors kept in a
            memory-mapped ``.npy`` beside the index (2 bytes x D per vector on disk,
            read only for shortlists).

Every build measures recall@10 against exact search on stored vectors and tunes the
search knob (``efSearch``, or ``nprobe``, the quantizer's ``efSearch`` and the re-rank
factor) to the smallest value
reaching :data:`TARGET_RECALL`; the measurement is kept with the index. ``auto``
(:func:`choose_index_type`) picks the kind from the vector count and memory; the
thresholds come from ``docs/bench_search.md``.

Files are written to a temporary name and moved into place with ``os.replace``, the
small JSON sidecar last: it records the DuckDB generation, the count, the index file's
size and an xxh3-128 checksum of every file it names (the index, and for ivfpq the
float16 copy and its ids), so a stale, half-written or damaged index is detected on
open (:meth:`VectorIndex.load` returns None) and the store rebuilds it from DuckDB. A
sidecar that is not a JSON object counts as stale too. Verifying reads each file once
more: 1.2-1.5 s for a 1M x 512 flat file (1.9 GiB), beside 6-7 s for ``faiss.read_index``
of it, and 0.05 s for an 88 MiB HNSW file of 100k windows (2-core machine;
``scripts/bench_publish.py``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import xxhash

from retrieval.errors import ChoiceError, InputError
from retrieval.options import INDEX_TYPE_CHOICES, INDEX_TYPES, IndexType, check_choice

#: ``auto`` stays exact below this many vectors: one flat query over 100k x 512 float32
#: (200 MB) took 31 ms on 2 cores, over 100k x 160 16 ms, about what the API spends on
#: DuckDB per query anyway; and flat costs no build time (docs/bench_search.md).
AUTO_FLAT_MAX = 100_000
#: ``auto`` uses HNSW below this many vectors; from here on, IVF-PQ with re-ranking. On
#: 2 cores an HNSW build took 0.2-0.7 ms per 512-d vector (3.5-12 min for 1M, paid again at
#: every refit: past a 10% change or on --refit) and never reached recall@10 0.95 on the 1M
#: benchmark; IVF-PQ built 2.4x faster there and reached 0.953 at 23x flat's batch QPS. At
#: 100k-200k IVF-PQ was no better than HNSW (docs/bench_search.md).
AUTO_HNSW_MAX = 500_000
#: ``auto`` also leaves HNSW for IVF-PQ when HNSW would need more than this share of RAM.
AUTO_MEMORY_SHARE = 0.5

HNSW_M = 32
#: 160 made the 200k benchmark graph far better (recall 0.999 against 0.896 at efSearch 64)
#: but took ~9x longer to build on 2 shared cores: too slow for a rebuild at 1M.
HNSW_EF_CONSTRUCTION = 40
EF_SEARCH_STEPS: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024)
#: 4-bit sub-quantisers per IVF-PQ code (see :func:`pq_subquantizers`): 32 bytes per vector.
PQ_SUBQUANTIZERS = 64
#: IVF-PQ shortlists ``k x factor`` codes before exact re-ranking; tuning tries these. 4-bit
#: codes ranked well enough at 1M for x5; dense log-mel clusters at 100k needed x50.
RERANK_FACTORS: tuple[int, ...] = (5, 10, 20, 50)
#: IVF lists hold about this many vectors (:func:`ivf_lists`). At 1M x 512-d clustered
#: vectors, 16384 lists of ~61 reached recall@10 0.95 at nprobe 16 (~1,000 codes scanned a
#: query); 1024 lists of ~1000 needed nprobe 64 to 128 (docs/bench_search.md).
IVF_LIST_SIZE = 64
#: The list centroids train on at most this many vectors per list, 10 k-means rounds a level.
IVF_TRAIN_PER_LIST = 32
IVF_KMEANS_ITERATIONS = 10
#: PQ codebooks train on at most this many vectors (16 centroids per sub-quantiser).
PQ_TRAIN_MAX = 65_536
#: The HNSW graph over the list centroids: links per node, build effort, and the
#: ``efSearch`` used to assign added vectors to lists (0.96 agree with exact at 16384
#: lists; a query's lists are found with the tuned ``quantizer_ef`` instead).
QUANTIZER_M = 32
QUANTIZER_EF_CONSTRUCTION = 80
ASSIGN_EF = 16
#: Tuning tries the quantizer's ``efSearch`` at ``max(this, nprobe)`` and twice that.
QUANTIZER_EF_MIN = 32
#: 4-bit PQ needs 16 centroids x 39 points per sub-quantiser to train without FAISS
#: warnings; a smaller IVF-PQ request is built flat (exact) and says so.
IVFPQ_MIN_VECTORS = 39 * 16

#: Tuning stops at the cheapest setting whose measured recall@10 reaches this.
TARGET_RECALL = 0.95
RECALL_K = 10
#: Stored vectors sampled as queries when recall is measured after a build.
RECALL_QUERIES = 200
#: An exact score within this of the true k-th best counts as a hit (ties at the cut).
RECALL_TIE = 1e-4

#: A filtered search over at most this many allowed ids (or under this share of the
#: index) is answered exactly over the allowed subset instead of by the ANN.
EXACT_SUBSET_MAX = 10_000
EXACT_SUBSET_SHARE = 0.02
#: Rows an exact scan scores at once: ``(chunk, D)`` float32.
EXACT_CHUNK = 65_536
#: Rows a chunked ivfpq build reads, adds and copies at a time (``(chunk, D)`` float32).
BUILD_CHUNK = 65_536
#: Bytes read per step while checksumming a file.
CHECKSUM_CHUNK = 1 << 22


def check_index_type(name: str) -> str:
    """``name`` if it is a valid ``--index-type`` (:data:`~retrieval.options.INDEX_TYPE_CHOICES`: a kind,
    or ``auto``, chosen by :func:`choose_index_type`); else :class:`~retrieval.errors.ChoiceError` listing them."""
    return check_choice("index type", name, INDEX_TYPE_CHOICES)


def hnsw_bytes_per_vector(dim: int, m: int = HNSW_M) -> int:
    """RAM of one HNSW vector: float32 storage, ~2M level-0 links + upper levels, id maps."""
    return 4 * dim + int(4 * 2 * m * 1.05) + 48


def physical_memory() -> int:
    """Bytes of RAM on this machine (0 when unknown)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def choose_index_type(requested: str, n: int, dim: int, memory_bytes: int | None = None) -> tuple[IndexType, str]:
    """The kind to build for ``n`` vectors of ``dim`` floats, and why.

    ``auto``: flat below :data:`AUTO_FLAT_MAX`, HNSW below :data:`AUTO_HNSW_MAX` while
    it fits in :data:`AUTO_MEMORY_SHARE` of RAM, IVF-PQ (re-ranked) otherwise. An explicit ``ivfpq``
    below :data:`IVFPQ_MIN_VECTORS` is built flat, since there is too little to train on.
    """
    check_index_type(requested)
    if requested == "ivfpq" and n < IVFPQ_MIN_VECTORS:
        return "flat", (f"ivfpq needs at least {IVFPQ_MIN_VECTORS} vectors to train 4-bit PQ; "
                        f"{n} vectors are searched exactly (flat)")
    if requested != "auto":
        return requested, f"requested {requested}"  # type: ignore[return-value]
    if n < AUTO_FLAT_MAX:
        return "flat", f"auto: {n} vectors < {AUTO_FLAT_MAX}, exact search is fast enough"
    memory = physical_memory() if memory_bytes is None else memory_bytes
    need = n * hnsw_bytes_per_vector(dim)
    if memory and need > AUTO_MEMORY_SHARE * memory:
        return "ivfpq", (f"auto: HNSW would need {need / 2**30:.1f} GiB, over {AUTO_MEMORY_SHARE:.0%} of "
                         f"{memory / 2**30:.1f} GiB RAM")
    if n >= AUTO_HNSW_MAX:
        return "ivfpq", f"auto: {n} vectors >= {AUTO_HNSW_MAX}"
    return "hnsw", f"auto: {AUTO_FLAT_MAX} <= {n} vectors < {AUTO_HNSW_MAX}"


def ivf_lists(n: int) -> int:
    """IVF list count: the power of two nearest ``n / IVF_LIST_SIZE``, with at least 39 vectors per list."""
    nlist = 2 ** max(0, round(math.log2(max(1.0, n / IVF_LIST_SIZE))))
    while nlist > 1 and nlist * 39 > n:
        nlist //= 2
    return nlist


def pq_subquantizers(dim: int, max_m: int = PQ_SUBQUANTIZERS) -> int:
    """4-bit sub-quantisers per vector: the largest divisor of ``dim`` up to ``max_m`` that
    leaves each at least 2 dimensions (512 -> 64, 160 -> 40, 32 -> 16); code bytes are half that."""
    return max(m for m in range(1, max(1, min(dim // 2, max_m)) + 1) if dim % m == 0)


class VectorIndex:
    """One FAISS index of unit vectors under int64 ids, with its kind, knobs and measured recall.

    Attributes:
        dim: vector size.
        kind: ``flat``, ``hnsw`` or ``ivfpq``.
        index: the FAISS index.
        generation: the DuckDB generation these vectors were built from.
        params: build and search settings (``M``, ``efSearch``, ``nlist``, ``nprobe``,
            ``quantizer_ef``, ``pq_m``, ``pq_bits``, ``pq_bytes``, ``rerank``), JSON-able.
        stats: ``recall_at_10`` (measured after the build, as searches see it),
            ``recall_queries``, ``build_s``, ``reason`` and, once saved, ``faiss_bytes``.
    """

    def __init__(self, dim: int, index: faiss.Index | None = None, generation: str = "0",
                 kind: IndexType = "flat", params: dict[str, Any] | None = None) -> None:
        self.dim = dim
        self.kind: IndexType = kind
        self.index = index if index is not None else _new_index(kind, dim, params or {})
        self.generation = generation
        self.params: dict[str, Any] = dict(params or {})
        self.stats: dict[str, Any] = {}
        self._ids = np.zeros(0, np.int64)  # live ids, sorted
        self._dead = np.zeros(0, np.int64)  # ids removed but still in the FAISS index (masked), sorted
        self._exact_ids = np.zeros(0, np.int64)  # ivfpq: ids of the float16 rows, sorted
        self._exact = np.zeros((0, dim), np.float16)  # ivfpq: (n, D) float16, maybe memory-mapped
        self._exact_file: str | None = None
        self._build_file: str | None = None  # build_chunked's temporary float16 copy, until saved

    # -- size ------------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        """Vectors a search can return (HNSW's masked ids excluded)."""
        return int(self._ids.size)

    def ids(self) -> np.ndarray:
        """``(ntotal,)`` int64 live ids, sorted."""
        return self._ids.copy()

    @property
    def recall_at_10(self) -> float | None:
        return self.stats.get("recall_at_10")

    # -- build -----------------------------------------------------------------------------

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, generation: str, kind: IndexType = "flat", *,
              tune: bool = True, target_recall: float = TARGET_RECALL, seed: int = 0) -> VectorIndex:
        """Index ``(n, D)`` float32 unit vectors under ``(n,)`` int64 ids, then measure recall.

        For ``hnsw`` and ``ivfpq`` the search knob is tuned to the cheapest setting whose
        recall@10 on :data:`RECALL_QUERIES` stored vectors reaches ``target_recall``
        (``tune=False`` keeps the defaults and only measures). ``flat`` is exact: its
        recall is 1.0 by construction and is not re-measured.
        """
        t0 = time.perf_counter()
        vectors = np.ascontiguousarray(vectors, np.float32)
        ids = np.ascontiguousarray(ids, np.int64)
        if vectors.ndim != 2 or len(ids) != len(vectors):
            raise InputError(f"build needs (n, D) vectors and (n,) ids; got {vectors.shape} and {ids.shape}")
        check_choice("index type", kind, INDEX_TYPES)
        n, dim = vectors.shape
        if kind == "ivfpq" and n < IVFPQ_MIN_VECTORS:
            raise InputError(f"ivfpq needs at least {IVFPQ_MIN_VECTORS} vectors to train; got {n} "
                             "(use flat, or choose_index_type, which falls back to flat)")
        params = _default_params(kind, n, dim)
        vi = cls(dim, generation=generation, kind=kind, params=params)
        if kind == "ivfpq":
            vi._train_ivf(n, lambda rows: vectors if len(rows) == n else vectors[rows], seed)
        vi.add(ids, vectors)
        vi.stats["build_s"] = round(time.perf_counter() - t0, 3)
        if kind == "flat":
            vi.stats.update(recall_at_10=1.0, recall_queries=0, recall_note="exact search")
        else:
            vi._measure(ids, vectors, tune, target_recall, seed)
        vi.stats["build_s"] = round(time.perf_counter() - t0, 3)
        return vi

    @classmethod
    def build_chunked(cls, ids: np.ndarray, read: Callable[[int, int], np.ndarray], generation: str, beside: Path,
                      *, chunk: int | None = None, tune: bool = True, target_recall: float = TARGET_RECALL,
                      seed: int = 0) -> VectorIndex:
        """An ivfpq build that never holds every vector: trained on a sample, added ``chunk`` rows at a time.

        Args:
            ids: ``(n,)`` int64 sorted ids of the vectors to index.
            read: ``read(a, b)`` gives the ``(b - a, D)`` float32 unit vectors of ``ids[a:b]``;
                called with at most ``chunk`` rows at a time (default :data:`BUILD_CHUNK`).
            beside: the index file to be: the float16 copy used for re-ranking grows beside it
                (``<name>.build.*.tmp``, memory-mapped; :meth:`save` copies its rows into
                place and deletes it; the system's temporary folder when that one is read-only).

        The training sample is the rows :meth:`build` would pick from the same ``seed``, so
        both give the same lists and codebooks; recall is measured against the float16
        copy (read from disk) rather than float32 vectors.
        """
        t0 = time.perf_counter()
        chunk = chunk or BUILD_CHUNK
        ids = np.ascontiguousarray(ids, np.int64)
        n = len(ids)
        if n < IVFPQ_MIN_VECTORS:
            raise InputError(f"ivfpq needs at least {IVFPQ_MIN_VECTORS} vectors to train; got {n}")
        first = read(0, min(n, 1))
        dim = first.shape[1]
        params = _default_params("ivfpq", n, dim)
        vi = cls(dim, generation=generation, kind="ivfpq", params=params)
        vi._train_ivf(n, lambda rows: _read_rows(read, rows, chunk), seed)
        try:
            fd, name = tempfile.mkstemp(prefix=f"{beside.name}.build.", suffix=".tmp", dir=beside.parent)
        except OSError:
            fd, name = tempfile.mkstemp(prefix=f"{beside.name}.build.", suffix=".tmp")
        os.close(fd)
        exact = np.lib.format.open_memmap(name, mode="w+", dtype=np.float16, shape=(n, dim))
        quantizer = _hnsw_quantizer(vi.index)
        if quantizer is not None:
            quantizer.hnsw.efSearch = ASSIGN_EF
        for a in range(0, n, chunk):
            vectors = np.ascontiguousarray(read(a, min(n, a + chunk)), np.float32)
            vi.index.add_with_ids(vectors, ids[a:a + len(vectors)])
            exact[a:a + len(vectors)] = vectors
        exact.flush()
        vi._exact, vi._exact_ids, vi._ids = np.load(name, mmap_mode="r"), ids, ids
        vi._build_file = name
        vi.stats["build_s"] = round(time.perf_counter() - t0, 3)
        vi._measure(ids, vi._exact, tune, target_recall, seed)
        vi.stats["build_s"] = round(time.perf_counter() - t0, 3)
        return vi

    def _train_ivf(self, n: int, take: Callable[[np.ndarray], np.ndarray], seed: int) -> None:
        """Train ivfpq on samples of ``n`` unit vectors: list centroids (two-level k-means) into the
        HNSW quantizer, then the PQ codebooks. ``take(rows)`` gives the ``(len(rows), D)`` float32
        vectors of the sorted row numbers ``rows`` (from memory, or read in chunks)."""
        rng = np.random.default_rng(seed)
        nlist = int(self.params["nlist"])
        centroids = two_level_kmeans(take(_sample_index(n, IVF_TRAIN_PER_LIST * nlist, rng)), nlist, seed)
        self.index.quantizer.add(centroids)  # trained and full: FAISS's train() leaves it alone
        self.index.train(take(_sample_index(n, PQ_TRAIN_MAX, rng)))

    def _measure(self, ids: np.ndarray, vectors: np.ndarray, tune: bool, target: float, seed: int) -> None:
        """Recall@10 on stored vectors as queries (each one's own id left out), tuning the knob first."""
        bench = RecallBench(ids, vectors, seed=seed)
        if self.kind == "hnsw":
            grid = [{"efSearch": ef} for ef in EF_SEARCH_STEPS] if tune else [{}]
        else:
            steps = [2 ** i for i in range(int(math.log2(self.params["nlist"])) + 1)]
            grid = [{"rerank": r, "nprobe": p, "quantizer_ef": ef} for r in RERANK_FACTORS for p in steps
                    for ef in (max(QUANTIZER_EF_MIN, p), 2 * max(QUANTIZER_EF_MIN, p))] if tune else [{}]
        recall, best = -1.0, dict(self.params)
        for setting in grid:
            self.params.update(setting)
            r = bench.recall(self)
            if r > recall:
                recall, best = r, dict(self.params)
            if r >= target:
                recall, best = r, dict(self.params)
                break
        self.params = best
        self.stats.update(recall_at_10=round(recall, 4), recall_queries=bench.n_queries,
                          recall_note=f"{bench.n_queries} stored vectors as queries, own id left out")

    # -- add / remove ----------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add ``(n, D)`` float32 unit vectors under new ``(n,)`` int64 ids."""
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, np.float32)
        ids = np.ascontiguousarray(ids, np.int64)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise InputError(f"vectors have dim {vectors.shape[-1]}; this index holds dim {self.dim}")
        if len(ids) != len(vectors):
            raise InputError(f"{len(ids)} ids for {len(vectors)} vectors")
        clash = np.intersect1d(ids, np.concatenate([self._ids, self._dead]))
        if clash.size or np.unique(ids).size != ids.size:
            raise InputError(f"ids already in the index or repeated (e.g. {clash[:3].tolist() or 'repeats'}); "
                             "ids are never reused: rebuild the index from DuckDB")
        quantizer = _hnsw_quantizer(self.index)
        if quantizer is not None:
            quantizer.hnsw.efSearch = ASSIGN_EF  # the list of each added vector
        self.index.add_with_ids(vectors, ids)
        if self.kind == "ivfpq":
            self._add_exact(ids, vectors)
        self._ids = np.union1d(self._ids, ids)

    def _add_exact(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add rows to the float16 copy. A memory-mapped copy gaining larger ids (ids only grow)
        is copied :data:`EXACT_CHUNK` rows at a time into a new file beside it with the rows
        appended, so an update never holds the whole copy in memory; otherwise in memory."""
        old = self._exact
        appended = isinstance(old, np.memmap) and (self._exact_ids.size == 0 or ids.min() > self._exact_ids[-1])
        if appended and old.filename:
            order = np.argsort(ids, kind="stable")
            fd, name = tempfile.mkstemp(prefix=Path(old.filename).name + ".build.", suffix=".tmp",
                                        dir=Path(old.filename).parent)
            os.close(fd)
            grown = np.lib.format.open_memmap(name, mode="w+", dtype=np.float16, shape=(len(old) + len(ids), self.dim))
            for a in range(0, len(old), EXACT_CHUNK):
                b = min(len(old), a + EXACT_CHUNK)
                grown[a:b] = old[a:b]
            grown[len(old):] = vectors[order].astype(np.float16)
            grown.flush()
            del grown
            if self._build_file is not None:
                Path(self._build_file).unlink(missing_ok=True)
            self._exact, self._build_file = np.load(name, mmap_mode="r"), name
            self._exact_ids = np.concatenate([self._exact_ids, ids[order]])
        else:
            exact_ids = np.concatenate([self._exact_ids, ids])
            order = np.argsort(exact_ids, kind="stable")
            self._exact = np.concatenate([np.asarray(old), vectors.astype(np.float16)])[order]
            self._exact_ids = exact_ids[order]
        self._exact_file = None

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids`` (unknown ones are ignored); returns how many were removed.

        HNSW cannot delete from its graph, and deleting from FAISS 1.15's fast-scan
        lists (ivfpq) leaves the other codes under the wrong ids: the ids are masked out
        of every search instead, until the index is rebuilt.
        """
        ids = np.intersect1d(np.asarray(ids, np.int64), self._ids)
        if ids.size == 0:
            return 0
        if self._masks_removals():
            self._dead = np.union1d(self._dead, ids)
        else:  # a flat index, or an 8-bit ivfpq saved by an older version
            self.index.remove_ids(faiss.IDSelectorBatch(ids))  # ivfpq's float16 rows stay until saved
        self._ids = np.setdiff1d(self._ids, ids, assume_unique=True)
        return int(ids.size)

    def _masks_removals(self) -> bool:
        """Whether removed ids stay in the FAISS index, masked out of searches (HNSW, fast-scan IVF)."""
        return self.kind == "hnsw" or isinstance(self.index, faiss.IndexIVFFastScan)

    # -- search ----------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product: ``(scores (q, k') float32, ids (q, k') int64)``, best first.

        ``k' = min(k, candidates)``; an ANN that finds fewer pads with id -1.

        Args:
            queries: ``(q, D)`` unit vectors.
            k: neighbours per query.
            allowed: optional ids to restrict the search to (a metadata filter). Small
                subsets are searched exactly; larger ones through the index's selector.
        """
        q = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        if q.shape[1] != self.dim:
            raise InputError(f"query has dim {q.shape[1]}; this index holds dim {self.dim}")
        if k < 1:
            raise InputError(f"k must be at least 1; got {k}")
        cand = self._ids
        if allowed is not None:
            allowed = np.unique(np.asarray(allowed, np.int64))
            cand = allowed[_member(allowed, self._ids)]
        k = min(k, int(cand.size))
        if k == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if self.kind == "flat":
            return self._faiss_search(q, k, None if allowed is None else cand, {})
        small = cand.size <= EXACT_SUBSET_MAX or cand.size < EXACT_SUBSET_SHARE * self.ntotal
        if (allowed is not None and small) or 4 * k >= cand.size:
            return self.exact_search(q, k, cand)
        share = cand.size / max(1, self.ntotal)
        if self.kind == "hnsw":
            ef = max(int(self.params["efSearch"]), k)
            if allowed is not None:
                ef = min(int(math.ceil(ef / share)), 8 * ef)
            sel_ids = cand if allowed is not None else None
            scores, got = self._faiss_search(q, k, sel_ids, {"efSearch": ef})
        else:
            nprobe = int(self.params["nprobe"])
            if allowed is not None:
                nprobe = int(math.ceil(nprobe / share))
            nprobe = min(nprobe, int(self.params["nlist"]))
            knobs = {"nprobe": nprobe, "quantizer_ef": max(nprobe, int(self.params.get("quantizer_ef", 0)))}
            # 4-bit codes are coarse: a small k still re-ranks the shortlist of k=10
            shortlist = min(int(cand.size), max(k, RECALL_K) * int(self.params["rerank"]))
            _, short = self._faiss_search(q, shortlist, None if allowed is None else cand, knobs)
            scores, got = self._rerank(q, short, k)
        short_rows = np.flatnonzero((got[:, :k] < 0).any(axis=1))
        if short_rows.size:  # the ANN found fewer than k: answer those queries exactly
            scores[short_rows], got[short_rows] = self.exact_search(q[short_rows], k, cand)
        return scores, got

    def _faiss_search(self, q: np.ndarray, k: int, sel_ids: np.ndarray | None,
                      knobs: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
        """One FAISS call with the selector (allowed ids, minus HNSW's masked ids) and knobs."""
        keep: list[Any] = []  # FAISS holds raw pointers: keep the selectors alive until the call returns
        sel = None
        if sel_ids is not None:
            sel = faiss.IDSelectorBatch(np.ascontiguousarray(sel_ids, np.int64))
        elif self._dead.size:
            inner = faiss.IDSelectorBatch(self._dead)
            keep.append(inner)
            sel = faiss.IDSelectorNot(inner)
        keep.append(sel)
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=knobs["efSearch"])
        elif self.kind == "ivfpq":
            params = faiss.SearchParametersIVF(nprobe=knobs["nprobe"])
            if _hnsw_quantizer(self.index) is not None:  # older 8-bit IndexIVFPQ files have a flat quantizer
                quantizer_params = faiss.SearchParametersHNSW(efSearch=knobs["quantizer_ef"])
                keep.append(quantizer_params)
                params.quantizer_params = quantizer_params
        else:
            params = faiss.SearchParameters()
        if sel is not None:
            params.sel = sel
        scores, ids = self.index.search(q, k, params=params)
        del keep
        return scores, ids

    def _rerank(self, q: np.ndarray, short: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Re-score ``(q, S)`` shortlisted ids with the float16 copy; ``(q, k)`` best first."""
        scores = np.full((len(q), k), -np.inf, np.float32)
        out = np.full((len(q), k), -1, np.int64)
        step = max(1, 2**22 // max(1, short.shape[1] * self.dim))  # ~16 MB of float32 per block
        for a in range(0, len(q), step):
            s_ids = short[a:a + step]
            valid = s_ids >= 0
            rows = np.searchsorted(self._exact_ids, np.where(valid, s_ids, 0))
            vecs = np.asarray(self._exact[rows.ravel()], np.float32).reshape(*rows.shape, self.dim)
            sims = np.matmul(vecs, q[a:a + step, :, None])[:, :, 0]
            sims[~valid] = -np.inf
            top = _topk_rows(sims, k)
            scores[a:a + step] = np.take_along_axis(sims, top, 1)
            picked = np.take_along_axis(s_ids, top, 1)
            out[a:a + step] = np.where(np.isfinite(scores[a:a + step]), picked, -1)
        return scores, out

    def exact_search(self, queries: np.ndarray, k: int, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Brute-force top-``k`` over ``ids`` (default: every live id), from the stored vectors.

        Returns ``(scores (q, k) float32, ids (q, k) int64)`` best first; ivfpq scores come
        from its float16 copy.
        """
        q = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        ids = self._ids if ids is None else np.asarray(ids, np.int64)
        k = min(k, int(ids.size))
        best_s = np.full((len(q), 0), -np.inf, np.float32)
        best_i = np.zeros((len(q), 0), np.int64)
        for a in range(0, ids.size, EXACT_CHUNK):
            chunk = ids[a:a + EXACT_CHUNK]
            sims = q @ self.vectors_of(chunk).T
            s = np.concatenate([best_s, sims], axis=1)
            i = np.concatenate([best_i, np.broadcast_to(chunk, sims.shape)], axis=1)
            top = _topk_rows(s, k)
            best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
        return best_s.astype(np.float32), best_i

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """``(m, D)`` float32 stored vectors of live ``ids`` (ivfpq: its float16 copy)."""
        ids = np.ascontiguousarray(ids, np.int64)
        if not _member(ids, self._ids).all():
            raise InputError(f"ids not in this index: {ids[~_member(ids, self._ids)][:5].tolist()}")
        if self.kind == "ivfpq":
            return np.asarray(self._exact[np.searchsorted(self._exact_ids, ids)], np.float32)
        return self.index.reconstruct_batch(ids)

    # -- persistence -----------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Kind, knobs and measurements, JSON-able (what ``retrieve info`` shows)."""
        return describe(self.kind, self.ntotal, self.dim, self.params, self.stats, int(self._dead.size))

    def save(self, path: Path) -> None:
        """Write atomically: temp files in the same folder, each moved into place with ``os.replace``.

        Order: the FAISS file, then (ivfpq) the float16 copy under a fresh name, then the
        sidecar, which names that copy and is the commit point; older copies are removed.
        """
        path = Path(path)
        _write_atomic(path, lambda tmp: faiss.write_index(self.index, tmp))
        self.stats["faiss_bytes"] = path.stat().st_size
        exact_name = ids_name = None
        if self.kind == "ivfpq":
            live = _member(self._exact_ids, self._ids)
            stem = f"{path.name}.{uuid.uuid4().hex[:8]}"
            exact_name, ids_name = f"{stem}.exact.npy", f"{stem}.ids.npy"
            _write_atomic(path.parent / ids_name, lambda tmp: _save_npy(tmp, self._exact_ids[live]))
            _write_atomic(path.parent / exact_name, lambda tmp: _save_rows(tmp, self._exact, live))
        meta = {"generation": self.generation, "ntotal": self.ntotal, "dim": self.dim, "kind": self.kind,
                "params": self.params, "stats": self.stats, "exact": exact_name,
                "masked": self._dead.tolist(), "checksum": file_checksum(path)}
        if exact_name is not None and ids_name is not None:
            meta["exact_checksum"] = file_checksum(path.parent / exact_name)
            meta["ids_checksum"] = file_checksum(path.parent / ids_name)
        _write_atomic(sidecar(path), lambda tmp: Path(tmp).write_text(json.dumps(meta)))
        for old in path.parent.glob(f"{path.name}.*.npy"):
            if old.name not in (exact_name, ids_name):
                old.unlink(missing_ok=True)
        if exact_name is not None and ids_name is not None:  # serve re-ranking from the file from now on, not from RAM
            self._exact_ids = np.load(path.parent / ids_name)
            self._exact = np.load(path.parent / exact_name, mmap_mode="r")
            self._exact_file = exact_name
            if self._build_file is not None:
                Path(self._build_file).unlink(missing_ok=True)
                self._build_file = None

    @classmethod
    def load(cls, path: Path) -> VectorIndex | None:
        """Read an index and its sidecar; None when anything is missing, unreadable, damaged or disagrees.

        Damaged: a file's checksum differs from the one its sidecar recorded, or the
        sidecar recorded none.
        """
        path = Path(path)
        try:
            meta = json.loads(sidecar(path).read_text())
            if not isinstance(meta, dict) or not isinstance(meta.get("stats") or {}, dict):
                return None
            expected_bytes = (meta.get("stats") or {}).get("faiss_bytes")
            if expected_bytes is not None and int(expected_bytes) != path.stat().st_size:
                return None
            if not _checksum_matches(path, meta.get("checksum")):
                return None
            index = faiss.read_index(str(path))
            kind = meta.get("kind", "flat")
            if kind not in INDEX_TYPES or _kind_of(index) != kind:
                return None
            vi = cls(index.d, index, str(meta.get("generation")), kind, meta.get("params") or {})
            vi.stats = dict(meta.get("stats") or {})
            vi._dead = np.asarray(meta.get("masked") or [], np.int64)
            if kind == "ivfpq":
                stem = path.parent / str(meta["exact"]).rsplit(".exact.npy", 1)[0]
                if not (_checksum_matches(Path(f"{stem}.ids.npy"), meta.get("ids_checksum"))
                        and _checksum_matches(Path(f"{stem}.exact.npy"), meta.get("exact_checksum"))):
                    return None
                vi._exact_ids = np.load(f"{stem}.ids.npy")
                vi._exact = np.load(f"{stem}.exact.npy", mmap_mode="r")
                vi._exact_file = str(meta["exact"])
                vi._ids = vi._exact_ids
                if vi._exact.shape != (vi._exact_ids.size, vi.dim):
                    return None
            else:
                # ids are unique (never reused): assume_unique skips np.unique, which imports numpy.ma
                vi._ids = np.setdiff1d(np.sort(faiss.vector_to_array(index.id_map).astype(np.int64)), vi._dead,
                                       assume_unique=True)
        except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError):
            return None
        if int(meta.get("ntotal", -1)) != vi.ntotal or index.ntotal != vi.ntotal + vi._dead.size:
            return None
        return vi


class RecallBench:
    """Recall@k of an index against exact search, with stored vectors as queries.

    Ground truth is computed once: for each sampled vector, the exact k-th best score
    over all the others (its own row left out). A returned id is a hit when its exact
    score reaches that value (less :data:`RECALL_TIE`), so ties at the cut are not misses.
    """

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, *, k: int = RECALL_K,
                 n_queries: int = RECALL_QUERIES, seed: int = 0) -> None:
        n = len(ids)
        self.k = min(k, n - 1)
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(n, min(n_queries, n), replace=False)) if n > 1 else np.zeros(0, np.int64)
        self.rows, self.ids, self.vectors = rows, np.asarray(ids, np.int64), vectors
        self.queries = np.ascontiguousarray(vectors[rows])
        self.order = np.argsort(self.ids, kind="stable")
        self.kth = np.full(len(rows), np.inf, np.float32)
        if self.k >= 1 and len(rows):
            top = np.full((len(rows), 0), -np.inf, np.float32)
            for a in range(0, n, EXACT_CHUNK):
                sims = self.queries @ vectors[a:a + EXACT_CHUNK].T
                own = (rows >= a) & (rows < a + EXACT_CHUNK)
                sims[np.flatnonzero(own), rows[own] - a] = -np.inf
                both = np.concatenate([top, sims], axis=1)
                top = np.take_along_axis(both, _topk_rows(both, self.k), 1)
            self.kth = top[:, self.k - 1]

    @property
    def n_queries(self) -> int:
        return int(len(self.rows)) if self.k >= 1 else 0

    def recall(self, vi: VectorIndex) -> float:
        """Mean share of each query's returned k (own id dropped) that are true top-k; 1.0 when n <= 1."""
        if self.n_queries == 0:
            return 1.0
        _, got = vi.search(self.queries, self.k + 1)
        own = self.ids[self.rows]
        hits = 0
        for i in range(len(self.rows)):
            found = got[i][(got[i] >= 0) & (got[i] != own[i])][: self.k]
            pos = self.order[np.searchsorted(self.ids, found, sorter=self.order)]
            exact = self.vectors[pos] @ self.queries[i]
            hits += int((exact >= self.kth[i] - RECALL_TIE).sum())
        return hits / (self.k * len(self.rows))


def sidecar(path: Path) -> Path:
    return Path(path).with_suffix(Path(path).suffix + ".json")


def describe(kind: str, ntotal: int, dim: int, params: dict[str, Any], stats: dict[str, Any],
             masked: int) -> dict[str, Any]:
    """What ``retrieve info`` shows of one FAISS build, from a loaded index or from its sidecar alone.

    ``ntotal``: searchable vectors; ``masked``: removed ids still stored (HNSW), so the file
    holds ``ntotal + masked`` vectors of ``dim`` floats.
    """
    out: dict[str, Any] = {"index_type": kind, "ntotal": ntotal, "params": dict(params)}
    out.update(stats)
    if stats.get("faiss_bytes") is not None and ntotal + masked:
        out["bytes_per_vector"] = round(stats["faiss_bytes"] / (ntotal + masked), 1)
    if kind == "ivfpq":
        out["rerank_bytes_per_vector"] = 2 * dim
    if masked:
        out["masked_ids"] = masked
    return out


def describe_sidecar(meta: dict[str, Any]) -> dict[str, Any]:
    """:func:`describe` of the build a sidecar records (the JSON :meth:`VectorIndex.save` writes)."""
    return describe(str(meta.get("kind")), int(meta["ntotal"]), int(meta.get("dim") or 0),
                    meta.get("params") or {}, meta.get("stats") or {}, len(meta.get("masked") or []))


def file_checksum(path: Path) -> str:
    """``xxh3_128:<hex>`` of a file's bytes, read in :data:`CHECKSUM_CHUNK` steps."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(CHECKSUM_CHUNK):
            h.update(chunk)
    return f"xxh3_128:{h.hexdigest()}"


def _checksum_matches(path: Path, recorded: Any) -> bool:
    """True when the file's bytes still give the checksum its sidecar recorded (every save
    records one: a sidecar without it is not trusted, and the file is rebuilt)."""
    return recorded is not None and file_checksum(path) == recorded


def _default_params(kind: IndexType, n: int, dim: int) -> dict[str, Any]:
    if kind == "hnsw":
        return {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION, "efSearch": 64}
    if kind == "ivfpq":
        nlist, m = ivf_lists(n), pq_subquantizers(dim)
        return {"nlist": nlist, "pq_m": m, "pq_bits": 4, "pq_bytes": (4 * m + 7) // 8, "nprobe": min(32, nlist),
                "quantizer_ef": 2 * QUANTIZER_EF_MIN, "rerank": RERANK_FACTORS[1]}
    return {}


def _new_index(kind: IndexType, dim: int, params: dict[str, Any]) -> faiss.Index:
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, int(params.get("M", HNSW_M)), faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = int(params.get("efConstruction", HNSW_EF_CONSTRUCTION))
        return faiss.IndexIDMap2(hnsw)  # the wrapper keeps a reference to hnsw
    if kind == "ivfpq":
        quantizer = faiss.IndexHNSWFlat(dim, QUANTIZER_M, faiss.METRIC_INNER_PRODUCT)
        quantizer.hnsw.efConstruction = QUANTIZER_EF_CONSTRUCTION
        index = faiss.IndexIVFPQFastScan(quantizer, dim, int(params["nlist"]), int(params["pq_m"]), 4,
                                         faiss.METRIC_INNER_PRODUCT)  # keeps a reference to the quantizer
        index.by_residual = False  # codes of the unit vectors themselves: one look-up table per query
        return index
    raise ChoiceError("index type", kind, INDEX_TYPES)


def two_level_kmeans(x: np.ndarray, nlist: int, seed: int = 0) -> np.ndarray:
    """``(nlist, D)`` float32 unit centroids of ``(n, D)`` float32 unit vectors, ``n >= nlist``.

    Spherical k-means into about sqrt(nlist) groups, then each group into a share of the
    ``nlist`` centroids proportional to its size: about ``2 x n x sqrt(nlist) x D`` multiply-adds
    a round instead of ``n x nlist x D`` (16384 lists from 512k x 512-d: ~40 s on 2 cores).
    """
    n, dim = x.shape
    if not 1 <= nlist <= n:
        raise InputError(f"two_level_kmeans needs 1 <= nlist <= n; got nlist {nlist}, n {n}")
    n_groups = max(1, round(math.sqrt(nlist)))
    top = _spherical_kmeans(x, n_groups, seed, max_points_per_centroid=1000)
    group = top.index.search(x, 1)[1][:, 0]
    shares = _proportional_shares(np.bincount(group, minlength=n_groups), nlist)
    parts = []
    for g in np.flatnonzero(shares):
        members = x[group == g]
        if shares[g] == len(members):
            parts.append(members)
        else:
            parts.append(_spherical_kmeans(members, int(shares[g]), seed + 1 + int(g)).centroids)
    return np.ascontiguousarray(np.concatenate(parts), np.float32)


def _spherical_kmeans(x: np.ndarray, k: int, seed: int, max_points_per_centroid: int = 256) -> faiss.Kmeans:
    """A trained FAISS spherical k-means of ``(n, D)`` float32 rows into ``k`` unit centroids."""
    km = faiss.Kmeans(x.shape[1], k, niter=IVF_KMEANS_ITERATIONS, spherical=True, seed=seed,
                      min_points_per_centroid=1, max_points_per_centroid=max_points_per_centroid)
    km.train(np.ascontiguousarray(x, np.float32))
    return km


def _proportional_shares(sizes: np.ndarray, total: int) -> np.ndarray:
    """``(g,)`` int64 shares of ``total`` proportional to ``sizes`` (largest remainders round up);
    no share exceeds its size when ``total <= sizes.sum()``."""
    exact = sizes * (total / sizes.sum())
    shares = np.floor(exact).astype(np.int64)
    shares[np.argsort(shares - exact, kind="stable")[: total - int(shares.sum())]] += 1
    return shares


def _sample_index(n: int, n_max: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` row numbers, or ``n_max`` of them picked at random (sorted)."""
    return np.arange(n) if n <= n_max else np.sort(rng.choice(n, n_max, replace=False))


def _read_rows(read: Callable[[int, int], np.ndarray], rows: np.ndarray, chunk: int) -> np.ndarray:
    """``(len(rows), D)`` float32: the given sorted ``rows`` of a chunked reader, ``chunk`` rows read at a time."""
    parts = []
    for a in range(0, int(rows[-1]) + 1 if len(rows) else 0, chunk):
        want = rows[(rows >= a) & (rows < a + chunk)]
        if len(want):
            parts.append(read(a, a + chunk)[want - a])  # the last chunk may be short; want stays inside it
    return np.ascontiguousarray(np.concatenate(parts), np.float32)


def _hnsw_quantizer(index: faiss.Index) -> faiss.IndexHNSW | None:
    """The HNSW graph an IVF index finds its lists with; None for any other index or quantizer."""
    if not isinstance(index, faiss.IndexIVF):
        return None
    quantizer = faiss.downcast_index(index.quantizer)
    return quantizer if isinstance(quantizer, faiss.IndexHNSW) else None


def _kind_of(index: faiss.Index) -> str | None:
    if isinstance(index, (faiss.IndexIVFPQFastScan, faiss.IndexIVFPQ)):
        return "ivfpq"
    if isinstance(index, faiss.IndexIDMap2):
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexHNSW):
            return "hnsw"
        if isinstance(inner, faiss.IndexFlat):
            return "flat"
    return None


def _member(ids: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """``(m,)`` bool: which ``ids`` occur in the sorted ``sorted_ids``."""
    if sorted_ids.size == 0:
        return np.zeros(ids.shape, bool)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
    return sorted_ids[pos] == ids


def _topk_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's ``k`` largest scores, best first: ``(q, k)`` int64."""
    if scores.shape[1] > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


def _save_rows(path: str, array: np.ndarray, keep: np.ndarray) -> None:
    """Save ``array[keep]`` (``keep``: ``(n,)`` bool) as ``.npy``, :data:`EXACT_CHUNK` rows at a time
    (``array`` may be a memory map larger than RAM)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=array.dtype, shape=(int(keep.sum()), *array.shape[1:]))
    pos = 0
    for a in range(0, len(array), EXACT_CHUNK):
        part = np.asarray(array[a:a + EXACT_CHUNK])[keep[a:a + EXACT_CHUNK]]
        out[pos:pos + len(part)] = part
        pos += len(part)
    out.flush()
    del out


def _write_atomic(path: Path, write: Any) -> None:
    """``write(tmp_path)`` into a temp file beside ``path``, then ``os.replace`` it into place."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
