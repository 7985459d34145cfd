"""Commit a Parquet shard's files into the index in one transaction, in bulk.

The Ray driver's side of ingest (:mod:`retrieval.ray_ingest`): a shard (:mod:`retrieval.shards`)
arrives as an Arrow table, one row per file with its windows and vectors in list columns,
and goes into DuckDB as two Arrow inserts (:meth:`MetadataDB.insert_batch`). Windows and
vectors are never touched one by one: the per-file work is a few scalar checks, which decide
exactly what local ingest's commit (:func:`retrieval.ingest.commit_jobs`) decides for the same
file, with the same words:

* a decode error, the first failed window, or no audio samples: an ``errors`` row, not indexed;
* fewer frames than the header declares: an error below the minimum, a warning above it;
* NaN/Inf samples replaced, or every window silent: a warning, the file is indexed;
* a changed file's old rows are deleted and every file's earlier error rows cleared, in the
  same transaction as the insert, so a kill before the commit leaves the index as it was and a
  re-run embeds (or merges from the shard) again, and a kill after it leaves nothing to redo.

Ids come out as local ingest allots them for the same files in the same order, so an index
built on Ray holds the same ids.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from retrieval.audio.decode import AudioInfo, DecodeReport, truncation
from retrieval.labels import folder_label
from retrieval.store import ErrorRow
from retrieval.store.batch import FileBatch, per_file

if TYPE_CHECKING:
    from retrieval.ingest import IngestSummary
    from retrieval.recipe import Recipe
    from retrieval.store import Store

#: ``old_ids`` entry of a file that is new to the index.
NEW = -1


def list_column(table: pa.Table, name: str, dtype: type) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A list column as ``(values, offsets (n+1,), valid (n,))``: row ``i`` is ``values[offsets[i]:offsets[i+1]]``."""
    col = table.column(name).combine_chunks()
    if len(col) == 0:
        return np.zeros(0, dtype), np.zeros(1, np.int64), np.zeros(0, bool)
    offsets = col.offsets.to_numpy().astype(np.int64)
    values = col.values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    values = values[offsets[0]:offsets[-1]]
    valid = np.ones(len(col), bool) if col.null_count == 0 else col.is_valid().to_numpy(zero_copy_only=False)
    return values, offsets - offsets[0], valid


def commit_shard(store: Store, recipe: Recipe, table: pa.Table, old_ids: np.ndarray, summary: IngestSummary,
                 warn: Callable[[str], None]) -> None:
    """Commit every file of a shard table in one transaction, as local ingest commits the same files.

    Args:
        table: rows in the shard schema (:data:`retrieval.shards.SCHEMA`), in plan order.
        old_ids: ``(n,)`` int64, the file id each row replaces (a changed file), or :data:`NEW`.
    """
    n = table.num_rows
    dim = recipe.dim
    old_ids = np.asarray(old_ids, np.int64)
    if len(old_ids) != n:
        raise ValueError(f"{len(old_ids)} old ids for a shard of {n} files")
    cols = {name: table.column(name).to_pylist() for name in (
        "root", "path", "size", "mtime", "error", "sample_rate", "channels", "frames", "format", "declared_frames",
        "nonfinite", "out_samples", "in_frames")}
    _, win_offsets, _ = list_column(table, "starts", np.int64)
    silent_w, _, _ = list_column(table, "silent", bool)
    levels_w, _, _ = list_column(table, "levels", np.float64)
    window_failed = _first_window_errors(table)
    loud = np.diff(win_offsets) - per_file(silent_w.astype(np.int64), win_offsets, "sum")
    loudest = per_file(levels_w, win_offsets, "max")

    errors: list[ErrorRow] = []
    keep = np.zeros(n, bool)
    status: list[str] = []
    labels: list[str | None] = []
    for i in range(n):
        root, rel, size, mtime = cols["root"][i], cols["path"][i], cols["size"][i], cols["mtime"][i]
        error = cols["error"][i]
        if error is None and i in window_failed:
            error = window_failed[i]
        if error is None and cols["out_samples"][i] == 0:
            error = "holds no audio samples"
        cut = None
        if error is None and cols["declared_frames"][i] and cols["in_frames"][i] < cols["declared_frames"][i]:
            cut = truncation(AudioInfo(cols["sample_rate"][i], cols["channels"][i], cols["frames"][i],
                                       cols["format"][i], cols["declared_frames"][i]),
                             DecodeReport(cols["nonfinite"][i], cols["out_samples"][i], cols["in_frames"][i]))
            if cut is not None and cut[0] == "error":
                error = cut[1]
        if error is not None:
            errors.append(ErrorRow(rel, "error", "decode", error, size, mtime, root))
            summary.files_failed += 1
            warn(f"skipped {rel}: {error}")
            continue
        keep[i] = True
        silent = bool(loud[i] == 0)
        status.append("silent" if silent else "ok")
        labels.append(folder_label(rel))
        if cut is not None:
            errors.append(ErrorRow(rel, "warning", "decode", cut[1], size, mtime, root))
            warn(f"{rel}: {cut[1]}")
        if cols["nonfinite"][i]:
            reason = f"{cols['nonfinite'][i]} NaN/Inf samples replaced by 0"
            errors.append(ErrorRow(rel, "warning", "decode", reason, size, mtime, root))
            warn(f"{rel}: {reason}")
        if silent:
            reason = f"silent throughout (loudest window {loudest[i]:.1f} dBFS < {recipe.silence_db} dBFS)"
            errors.append(ErrorRow(rel, "warning", "level", reason, size, mtime, root))
            warn(f"{rel}: {reason}")
            summary.files_silent += 1
        else:
            summary.files_indexed += 1
        summary.audio_seconds += cols["out_samples"][i] / recipe.sample_rate
    summary.warnings += sum(e.severity == "warning" for e in errors)
    batch = _batch(table.filter(pa.array(keep)), status, labels, dim)
    db = store.db
    with db.transaction():
        db.delete_files(old_ids[old_ids != NEW].tolist())
        by_root: dict[str, list[str]] = {}
        for root, rel in zip(cols["root"], cols["path"]):
            by_root.setdefault(root, []).append(rel)
        for root, paths in by_root.items():
            db.clear_errors(paths, root)
        _, n_vectors = db.insert_batch(batch, dim)
        db.add_errors(errors)
        db.bump_generation()
    summary.windows += n_vectors - int(batch.has_file_vector.sum())


