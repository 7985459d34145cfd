"""FAISS vector indexes, derived from DuckDB and rebuildable from it.

Inner product on L2-normalised vectors (cosine), FAISS ids equal to DuckDB
``segment_id``. Files are written to a temporary name and moved into place with
``os.replace``, with a small JSON sidecar that records the DuckDB generation and the
count the file was built from, so a stale or half-written index is detected on open.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import faiss
import numpy as np

from retrieval.errors import InputError


class VectorIndex:
    """A FAISS ``IndexIDMap2(IndexFlatIP)`` with atomic save and a generation stamp.

    Attributes:
        dim: vector size.
        generation: the DuckDB generation these vectors were built from.
    """

    def __init__(self, dim: int, index: faiss.Index | None = None, generation: str = "0") -> None:
        self.dim = dim
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.generation = generation

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, generation: str) -> VectorIndex:
        """Index ``(n, D)`` unit vectors under ``(n,)`` int64 ids."""
        vi = cls(vectors.shape[1], generation=generation)
        vi.add(ids, vectors)
        return vi

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        if vectors.shape[1] != self.dim:
            raise InputError(f"vectors have dim {vectors.shape[1]}; this index holds dim {self.dim}")
        self.index.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.ascontiguousarray(ids, np.int64))

    def remove(self, ids: np.ndarray) -> int:
        if len(ids) == 0:
            return 0
        return int(self.index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, np.int64))))

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product: ``(scores (q, k) float32, ids (q, k) int64)``, -1 ids past the end.

        Args:
            queries: ``(q, D)`` unit vectors.
            k: neighbours per query; clipped to the index size.
            allowed: optional ids to restrict the search to (a metadata filter).
        """
        q = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        if q.shape[1] != self.dim:
            raise InputError(f"query has dim {q.shape[1]}; this index holds dim {self.dim}")
        k = max(1, min(k, self.ntotal))
        if self.ntotal == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        params = None
        if allowed is not None:
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(np.ascontiguousarray(allowed, np.int64)))
        scores, ids = self.index.search(q, k, params=params)
        return scores, ids

    def save(self, path: Path) -> None:
        """Write atomically: temp file in the same folder, then ``os.replace`` (index, then sidecar)."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            faiss.write_index(self.index, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        _write_json_atomic(sidecar(path), {"generation": self.generation, "ntotal": self.ntotal, "dim": self.dim})

    @classmethod
    def load(cls, path: Path) -> VectorIndex | None:
        """Read an index and its sidecar; None when either is missing or unreadable."""
        path = Path(path)
        try:
            meta = json.loads(sidecar(path).read_text())
            index = faiss.read_index(str(path))
        except (OSError, ValueError, RuntimeError):
            return None
        if int(meta.get("ntotal", -1)) != index.ntotal:
            return None
        return cls(index.d, index, str(meta.get("generation")))


def sidecar(path: Path) -> Path:
    return Path(path).with_suffix(Path(path).suffix + ".json")


def _write_json_atomic(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)
