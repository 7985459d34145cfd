"""Files and their windows as columns: what one bulk insert writes (:meth:`MetadataDB.insert_batch`).

:class:`~retrieval.store.db.FileRow` holds one file; a :class:`FileBatch` holds ``n`` files
as flat arrays, so a batch of a million windows is a handful of numpy arrays rather than a
million Python objects. Local ingest builds one from its rows (:func:`batch_of_rows`); the
Ray driver builds one straight from a Parquet shard (:mod:`retrieval.shard_merge`).

Shapes (``n`` files, ``W`` windows in all, ``K`` of them not silent, ``F`` files with a
file vector, ``P`` the vector dim): window ``j`` of file ``i`` is row ``offsets[i] + j``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

Strings = Union[Sequence[Union[str, None]], "pa.Array"]


@dataclass
class FileBatch:
    """``n`` files to insert with their windows and vectors, as columns.

    Attributes:
        path, root, content_hash, format, status, label: ``n`` strings each (a list, or an
            Arrow string array); ``label`` and ``root`` may hold None.
        size, n_samples: ``(n,)`` int64; mtime, duration_s: ``(n,)`` float64;
            sample_rate, channels: ``(n,)`` int.
        offsets: ``(n + 1,)`` int64, file ``i``'s windows are rows ``offsets[i]:offsets[i + 1]``.
        starts, ends: ``(W,)`` int64 window bounds in samples at the recipe's rate.
        rms_db: ``(W,)`` float32 window levels (dBFS); silent: ``(W,)`` bool;
            n_frames: ``(W,)`` int64 frames behind each window vector.
        vectors: ``(K, P)`` float32, the vectors of the non-silent windows in window order.
        has_file_vector: ``(n,)`` bool; file_vectors: ``(F, P)`` float32 for those files, in order.
    """

    path: Strings
    root: Strings
    size: np.ndarray
    mtime: np.ndarray
    content_hash: Strings
    duration_s: np.ndarray
    sample_rate: np.ndarray
    channels: np.ndarray
    format: Strings
    n_samples: np.ndarray
    status: Strings
    label: Strings
    offsets: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    rms_db: np.ndarray
    silent: np.ndarray
    n_frames: np.ndarray
    vectors: np.ndarray
    has_file_vector: np.ndarray
    file_vectors: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def widths(self) -> np.ndarray:
        """``(n,)`` int64 windows per file."""
        return np.diff(self.offsets)


def batch_of_rows(rows: Sequence[Any], dim: int) -> FileBatch:
    """The rows (:class:`~retrieval.store.db.FileRow`; not imported: db imports this module) of local ingest as one :class:`FileBatch` (vectors of silent windows dropped)."""
    widths = np.array([len(r.starts) for r in rows], np.int64)
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(widths, out=offsets[1:])
    cat = np.concatenate
    silent = cat([np.asarray(r.silent, bool) for r in rows]) if rows else np.zeros(0, bool)
    loud = [np.asarray(r.window_vectors, np.float32).reshape(len(r.starts), dim)[~np.asarray(r.silent, bool)]
            for r in rows]
    pooled = [r for r in rows if r.file_vector is not None]
    return FileBatch(
        path=[r.path for r in rows], root=[r.root for r in rows], size=np.array([r.size for r in rows], np.int64),
        mtime=np.array([r.mtime for r in rows], np.float64), content_hash=[r.content_hash for r in rows],
        duration_s=np.array([r.duration_s for r in rows], np.float64),
        sample_rate=np.array([r.sample_rate for r in rows], np.int64),
        channels=np.array([r.channels for r in rows], np.int64), format=[r.format for r in rows],
        n_samples=np.array([r.n_samples for r in rows], np.int64), status=[r.status for r in rows],
        label=[r.label for r in rows], offsets=offsets,
        starts=cat([np.asarray(r.starts, np.int64) for r in rows]) if rows else np.zeros(0, np.int64),
        ends=cat([np.asarray(r.ends, np.int64) for r in rows]) if rows else np.zeros(0, np.int64),
        rms_db=cat([np.asarray(r.rms_db, np.float32) for r in rows]) if rows else np.zeros(0, np.float32),
        silent=silent,
        n_frames=cat([np.asarray(r.n_frames, np.int64) for r in rows]) if rows else np.zeros(0, np.int64),
        vectors=cat(loud) if rows else np.zeros((0, dim), np.float32),
        has_file_vector=np.array([r.file_vector is not None for r in rows], bool),
        file_vectors=(np.stack([np.asarray(r.file_vector, np.float32).reshape(dim) for r in pooled]) if pooled
                      else np.zeros((0, dim), np.float32)),
    )


def per_file(values: np.ndarray, offsets: np.ndarray, how: str) -> np.ndarray:
    """``(n,)`` max or sum of ``(W,)`` window ``values`` over each file's rows (``how``: ``max`` or ``sum``).

    An empty file gets ``-inf`` (max) or 0 (sum).
    """
    ufunc, pad = (np.maximum, -np.inf) if how == "max" else (np.add, 0)
    n = len(offsets) - 1
    if n == 0:
        return np.zeros(0, values.dtype)
    padded = np.concatenate([values, np.array([pad], values.dtype)])  # reduceat needs every start < len
    out = ufunc.reduceat(padded, offsets[:-1])
    out[offsets[:-1] == offsets[1:]] = pad  # reduceat gives an empty span its first value
    return out