def _first_window_errors(table: pa.Table) -> dict[int, str]:
    """Row -> the first failed window's error, for the rows that have one."""
    col = table.column("window_errors").combine_chunks()
    values = col.values
    if values.null_count == len(values):
        return {}
    offsets = col.offsets.to_numpy().astype(np.int64)
    failed = values.is_valid().to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]]
    rows = np.flatnonzero(per_file(failed.astype(np.int64), offsets - offsets[0], "sum") > 0)
    return {int(i): next(e for e in col[int(i)].as_py() if e is not None) for i in rows}


def _batch(kept: pa.Table, status: list[str], labels: list[str | None], dim: int) -> FileBatch:
    """The indexed rows of a shard as a :class:`FileBatch` (window columns flattened, not copied per row)."""
    starts, offsets, _ = list_column(kept, "starts", np.int64)
    ends, _, _ = list_column(kept, "ends", np.int64)
    levels, _, _ = list_column(kept, "levels", np.float64)
    silent, _, _ = list_column(kept, "silent", bool)
    counts, _, _ = list_column(kept, "counts", np.int64)
    vectors, _, _ = list_column(kept, "vectors", np.float32)
    file_vectors, _, has_file_vector = list_column(kept, "file_vector", np.float32)
    n_frames = np.zeros(len(starts), np.int64)
    n_frames[~silent] = counts
    frames = kept.column("frames").to_numpy(zero_copy_only=False).astype(np.float64)
    rate = kept.column("sample_rate").to_numpy(zero_copy_only=False).astype(np.int64)
    return FileBatch(
        path=kept.column("path").combine_chunks(), root=kept.column("root").combine_chunks(),
        size=kept.column("size").to_numpy(), mtime=kept.column("mtime").to_numpy(),
        content_hash=kept.column("content_hash").combine_chunks(),
        duration_s=np.divide(frames, rate, out=np.zeros(len(rate)), where=rate != 0),
        sample_rate=rate, channels=kept.column("channels").to_numpy(zero_copy_only=False).astype(np.int64),
        format=kept.column("format").combine_chunks(),
        n_samples=kept.column("out_samples").to_numpy(zero_copy_only=False).astype(np.int64),
        status=status, label=labels, offsets=offsets, starts=starts, ends=ends,
        rms_db=levels.astype(np.float32), silent=silent, n_frames=n_frames,
        vectors=vectors.reshape(-1, dim), has_file_vector=has_file_vector,
        file_vectors=file_vectors.reshape(-1, dim),
    )
