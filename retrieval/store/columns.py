"""Arrow columns built straight from numpy buffers, for bulk inserts into DuckDB.

``pyarrow.array`` and ``pyarrow.table`` probe every input for a pandas object, and the
probe imports pandas: 1.5 s of CPU on the first ingest commit of a cold ``retrieve index``
that never needs pandas. The builders here wrap numpy buffers with
``pyarrow.Array.from_buffers`` instead, which probes nothing, and copy nothing for
numeric columns that are already contiguous in the right dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa


def numeric(values: np.ndarray, dtype: str) -> pa.Array:
    """A non-null Arrow column of ``values`` cast to ``dtype`` (``int64``, ``float32``, ...)."""
    arr = np.ascontiguousarray(values, dtype=np.dtype(dtype))
    return pa.Array.from_buffers(pa.from_numpy_dtype(arr.dtype), len(arr), [None, pa.py_buffer(arr)])


def booleans(values: np.ndarray) -> pa.Array:
    """A non-null Arrow boolean column of ``values``."""
    arr = np.asarray(values, dtype=bool)
    return pa.Array.from_buffers(pa.bool_(), len(arr), [None, _bits(arr)])


def strings(values: Sequence[str | None] | pa.Array | pa.ChunkedArray) -> pa.Array:
    """An Arrow UTF-8 column; None becomes NULL. An Arrow string column is passed through as is."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    encoded = [b"" if v is None else v.encode() for v in values]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    nulls = np.fromiter((v is None for v in values), bool, len(values))
    validity = _bits(~nulls) if nulls.any() else None
    return pa.Array.from_buffers(pa.large_string(), len(encoded),
                                 [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])


def choice(pick_first: np.ndarray, first: str, second: str) -> pa.Array:
    """A UTF-8 column holding ``first`` where ``pick_first`` is True and ``second`` elsewhere, built
    from numpy (no Python string per row)."""
    mask = np.asarray(pick_first, bool)
    a, b = first.encode(), second.encode()
    lengths = np.where(mask, len(a), len(b)).astype(np.int64)
    offsets = np.zeros(len(mask) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = np.empty(int(offsets[-1]), np.uint8)
    for word, rows in ((a, mask), (b, ~mask)):
        where = offsets[:-1][rows]
        for k, byte in enumerate(word):
            data[where + k] = byte
    return pa.Array.from_buffers(pa.large_string(), len(mask), [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def vectors(values: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """``(n, dim)`` float32 rows as an Arrow ``fixed_size_list<float, dim>``; rows where ``null`` is True are NULL."""
    n, dim = values.shape
    flat = numeric(values.reshape(-1), "float32")
    validity = _bits(~null) if null is not None and null.any() else None
    return pa.Array.from_buffers(pa.list_(pa.float32(), dim), n, [validity], children=[flat])


def vector_blobs(values: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """``(n, dim)`` float32 rows as an Arrow ``large_binary`` column of ``dim * 4`` little-endian bytes
    each (the ``windows.vector`` BLOB); rows where ``null`` is True are NULL (no bytes)."""
    n, dim = values.shape
    keep = np.ones(n, bool) if null is None else ~np.asarray(null, bool)
    data = np.ascontiguousarray(values if keep.all() else values[keep], dtype="<f4")
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(keep * (dim * 4), out=offsets[1:])
    validity = None if keep.all() else _bits(keep)
    return pa.Array.from_buffers(pa.large_binary(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(data)])


def blob_rows(column: pa.Array | pa.ChunkedArray, dim: int) -> np.ndarray:
    """``(n, dim)`` float32 from a BLOB column of ``dim * 4`` little-endian bytes per row, without NULLs
    (a view of the data buffer for each chunk; chunks are copied once into one array).

    Raises:
        ValueError: a NULL, or a row that is not ``dim * 4`` bytes long.
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    width = dim * 4
    parts = []
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        if chunk.null_count:
            raise ValueError(f"vector column holds {chunk.null_count} NULLs")
        wide = pa.types.is_large_binary(chunk.type)
        offsets = np.frombuffer(chunk.buffers()[1], np.int64 if wide else np.int32, len(chunk) + 1, chunk.offset
                                * (8 if wide else 4))
        if not (np.diff(offsets) == width).all():
            raise ValueError(f"vector column rows are not {width} bytes ({dim} float32) long")
        parts.append(np.frombuffer(chunk.buffers()[2], "<f4", len(chunk) * dim, int(offsets[0])).reshape(-1, dim))
    if not parts:
        return np.zeros((0, dim), np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def table(columns: dict[str, pa.Array]) -> pa.Table:
    """A table of named columns (no pandas probe)."""
    return pa.Table.from_arrays(list(columns.values()), names=list(columns))


def _bits(mask: np.ndarray) -> pa.Buffer:
    return pa.py_buffer(np.packbits(mask, bitorder="little"))


def to_numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A primitive Arrow column without NULLs as a numpy array (a view of its buffer where it can be).

    ``pyarrow.Array.to_numpy`` imports pandas (see the module docstring); this reads the
    data buffer directly.

    Raises:
        ValueError: the column holds NULLs or is not of a fixed-width numeric type.
    """
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if arr.null_count:
        raise ValueError(f"column of {arr.type} holds {arr.null_count} NULLs")
    dtype = np.dtype(arr.type.to_pandas_dtype()) if pa.types.is_floating(arr.type) or pa.types.is_integer(
        arr.type) else None
    if dtype is None:
        raise ValueError(f"not a numeric column: {arr.type}")
    data = arr.buffers()[1]
    if data is None or len(arr) == 0:
        return np.zeros(0, dtype)
    return np.frombuffer(data, dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize)
