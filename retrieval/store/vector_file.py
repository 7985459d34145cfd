"""A memory-mapped float32 copy of one level's search vectors: what the adaptation loop reads.

Training a head, scoring every window and suggesting the next labels need every search
vector (post-processed, unit length). Reading them from DuckDB and applying the fitted
post-processing costs 5-15 s at 1M x 160 on two cores (and minutes under load); mapping
this file costs a checksum pass. Like the FAISS files it is derived data, rebuilt from
DuckDB whenever it is missing, damaged or stale, so deleting it loses nothing.

Files in the index folder (``<level>`` is ``window`` or ``file``)::

    <level>s.search.<tag>.npy      (n, D) float32 search vectors, rows in id order
    <level>s.search.<tag>.ids.npy  (n,) int64 ids, sorted
    <level>s.search.json           the commit point: DuckDB generation, post-processing fit
                                   digest, shape, both file names and their xxh3-128 checksums

Each ``.npy`` is written under a fresh tag to a temporary name and moved into place with
``os.replace``; the JSON goes last, also through ``os.replace``, and older tags are removed
after it. A kill at any point leaves either the old copy (still named by the JSON) or
unnamed files that the next save or :func:`remove_leftovers` deletes.

The copy is current when its generation and fit digest equal the store's. A copy of an
older generation under the same fit is patched (ids DuckDB no longer holds dropped, new
rows read by id and post-processed) rather than rebuilt, the way
:meth:`~retrieval.store.store.Store.sync_vectors` updates FAISS in place. Only a writer of
the live database saves a copy; readers use a current one or compute in memory.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.options import Level
from retrieval.store.vectors import _member, _save_npy, _write_atomic, file_checksum

#: Raw vectors post-processed at a time when a copy is built: ``(chunk, D)`` float32.
APPLY_CHUNK = 131_072


@dataclass(frozen=True)
class SearchVectors:
    """A loaded copy: ``ids (n,) int64`` sorted, ``vectors (n, D) float32`` (memory-mapped)."""

    generation: str
    fit: str
    ids: np.ndarray
    vectors: np.ndarray


def meta_path(folder: Path, level: Level) -> Path:
    return Path(folder) / f"{level}s.search.json"


def exists(folder: Path, level: Level) -> bool:
    """True when ``folder`` holds a copy of ``level`` (current or not)."""
    return meta_path(folder, level).is_file()


def load(folder: Path, level: Level, fit: str) -> SearchVectors | None:
    """The copy of ``level`` made under post-processing fit ``fit``, of any generation; None when
    there is none, it was made under another fit, or a file is missing, damaged or mis-shaped."""
    try:
        meta = json.loads(meta_path(folder, level).read_text())
        if not isinstance(meta, dict) or meta.get("fit") != fit:
            return None
        vec_file, ids_file = Path(folder) / str(meta["vectors"]), Path(folder) / str(meta["ids"])
        if file_checksum(ids_file) != meta["ids_checksum"] or file_checksum(vec_file) != meta["vectors_checksum"]:
            return None
        ids = np.load(ids_file)
        vectors = np.load(vec_file, mmap_mode="r")
        if (ids.dtype != np.int64 or vectors.dtype != np.float32 or vectors.ndim != 2
                or vectors.shape != (ids.size, int(meta["dim"]))):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return SearchVectors(str(meta["generation"]), fit, ids, vectors)


def save(folder: Path, level: Level, generation: str, fit: str, ids: np.ndarray, vectors: np.ndarray) -> None:
    """Write a copy atomically (see the module docstring); ``ids`` sorted ``(n,)`` int64,
    ``vectors`` ``(n, D)`` float32 in the same order."""
    folder = Path(folder)
    stem = f"{level}s.search.{uuid.uuid4().hex[:8]}"
    vec_file, ids_file = folder / f"{stem}.npy", folder / f"{stem}.ids.npy"
    _write_atomic(ids_file, lambda tmp: _save_npy(tmp, np.ascontiguousarray(ids, np.int64)))
    _write_atomic(vec_file, lambda tmp: _save_npy(tmp, np.ascontiguousarray(vectors, np.float32)))
    meta = {"generation": str(generation), "fit": fit, "n": int(len(ids)), "dim": int(vectors.shape[1]),
            "vectors": vec_file.name, "ids": ids_file.name,
            "vectors_checksum": file_checksum(vec_file), "ids_checksum": file_checksum(ids_file)}
    path = meta_path(folder, level)
    _write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(meta)))
    remove_leftovers(folder, level)


def remove_leftovers(folder: Path, level: Level) -> None:
    """Delete temp files and copies of ``level`` that its JSON does not name."""
    folder = Path(folder)
    try:
        meta = json.loads(meta_path(folder, level).read_text())
        keep = {meta.get("vectors"), meta.get("ids")} if isinstance(meta, dict) else set()
    except (OSError, ValueError):
        keep = set()
    for f in folder.glob(f"{level}s.search.*"):
        if f.name != meta_path(folder, level).name and f.name not in keep:
            f.unlink(missing_ok=True)


def search_vectors(store: Any, level: Level = "window") -> tuple[np.ndarray, np.ndarray]:
    """``(ids (n,) int64 sorted, search vectors (n, D) float32)`` of every row with a vector at ``level``
    of ``store`` (a :class:`~retrieval.store.store.Store`; not imported here, which would be a cycle).

    From the copy in the index folder when it is current; patched from it when only the
    generation moved; else read from DuckDB and post-processed. A writer of the live
    database saves what it computed, so the next open maps it.
    """
    generation = store.db.get("generation") or "0"
    fit = store.fit_digest()
    old = load(store.root, level, fit)
    if old is not None and old.generation == generation:
        return old.ids, old.vectors
    dim = store.require_recipe().dim
    if old is not None:
        now = store.db.vector_ids(level)
        keep = _member(old.ids, now)
        new_ids, raw = store.db.vectors_by_id(level, np.setdiff1d(now, old.ids, assume_unique=True), dim)
        ids = np.concatenate([old.ids[keep], new_ids])
        vectors = np.concatenate([np.asarray(old.vectors[keep]), _apply(store, raw)])
        if ids.size > 1 and not (np.diff(ids) > 0).all():
            order = np.argsort(ids, kind="stable")
            ids, vectors = ids[order], vectors[order]
    else:
        ids, raw = store.db.vectors(level, dim)
        vectors = _apply(store, raw)
        del raw
    if store.writable and store.lease is None:
        save(store.root, level, generation, fit, ids, vectors)
    return ids, vectors


def _apply(store: Any, raw: np.ndarray) -> np.ndarray:
    """The fitted post-processing over ``(n, D)`` raw vectors, a chunk at a time (bounded temporaries)."""
    out = np.empty((len(raw), store.search_dim), np.float32)
    for a in range(0, len(raw), APPLY_CHUNK):
        out[a:a + APPLY_CHUNK] = store.postprocess.apply(raw[a:a + APPLY_CHUNK])
    return out
