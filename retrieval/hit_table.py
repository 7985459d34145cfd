"""Search hits as plain rows from tables kept in memory: the serving path, without pandas per query.

:func:`retrieval.search.search_files` builds each answer as a DataFrame from
:meth:`Store.hit_tables`; at 100k windows that took ~18 ms of a ~30 ms search by an
indexed file, and ``to_dict`` plus cleaning a few more. A :class:`HitTable` is made once
from the same two tables per version of the store (``generation``, ``metadata_version``):
sorted numpy id columns for the windows, and each file's shown values already as plain
Python scalars. A hit is then a ``searchsorted`` and one small dict.

Rows equal the DataFrame's records after :func:`retrieval.render.clean_record`, key for
key and value for value (same key order), so ``json.dumps`` of them is what
``retrieve query --json`` prints for the same hits.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval.hits import positions, shown_columns
from retrieval.render import clean
from retrieval.store import Store

#: Query vectors of indexed files or windows kept per store (each ``(D,)`` float32).
QUERY_CACHE_SIZE = 4096
#: Raw file vectors kept in memory for searches by an indexed file, at most this many bytes
#: (10k files of dim 160: 6.4 MB); a larger index reads each query's vector from DuckDB.
FILE_QUERIES_MAX_BYTES = 256 * 2**20


@dataclass(frozen=True)
class HitTable:
    """Everything a hit shows, for every vector id of one version of a store.

    Attributes:
        window_ids: ``(n,)`` int64 vector ids (both levels), sorted.
        file_of: ``(n,)`` int64 file id of each.
        start_sample, end_sample: ``(n,)`` int64 (or float64 where NULL) bounds of each, samples.
        file_ids: ``(m,)`` int64 file ids, sorted.
        file_values: per file (in ``file_ids`` order), the tuple of plain values of ``columns``.
        columns: the keys those tuples fill: ``path``, ``root`` (indexes with several roots),
            the shown label and metadata columns, ``duration_s``.
        sample_rate: Hz, to turn samples into ``start_s`` / ``end_s``.
    """

    window_ids: np.ndarray
    file_of: np.ndarray
    start_sample: np.ndarray
    end_sample: np.ndarray
    file_ids: np.ndarray
    file_values: list[tuple[Any, ...]]
    columns: tuple[str, ...]
    sample_rate: int

    def files_of(self, ids: np.ndarray) -> np.ndarray:
        """``(k,)`` int64 file ids of ``(k,)`` vector ids.

        Raises:
            KeyError: an id this table does not hold.
        """
        return self.file_of[self._positions(ids)]

    def rows(self, ids: np.ndarray, scores: np.ndarray, *, first_rank: int = 1) -> list[dict[str, Any]]:
        """One dict per hit, best first, for ``(k,)`` int64 vector ``ids`` and ``(k,)`` float ``scores``:
        ``rank, score, path, [root,] start_s, end_s, <metadata...>, duration_s, window_id, file_id``.

        Raises:
            KeyError: an id this table does not hold.
        """
        ids = np.asarray(ids, np.int64)
        if not ids.size:
            return []
        pos = self._positions(ids)
        owners = self.file_of[pos]
        fpos = np.searchsorted(self.file_ids, owners)
        starts = (self.start_sample[pos] / self.sample_rate).tolist()
        ends = (self.end_sample[pos] / self.sample_rate).tolist()
        n_lead = 2 if self.columns[1:2] == ("root",) else 1  # path, and root where there are several
        lead, middle = self.columns[:n_lead], self.columns[n_lead:-1]
        out = []
        for i, (sid, score, fid, fp) in enumerate(zip(ids.tolist(), np.asarray(scores, np.float64).tolist(),
                                                      owners.tolist(), fpos.tolist())):
            values = self.file_values[fp]
            row: dict[str, Any] = {"rank": first_rank + i, "score": clean(score)}
            row.update(zip(lead, values[:n_lead]))
            row["start_s"], row["end_s"] = clean(starts[i]), clean(ends[i])
            row.update(zip(middle, values[n_lead:-1]))
            row["duration_s"] = values[-1]
            row["window_id"], row["file_id"] = sid, fid
            out.append(row)
        return out

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        return positions(self.window_ids, ids)


def build(store: Store) -> HitTable:
    """A :class:`HitTable` of ``store``'s current version, from :meth:`Store.hit_tables`."""
    windows, files = store.hit_tables()
    order = np.argsort(windows.index.to_numpy(np.int64), kind="stable")
    ids = windows.index.to_numpy(np.int64)[order]
    forder = np.argsort(files.index.to_numpy(np.int64), kind="stable")
    files = files.iloc[forder]
    extra = shown_columns(list(files.columns))
    multi_root = "root" in files.columns and len(store.db.roots()) > 1
    columns = ("path", *(("root",) if multi_root else ()), *extra, "duration_s")
    values = list(zip(*[[clean(v) for v in files[c].array] for c in columns])) if len(files) else []
    return HitTable(
        window_ids=ids,
        file_of=windows["file_id"].to_numpy(np.int64)[order],
        start_sample=windows["start_sample"].to_numpy()[order],
        end_sample=windows["end_sample"].to_numpy()[order],
        file_ids=files.index.to_numpy(np.int64),
        file_values=values,
        columns=columns,
        sample_rate=store.require_recipe().sample_rate,
    )


