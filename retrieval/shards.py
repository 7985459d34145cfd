"""Parquet shards of embedded files: what a distributed run hands the driver to merge.

A shard is one Parquet file, ``<index>/shards/part-XXXXX.parquet``, with one row per
file: its identity (corpus root and path relative to it, size, mtime, content hash), the
recipe hash it was embedded with, its header and decode facts, and its windows (bounds in
samples, RMS level in dBFS, silence flags, frame counts) and vectors. A file that failed to
decode has a row too, with ``error`` set, so it becomes an ``errors`` row on merge.

Durability: a shard is written to ``part-XXXXX.parquet.tmp`` and renamed (``os.replace``)
once complete, so a file named ``part-*.parquet`` is always whole. A driver killed mid-run
leaves complete shards that a re-run merges instead of embedding their files again
(:func:`read_shard`), and maybe a ``.tmp`` that :func:`remove_partial` deletes.

Columns (``n`` files, ``w`` windows of a file, ``k`` of them not silent, ``P`` the vector dim):
    recipe_hash, root, path, content_hash, error, format: string
    size, sample_rate, channels, frames, declared_frames, nonfinite, out_samples, in_frames: int64
    mtime: float64
    starts, ends: list<int64> (w); levels: list<float64> (w, dBFS); silent: list<bool> (w)
    vectors: list<float32> (k * P, row-major), counts: list<int64> (k)
    window_errors: list<string> (k; null entries for windows that embedded)
    file_vector: list<float32> (P) or null
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from retrieval.audio.decode import AudioInfo, DecodeReport
from retrieval.pipeline import DecodedFile

#: The folder of an index that holds shards.
SHARDS_DIR = "shards"
_NAME = re.compile(r"^part-(\d{5,})\.parquet$")


@dataclass
class ShardFile:
    """One embedded (or failed) file, keyed as the index keys files.

    Attributes:
        root: absolute corpus root, as recorded in the index.
        path: path relative to ``root``.
        size, mtime, content_hash: what the driver planned with; a shard row is reused only
            when all three still match the file.
        decoded: the file's windows and vectors (``vectors`` set for its ``k`` non-silent
            windows), or its ``error``.
    """

    root: str
    path: str
    size: int
    mtime: float
    content_hash: str
    decoded: DecodedFile


SCHEMA = pa.schema([
    ("recipe_hash", pa.string()), ("root", pa.string()), ("path", pa.string()), ("size", pa.int64()),
    ("mtime", pa.float64()), ("content_hash", pa.string()), ("error", pa.string()),
    ("format", pa.string()), ("sample_rate", pa.int64()), ("channels", pa.int64()), ("frames", pa.int64()),
    ("declared_frames", pa.int64()), ("nonfinite", pa.int64()), ("out_samples", pa.int64()),
    ("in_frames", pa.int64()), ("starts", pa.list_(pa.int64())), ("ends", pa.list_(pa.int64())),
    ("levels", pa.list_(pa.float64())), ("silent", pa.list_(pa.bool_())), ("vectors", pa.list_(pa.float32())),
    ("counts", pa.list_(pa.int64())), ("window_errors", pa.list_(pa.string())),
    ("file_vector", pa.list_(pa.float32())),
])


def shard_name(number: int) -> str:
    """``part-XXXXX.parquet`` for shard ``number`` (>= 0)."""
    return f"part-{number:05d}.parquet"


def complete_shards(folder: Path) -> list[Path]:
    """The complete shards in ``folder``, in number order; none when it does not exist."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def next_number(folder: Path) -> int:
    """One past the highest shard number in ``folder`` (0 for none)."""
    shards = complete_shards(folder)
    return int(_NAME.match(shards[-1].name).group(1)) + 1 if shards else 0


def remove_partial(folder: Path) -> int:
    """Delete shards a killed writer left half-written (``*.parquet.tmp``); returns how many."""
    if not folder.is_dir():
        return 0
    partial = list(folder.glob("part-*.parquet.tmp"))
    for p in partial:
        p.unlink(missing_ok=True)
    return len(partial)


