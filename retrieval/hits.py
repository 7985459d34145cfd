"""Turning FAISS answers into hits, shared by every search path (no store, no DuckDB).

:mod:`retrieval.search` ranks against an open :class:`~retrieval.store.Store`;
:mod:`retrieval.quick_query` ranks against the lookup an index's last writer left
(:mod:`retrieval.store.lookup`), so a one-off ``retrieve query`` need not import DuckDB.
Both go through these functions, so both give the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

#: ``(n,)`` vector ids -> ``(n,)`` int64 ids of their files.
FileOf = Callable[[np.ndarray], np.ndarray]

#: Hidden columns of ``files`` not shown in results.
HIDDEN = frozenset({"content_hash", "size", "mtime", "format", "indexed_at", "n_samples", "status", "n_windows",
                    "sample_rate", "channels", "root"})
#: Keys of a hit that do not come from the file's metadata columns.
HIT_KEYS = ("rank", "score", "path", "root", "start_s", "end_s", "duration_s", "window_id", "file_id")


class Searchable(Protocol):
    """What ranking needs of a vector index (:class:`retrieval.store.vectors.VectorIndex`)."""

    @property
    def ntotal(self) -> int: ...

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]: ...


def shown_columns(file_columns: list[str]) -> list[str]:
    """The columns of ``files`` a hit shows between ``end_s`` and ``duration_s``: the label and
    metadata columns, in table order."""
    return [c for c in file_columns if c not in HIDDEN and c not in HIT_KEYS]


def ranked_in(vi: Searchable, query: np.ndarray, k: int, allowed: np.ndarray | None, *, by_file: bool,
              file_of: FileOf) -> tuple[np.ndarray, np.ndarray]:
    """``(ids (n,) int64, scores (n,) float32)`` of the best ``n <= k`` windows of ``vi`` for the
    ``(D,)`` unit ``query``, best first, among ``allowed`` ids (None: all).

    ``by_file``: the best window of each of the best ``k`` files (FAISS is asked for more
    windows until ``k`` files are found or none is left).
    """
    none = np.zeros(0, np.int64), np.zeros(0, np.float32)
    if vi.ntotal == 0 or (allowed is not None and allowed.size == 0):
        return none
    limit = vi.ntotal if allowed is None else allowed.size
    fetch = min(limit, max(4 * k, k + 32)) if by_file else k
    while True:
        scores, ids = vi.search(query[None], fetch, allowed)
        keep = ids[0] >= 0
        ids, scores = ids[0][keep].astype(np.int64), scores[0][keep]
        if not by_file:
            return ids, scores
        first = first_per_file(file_of(ids), k)
        if len(first) >= k or fetch >= limit:
            return ids[first], scores[first]
        fetch = min(limit, fetch * 4)


def positions(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``(k,)`` positions of ``(k,)`` int64 ``ids`` in the sorted ``sorted_ids``.

    Raises:
        KeyError: an id ``sorted_ids`` does not hold (names up to five).
    """
    ids = np.asarray(ids, np.int64)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), max(len(sorted_ids) - 1, 0))
    if len(ids) and (len(sorted_ids) == 0 or not np.array_equal(sorted_ids[pos], ids)):
        missing = ids if len(sorted_ids) == 0 else ids[np.asarray(sorted_ids[pos]) != ids]
        raise KeyError(f"vector ids not in the index: {missing[:5].tolist()}")
    return pos


def first_per_file(file_ids: np.ndarray, k: int) -> np.ndarray:
    """Positions of the first ``k`` distinct values of ``file_ids`` (best-first hits), in order."""
    seen: set[int] = set()
    out: list[int] = []
    for pos, fid in enumerate(file_ids.tolist()):
        if fid not in seen:
            seen.add(fid)
            out.append(pos)
            if len(out) == k:
                break
    return np.asarray(out, np.int64)


def hit_dicts(found: Mapping[int, Mapping[str, Any]], ids: np.ndarray, scores: np.ndarray, *, sample_rate: int,
              extra: list[str], multi_root: bool) -> list[dict[str, Any]]:
    """One dict per hit, best first, with the keys and values of the search DataFrame's records.

    Args:
        found: ``vector id -> {file_id, start_sample, end_sample, path, root, duration_s, *extra}``
            for every id in ``ids``.
        ids, scores: ``(n,)`` hit ids and their scores, best first.
        sample_rate: the recipe's rate (Hz), to turn sample offsets into seconds.
        extra: the shown metadata columns (:func:`shown_columns`).
        multi_root: the index has several corpus roots, so a path needs its ``root``.
    """
    rows = []
    for rank, (sid, score) in enumerate(zip(ids.tolist(), scores.tolist()), start=1):
        hit = found[sid]
        row: dict[str, Any] = {"rank": rank, "score": float(score), "path": hit["path"]}
        if multi_root:
            row["root"] = hit["root"]
        row["start_s"] = hit["start_sample"] / sample_rate
        row["end_s"] = hit["end_sample"] / sample_rate
        row.update({c: hit[c] for c in extra})
        row.update({"duration_s": hit["duration_s"], "window_id": sid, "file_id": hit["file_id"]})
        rows.append(row)
    return rows