@dataclass(frozen=True)
class FileQueries:
    """The stored raw vector of every file that has exactly one, and its number of windows.

    Reading one file's vector from DuckDB scans for its rows (3 ms at 100k windows on an
    idle machine, 15 ms on a busy one); this is one array lookup. The vectors are the
    stored float32 values, so a query made from one equals the one read from DuckDB bit
    for bit.

    Attributes:
        file_ids: ``(m,)`` int64, sorted.
        raw: ``(m, D)`` float32 raw pooled file vectors, in ``file_ids`` order.
        n_windows: ``(m,)`` int64 windows with a vector of each file.
    """

    file_ids: np.ndarray
    raw: np.ndarray
    n_windows: np.ndarray

    def get(self, file_id: int) -> tuple[np.ndarray, int] | None:
        """``((1, D) float32 copy of the raw vector, windows)`` of ``file_id``; None when not held."""
        pos = int(np.searchsorted(self.file_ids, file_id))
        if pos >= len(self.file_ids) or int(self.file_ids[pos]) != int(file_id):
            return None
        return self.raw[pos:pos + 1].copy(), int(self.n_windows[pos])


def build_file_queries(store: Store, table: HitTable) -> FileQueries | None:
    """:class:`FileQueries` of ``store`` (None when they would take over :data:`FILE_QUERIES_MAX_BYTES`)."""
    dim = store.require_recipe().dim
    if store.db.count_vectors("file") * dim * 4 > FILE_QUERIES_MAX_BYTES:
        return None
    ids, raw = store.db.vectors("file", dim)
    owners = table.files_of(ids)
    fids, first, counts = np.unique(owners, return_index=True, return_counts=True)
    single = counts == 1  # a file with two file vectors is left to DuckDB, as before
    windows = table.files_of(store.db.vector_ids("window"))
    wf, wn = np.unique(windows, return_counts=True)
    n_windows = np.zeros(len(fids), np.int64)
    at = np.searchsorted(fids, wf)
    hit = (at < len(fids)) & (fids[np.minimum(at, max(len(fids) - 1, 0))] == wf) if len(fids) else np.zeros(0, bool)
    n_windows[at[hit]] = wn[hit]
    return FileQueries(fids[single], np.ascontiguousarray(raw[first[single]], np.float32), n_windows[single])


class _Cached:
    """What is kept per store: the hit table and query vectors of one version."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.table: tuple[tuple[Any, ...], HitTable] | None = None
        self.queries: tuple[tuple[Any, ...], OrderedDict[tuple[Any, ...], Any]] | None = None
        self.file_queries: tuple[tuple[Any, ...], FileQueries | None] | None = None


_CACHE: weakref.WeakKeyDictionary[Store, _Cached] = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


def _cached(store: Store) -> _Cached:
    with _CACHE_LOCK:
        found = _CACHE.get(store)
        if found is None:
            found = _CACHE[store] = _Cached()
        return found


def hit_table(store: Store) -> HitTable:
    """``store``'s :class:`HitTable`, made again when its vectors or metadata changed."""
    key = (store.db.get("generation"), store.db.get("metadata_version"))
    cached = _cached(store)
    with cached.lock:
        if cached.table is None or cached.table[0] != key:
            cached.table = (key, build(store))
        return cached.table[1]


def file_queries(store: Store) -> FileQueries | None:
    """``store``'s :class:`FileQueries`, made again when its vectors changed (None: too large)."""
    table = hit_table(store)
    key = (store.db.get("generation"),)
    cached = _cached(store)
    with cached.lock:
        if cached.file_queries is None or cached.file_queries[0] != key:
            cached.file_queries = (key, build_file_queries(store, table))
        return cached.file_queries[1]


def cached_query(store: Store, key: tuple[Any, ...], compute: Any) -> Any:
    """``compute()``, kept (up to :data:`QUERY_CACHE_SIZE`, least recently used out) under ``key``
    while ``store``'s vectors and fitted post-processing stay the same."""
    version = (store.db.get("generation"), store.fit_digest())
    cached = _cached(store)
    with cached.lock:
        if cached.queries is None or cached.queries[0] != version:
            cached.queries = (version, OrderedDict())
        found = cached.queries[1]
        if key in found:
            found.move_to_end(key)
            return found[key]
    value = compute()
    with cached.lock:
        if cached.queries is not None and cached.queries[0] == version:
            found = cached.queries[1]
            found[key] = value
            while len(found) > QUERY_CACHE_SIZE:
                found.popitem(last=False)
    return value