#: The columns a file's decode and embedding fill (what an actor returns); the rest name the file.
DECODED_COLUMNS = [n for n in SCHEMA.names if n not in ("recipe_hash", "root", "path", "size", "mtime", "content_hash")]


def _list(parts: Sequence[np.ndarray | None], dtype: type, value_type: pa.DataType) -> pa.Array:
    """One Arrow list column from per-row numpy arrays (None: a null row), built from one concatenation."""
    flat = [np.asarray(p, dtype).reshape(-1) for p in parts if p is not None]
    lengths = np.zeros(len(parts), np.int64)
    lengths[[k for k, p in enumerate(parts) if p is not None]] = [len(f) for f in flat]
    offsets = np.zeros(len(parts) + 1, np.int32 if lengths.sum() < 2**31 else np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = pa.array(np.concatenate(flat) if flat else np.zeros(0, dtype), type=value_type)
    mask = pa.array([p is None for p in parts], pa.bool_()) if any(p is None for p in parts) else None
    list_type = pa.list_(value_type) if offsets.dtype == np.int32 else pa.large_list(value_type)
    out = (pa.ListArray if offsets.dtype == np.int32 else pa.LargeListArray).from_arrays(
        pa.array(offsets), values, mask=mask)
    return out if out.type == list_type else out.cast(list_type)


def decoded_table(decoded: Sequence[DecodedFile]) -> pa.Table:
    """The :data:`DECODED_COLUMNS` of embedded (or failed) files, one row each, built column by column.

    Each file's ``vectors`` hold its ``k`` non-silent windows (``(k, P)`` float32); a failed
    file has none.
    """
    infos = [d.info for d in decoded]

    def scalar(values: list, typ: pa.DataType) -> pa.Array:
        return pa.array(values, typ)

    cols = {
        "error": scalar([d.error for d in decoded], pa.string()),
        "format": scalar([i.format if i else None for i in infos], pa.string()),
        "sample_rate": scalar([i.sample_rate if i else None for i in infos], pa.int64()),
        "channels": scalar([i.channels if i else None for i in infos], pa.int64()),
        "frames": scalar([i.frames if i else None for i in infos], pa.int64()),
        "declared_frames": scalar([i.declared_frames if i else None for i in infos], pa.int64()),
        "nonfinite": scalar([d.report.nonfinite for d in decoded], pa.int64()),
        "out_samples": scalar([d.report.out_samples for d in decoded], pa.int64()),
        "in_frames": scalar([d.report.in_frames for d in decoded], pa.int64()),
        "starts": _list([d.starts for d in decoded], np.int64, pa.int64()),
        "ends": _list([d.ends for d in decoded], np.int64, pa.int64()),
        "levels": _list([d.levels for d in decoded], np.float64, pa.float64()),
        "silent": _list([d.silent for d in decoded], bool, pa.bool_()),
        "vectors": _list([d.vectors if d.vectors is not None else np.zeros(0, np.float32) for d in decoded],
                         np.float32, pa.float32()),
        "counts": _list([d.counts if d.counts is not None else np.zeros(0, np.int64) for d in decoded],
                        np.int64, pa.int64()),
        "window_errors": pa.array([d.window_errors for d in decoded], pa.list_(pa.string())),
        "file_vector": _list([d.file_vector for d in decoded], np.float32, pa.float32()),
    }
    return pa.Table.from_arrays([cols[n] for n in DECODED_COLUMNS], schema=pa.schema(
        [SCHEMA.field(n) for n in DECODED_COLUMNS]))


def shard_table(decoded: pa.Table, recipe_hash: str, root: Sequence[str], path: Sequence[str],
                size: Sequence[int], mtime: Sequence[float], content_hash: Sequence[str]) -> pa.Table:
    """A shard: :func:`decoded_table` rows with the identity of each file beside them (``n`` each)."""
    n = decoded.num_rows
    named = {
        "recipe_hash": pa.array([recipe_hash] * n, pa.string()), "root": pa.array(list(root), pa.string()),
        "path": pa.array(list(path), pa.string()), "size": pa.array(np.asarray(size, np.int64)),
        "mtime": pa.array(np.asarray(mtime, np.float64)), "content_hash": pa.array(list(content_hash), pa.string()),
    }
    return pa.Table.from_arrays([named[c] if c in named else decoded.column(c) for c in SCHEMA.names], schema=SCHEMA)


def files_table(files: Sequence[ShardFile], recipe_hash: str) -> pa.Table:
    """A shard of :class:`ShardFile` objects."""
    return shard_table(decoded_table([f.decoded for f in files]), recipe_hash, [f.root for f in files],
                       [f.path for f in files], [f.size for f in files], [f.mtime for f in files],
                       [f.content_hash for f in files])


def write_shard(folder: Path, number: int, table: pa.Table) -> Path:
    """Write a shard ``table`` (:data:`SCHEMA`) as shard ``number`` in ``folder``: to a temporary
    name, fsynced, then renamed.

    Returns:
        The complete shard's path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / shard_name(number)
    tmp = final.with_name(final.name + ".tmp")
    pq.write_table(table.cast(SCHEMA), tmp, compression="none", use_dictionary=False)  # vectors do not compress
    with open(tmp, "rb") as fh:  # the bytes on disk before the name says "complete"
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    return final


def read_table(path: Path) -> pa.Table:
    """A shard as an Arrow table (:data:`SCHEMA`).

    Raises:
        pyarrow.ArrowInvalid / OSError: the file is not a readable shard.
    """
    return pq.read_table(path, schema=SCHEMA)


def _lists(table: pa.Table, name: str, dtype: type) -> list[np.ndarray | None]:
    """A list column as one numpy array per row (None for a null row), without a Python loop per value."""
    col = table.column(name).combine_chunks()
    values = col.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    offsets = col.offsets.to_numpy()
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    return [values[a:b] if ok else None for a, b, ok in zip(offsets[:-1], offsets[1:], valid)]


def read_shard(path: Path, dim: int) -> tuple[list[str], list[ShardFile]]:
    """A shard's files, and the recipe hash each was embedded with.

    Args:
        dim: the recipe's vector dimension ``P``; each row's vectors are reshaped to ``(k, P)``.

    Raises:
        pyarrow.ArrowInvalid / OSError: the file is not a readable shard.
    """
    table = read_table(path)
    scalars = table.drop_columns([n for n in SCHEMA.names if pa.types.is_list(SCHEMA.field(n).type)]).to_pylist()
    starts, ends = _lists(table, "starts", np.int64), _lists(table, "ends", np.int64)
    levels, silents = _lists(table, "levels", np.float64), _lists(table, "silent", bool)
    vectors, counts = _lists(table, "vectors", np.float32), _lists(table, "counts", np.int64)
    file_vectors = _lists(table, "file_vector", np.float32)
    window_errors = table.column("window_errors").to_pylist()
    out: list[ShardFile] = []
    for i, r in enumerate(scalars):
        info = None
        if r["sample_rate"] is not None:
            info = AudioInfo(r["sample_rate"], r["channels"], r["frames"], r["format"], r["declared_frames"])
        silent = silents[i]
        k = int((~silent).sum())
        vecs = vectors[i]
        d = DecodedFile(
            info=info, report=DecodeReport(r["nonfinite"], r["out_samples"], r["in_frames"]),
            starts=starts[i], ends=ends[i], levels=levels[i], silent=silent,
            vectors=vecs.reshape(k, dim) if r["error"] is None else None, counts=counts[i],
            window_errors=window_errors[i], file_vector=file_vectors[i], error=r["error"],
        )
        out.append(ShardFile(r["root"], r["path"], r["size"], r["mtime"], r["content_hash"], d))
    return [r["recipe_hash"] for r in scalars], out
