"""DuckDB metadata: the index's source of truth, vectors included.

Tables (see ``SCHEMA``):
    manifest  key/value: recipe JSON and hash, corpus roots, id counter, generation
    files     one row per audio file: corpus root and the path relative to it (together
              the file's identity), size, mtime, content hash,
              duration, native rate and channels, status, label and metadata columns
    windows   one row per vector: window rows (``level='window'``) and one pooled row
              per file (``level='file'``); start/end in samples at the recipe's rate,
              level in dB, and the raw pooled vector (NULL for silent windows): a BLOB of
              ``dim`` little-endian float32 (``dim * 4`` bytes), stored uncompressed
              (:func:`vector_column_sql`). Indexes made before held it as ``FLOAT[dim]``;
              both forms are read, and rows go into a table in the form it has.
    errors    one row per problem: root, path, severity (``error`` or ``warning``), stage, reason
    transforms  fitted post-processing state, as ``.npz`` bytes

Ids are allocated from the persisted ``next_id`` counter and never reused, so a stale
FAISS file can never map an id onto the wrong vector. The class has no constraints
or indexes: ingest is the single writer and keeps rows unique itself, which keeps
bulk inserts and deletes fast.

Durability: every commit (:meth:`MetadataDB.transaction`) lands in DuckDB's write-ahead log
(``meta.duckdb.wal``); the writer checkpoints it into ``meta.duckdb`` every
:data:`CHECKPOINT_EVERY_COMMITS` commits or once the log passes
:data:`CHECKPOINT_WAL_BYTES`, so a log damaged after a kill costs at most that much:
moved aside, what was checkpointed stays and the next ingest redoes the rest.
DuckDB failures (a damaged file or log, a full disk, a lock held by another process)
become :class:`~retrieval.errors.StoreError` with what happened and how to recover
(:func:`store_error`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np

from retrieval.errors import IndexLockedError, InputError, StoreError
from retrieval.options import SEVERITIES, Severity  # noqa: F401  (re-exported)

if TYPE_CHECKING:  # pyarrow is imported where rows go in or out in bulk: `retrieve info` never needs it
    import pyarrow as pa

    from retrieval.store.batch import FileBatch

#: Store format; 2 since "segment" became "window" (format 1 is migrated on open: :mod:`retrieval.store.migrate`).
SCHEMA_VERSION = 2
#: The writer checkpoints the WAL into the database file after this many commits...
CHECKPOINT_EVERY_COMMITS = 8
#: ... or as soon as the WAL holds more than this.
CHECKPOINT_WAL_BYTES = 4 << 20

#: Columns of ``files`` that ingest owns; metadata columns are added beside them.
FILE_COLUMNS: dict[str, str] = {
    "file_id": "BIGINT", "path": "VARCHAR", "size": "BIGINT", "mtime": "DOUBLE",
    "content_hash": "VARCHAR", "duration_s": "DOUBLE", "sample_rate": "INTEGER", "channels": "INTEGER",
    "format": "VARCHAR", "n_samples": "BIGINT", "status": "VARCHAR", "n_windows": "INTEGER",
    "label": "VARCHAR", "indexed_at": "TIMESTAMP", "root": "VARCHAR",
}
WINDOW_COLUMNS = ("window_id", "file_id", "level", "start_sample", "end_sample", "rms_db", "silent", "n_frames")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def quote_ident(name: str) -> str:
    """Quote a column name for SQL; refuse names that are not plain identifiers."""
    if not _IDENT.match(name):
        raise InputError(f"column name {name!r} is not a plain identifier (letters, digits, underscore)")
    return f'"{name}"'


def arrow_of(rel: duckdb.DuckDBPyRelation) -> pa.Table:
    """A relation as an Arrow table, across duckdb versions."""
    fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
    return fetch()


def pandas_of(table: pa.Table) -> Any:
    """An Arrow table as a pandas DataFrame; integer columns holding NULLs stay integer.

    pandas turns such a column into float64 (``164064.0``); here it becomes the nullable
    ``Int64`` dtype (NULL = ``pd.NA``) instead. Other columns convert as pandas does.
    """
    import pandas as pd
    import pyarrow as pa

    df = table.to_pandas()
    for name, col in zip(table.column_names, table.columns):
        if pa.types.is_integer(col.type) and col.null_count:
            df[name] = pd.array(col.to_pylist(), dtype="Int64")
    return df


def vector_column_sql(dim: int) -> str:
    """The SQL type of ``windows.vector`` in a new index: a BLOB of ``dim`` little-endian float32.

    Not ``FLOAT[dim]``: at a checkpoint DuckDB analyses and compresses each of the ``dim``
    floats of a nested array with its floating-point codecs, which pooled embeddings do not reward; with
    the BLOB stored uncompressed a checkpoint is a copy. ``dim`` fixes the row length only.
    """
    return "BLOB USING COMPRESSION uncompressed"


def vectors_of(table: pa.Table, column: str, dim: int) -> np.ndarray:
    """``(n, dim)`` float32 from a vector Arrow column without NULLs: ``FLOAT[dim]`` (indexes made
    before the BLOB form) or BLOB (``dim * 4`` little-endian bytes per row)."""
    chunked = table.column(column)
    if is_blob_type(chunked.type):
        from retrieval.store.columns import blob_rows

        return blob_rows(chunked, dim)
    col = chunked.combine_chunks()
    if len(col) == 0:
        return np.zeros((0, dim), np.float32)
    from retrieval.store.columns import to_numpy

    # the child array, sliced as the list array is: ``flatten`` would import pyarrow.compute (0.1-0.3 s)
    values = to_numpy(col.values.slice(col.offset * dim, len(col) * dim) if not col.null_count else col.flatten())
    return np.ascontiguousarray(values.reshape(len(col), dim), dtype=np.float32)


def is_blob_type(dtype: Any) -> bool:
    """Whether an Arrow type is a BLOB column's (``binary`` or ``large_binary``)."""
    import pyarrow as pa

    return bool(pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype))


def as_float_lists(table: pa.Table, column: str, dim: int) -> pa.Table:
    """``table`` with its BLOB vector ``column`` (no NULLs) turned into ``FLOAT[dim]`` (a view of the
    bytes where there is one chunk); a ``FLOAT[dim]`` column is returned as it is."""
    import pyarrow as pa

    at = table.column_names.index(column)
    if not is_blob_type(table.schema.field(at).type):
        return table
    from retrieval.store.columns import blob_rows

    flat = blob_rows(table.column(at), dim).reshape(-1)
    values = pa.Array.from_buffers(pa.float32(), len(flat), [None, pa.py_buffer(flat)])
    lists = pa.FixedSizeListArray.from_arrays(values, dim)
    return table.set_column(at, pa.field(column, lists.type), lists)


def _ids_of(table: pa.Table) -> np.ndarray:
    """The ``window_id`` column as ``(n,)`` int64."""
    from retrieval.store.columns import to_numpy

    return to_numpy(table.column("window_id")).astype(np.int64)


@dataclass
class FileRow:
    """A file ready to be written, with its vectors.

    Attributes:
        path: relative to the corpus root.
        root: the absolute corpus root ``path`` is relative to.
        starts, ends: ``(w,)`` int64 window bounds in samples at the recipe's rate.
        rms_db: ``(w,)`` float32 window levels.
        silent: ``(w,)`` bool, windows kept out of the vector index.
        n_frames: ``(w,)`` int64 frames behind each window vector.
        window_vectors: ``(w, P)`` float32; rows of silent windows are ignored.
        file_vector: ``(P,)`` float32 or None.
    """

    path: str
    size: int
    mtime: float
    content_hash: str
    duration_s: float
    sample_rate: int
    channels: int
    format: str
    n_samples: int
    status: str
    label: str | None
    starts: np.ndarray
    ends: np.ndarray
    rms_db: np.ndarray
    silent: np.ndarray
    n_frames: np.ndarray
    window_vectors: np.ndarray
    file_vector: np.ndarray | None
    root: str | None = None




@dataclass(frozen=True)
class ErrorRow:
    path: str
    severity: str  # "error" or "warning"
    stage: str
    reason: str
    size: int = -1
    mtime: float = 0.0
    root: str | None = None


class MetadataDB:
    """Typed access to the DuckDB file of one index."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._commits = 0  # since the last checkpoint
        # A read-only connection sees a file no writer can change while it is open (DuckDB's
        # file lock), so what it reads of the manifest and the schema is read once: a search
        # asks for both several times, and each read costs about 0.5 ms.
        self._read_once: dict[tuple[str, str], object] = {}
        self._has_windows = False  # once created, ``windows`` is never dropped
        self._blob_vectors: bool | None = None  # the form of ``windows.vector``, read once
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
            if not read_only:
                self._create()
        except duckdb.Error as exc:
            raise store_error(exc, self.path, writing=not read_only) from exc
        _OPEN.append(self.path)

    def close(self) -> None:
        self.con.close()
        if self.path in _OPEN:
            _OPEN.remove(self.path)

    @property
    def wal_path(self) -> Path:
        return wal_of(self.path)

    # -- schema ----------------------------------------------------------------------------

    def _create(self) -> None:
        cols = ", ".join(f"{k} {v}" for k, v in FILE_COLUMNS.items())
        self.con.execute("CREATE TABLE IF NOT EXISTS manifest (key VARCHAR, value VARCHAR)")
        self.con.execute(f"CREATE TABLE IF NOT EXISTS files ({cols})")
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS errors (path VARCHAR, severity VARCHAR, stage VARCHAR, reason VARCHAR, "
            "size BIGINT, mtime DOUBLE, recorded_at TIMESTAMP DEFAULT current_timestamp, root VARCHAR)"
        )
        self.con.execute("CREATE TABLE IF NOT EXISTS transforms (name VARCHAR, data BLOB)")
        from retrieval.store.migrate import migrate_schema

        migrate_schema(self)
        if self.get("schema_version") is None:
            self.set("schema_version", str(SCHEMA_VERSION))

    def create_windows(self, dim: int) -> None:
        """Create ``windows`` with a BLOB vector column of ``dim`` float32 (once, when the recipe is set;
        an existing table keeps its form, see :func:`vector_column_sql`)."""
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS windows (window_id BIGINT, file_id BIGINT, level VARCHAR, "
            "start_sample BIGINT, end_sample BIGINT, rms_db REAL, silent BOOLEAN, n_frames INTEGER, "
            f"vector {vector_column_sql(dim)})"
        )
        self._blob_vectors = None

    def blob_vectors(self) -> bool:
        """Whether ``windows.vector`` is a BLOB (True) or a ``FLOAT[dim]`` of an older index (False).
        Read once per connection: the column's type never changes."""
        if self._blob_vectors is None:
            rows = self.con.execute("SELECT data_type FROM information_schema.columns "
                                    "WHERE table_name = 'windows' AND column_name = 'vector'").fetchall()
            if not rows:
                return True  # no table yet: the one made will be
            self._blob_vectors = rows[0][0] == "BLOB"
        return self._blob_vectors

    def has_windows(self) -> bool:
        """Whether ``windows`` exists (it is created with the recipe). Asked once per connection
        until it answers yes: counting a level asks it first."""
        if not self._has_windows:
            self._has_windows = self.has_table("windows")
        return self._has_windows

    def has_table(self, name: str) -> bool:
        """Whether the table ``name`` exists (one catalogue query)."""
        return bool(self.con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                                     [name]).fetchall()[0][0])

    # -- manifest --------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        if self.read_only and ("get", key) in self._read_once:
            return self._read_once[("get", key)]  # type: ignore[return-value]
        rows = self.con.execute("SELECT value FROM manifest WHERE key = ?", [key]).fetchall()
        value = rows[0][0] if rows else None
        if self.read_only:
            self._read_once[("get", key)] = value
        return value

    def set(self, key: str, value: str) -> None:
        self.con.execute("DELETE FROM manifest WHERE key = ?", [key])
        self.con.execute("INSERT INTO manifest VALUES (?, ?)", [key, value])

    def allocate_ids(self, n: int) -> int:
        """Reserve ``n`` ids; returns the first. Call inside the transaction that uses them."""
        return self.add_to_counter("next_id", n) - n

    def add_to_counter(self, key: str, n: int) -> int:
        """Add ``n`` to the integer manifest entry ``key`` (absent: 0) and return the new value.

        One statement where the entry exists (ingest does this twice per commit), not a read,
        a delete and an insert.
        """
        rows = self.con.execute("UPDATE manifest SET value = CAST(CAST(value AS BIGINT) + ? AS VARCHAR) "
                                "WHERE key = ? RETURNING value", [n, key]).fetchall()
        if rows:
            return int(rows[0][0])
        self.set(key, str(n))
        return n

    def state_key(self) -> str:
        """A digest of the committed state readers see: every manifest entry (generation,
        metadata version, recipe, fit, FAISS builds) and the row counts of ``files`` and
        ``errors``. Snapshots record it, so a writer knows whether the last one is current."""
        row = self.con.execute(
            "SELECT (SELECT string_agg(key || '=' || value, chr(10) ORDER BY key) FROM manifest), "
            "(SELECT count(*) FROM files), (SELECT count(*) FROM errors), "
            "(SELECT max(recorded_at)::VARCHAR FROM errors)").fetchall()[0]
        return hashlib.blake2b(repr(row).encode(), digest_size=12).hexdigest()

    def bump_generation(self) -> str:
        """Mark the vectors as changed; FAISS files carry the generation they were built from."""
        return str(self.add_to_counter("generation", 1))

    def bump_metadata_version(self) -> None:
        """Mark the ``files`` rows or columns as changed (hit tables and lookups keyed on it are stale)."""
        self.add_to_counter("metadata_version", 1)

    # -- corpus roots ----------------------------------------------------------------------

    def roots(self) -> list[str]:
        """The absolute corpus roots of the index, in the order they were added."""
        text = self.get("corpus_roots")
        return list(json.loads(text)) if text else []

    def set_roots(self, roots: Sequence[str]) -> None:
        """Record the corpus roots; ``corpus_root`` names the first (what ``retrieve info`` and
        the server show as the corpus)."""
        self.set("corpus_roots", json.dumps(list(roots)))
        if roots:
            self.set("corpus_root", roots[0])

    def file_locations(self, where_sql: str = "TRUE") -> list[tuple[str, str]]:
        """``(root, relative path)`` of the files passing ``where_sql``, by root then path."""
        return [(r[0], r[1]) for r in self.con.execute(
            f"SELECT root, path FROM files WHERE {where_sql} ORDER BY root, path").fetchall()]

    # -- files -----------------------------------------------------------------------------

    def known_files(self) -> dict[tuple[str, str], tuple[int, int, float, str]]:
        """``(root, path) -> (file_id, size, mtime, content_hash)`` for every indexed file."""
        rows = self.con.execute("SELECT root, path, file_id, size, mtime, content_hash FROM files").fetchall()
        return {(r[0], r[1]): (r[2], r[3], r[4], r[5]) for r in rows}

    def insert_files(self, rows: Sequence[FileRow], dim: int) -> tuple[int, int]:
        """Insert files and their vectors; returns ``(files, window vectors)`` written."""
        if not rows:
            return 0, 0
        from retrieval.store.batch import batch_of_rows

        return self.insert_batch(batch_of_rows(rows, dim), dim)

    def insert_batch(self, batch: FileBatch, dim: int) -> tuple[int, int]:
        """Insert ``n`` files and their windows in bulk (two Arrow inserts, no Python loop per row).

        Ids: ``n`` file ids, then the window rows file by file (its windows, then its pooled
        row when it has one), as :meth:`insert_files` always allotted them. Call inside a
        transaction. Returns ``(files, window vectors)`` written.
        """
        n = len(batch)
        if n == 0:
            return 0, 0
        from retrieval.store import columns as col
        from retrieval.store.batch import per_file

        widths = batch.widths
        pooled = np.asarray(batch.has_file_vector, bool)
        first_id = self.allocate_ids(n + int(widths.sum() + pooled.sum()))
        file_ids = np.arange(first_id, first_id + n, dtype=np.int64)
        silent_w = np.asarray(batch.silent, bool)
        loud_per_file = widths - per_file(silent_w.astype(np.int64), batch.offsets, "sum")
        files = col.table({
            "file_id": col.numeric(file_ids, "int64"),
            "path": col.strings(batch.path),
            "size": col.numeric(batch.size, "int64"),
            "mtime": col.numeric(batch.mtime, "float64"),
            "content_hash": col.strings(batch.content_hash),
            "duration_s": col.numeric(batch.duration_s, "float64"),
            "sample_rate": col.numeric(batch.sample_rate, "int32"),
            "channels": col.numeric(batch.channels, "int32"),
            "format": col.strings(batch.format),
            "n_samples": col.numeric(batch.n_samples, "int64"),
            "status": col.strings(batch.status),
            "n_windows": col.numeric(loud_per_file, "int32"),
            "label": col.strings(batch.label),
            "root": col.strings(batch.root),
        })
        # Window rows, file by file: its windows, then its pooled row (when it has one).
        per_row = widths + pooled
        owner = np.repeat(np.arange(n), per_row)
        is_file = np.zeros(len(owner), bool)
        is_file[(np.cumsum(per_row) - 1)[pooled]] = True
        win = np.flatnonzero(~is_file)
        starts, ends = np.zeros(len(owner), np.int64), np.zeros(len(owner), np.int64)
        levels, frames = np.zeros(len(owner), np.float32), np.zeros(len(owner), np.int64)
        silent = np.zeros(len(owner), bool)
        vecs = np.zeros((len(owner), dim), np.float32)
        starts[win] = batch.starts
        ends[win] = batch.ends
        levels[win] = batch.rms_db
        silent[win] = silent_w
        frames[win] = batch.n_frames
        vecs[win[~silent_w]] = np.asarray(batch.vectors, np.float32).reshape(-1, dim)
        if pooled.any():
            rms = np.asarray(batch.rms_db, np.float32)
            ends[is_file] = np.asarray(batch.n_samples, np.int64)[pooled]
            levels[is_file] = per_file(rms, batch.offsets, "max")[pooled]
            frames[is_file] = per_file(np.asarray(batch.n_frames, np.int64), batch.offsets, "sum")[pooled]
            vecs[is_file] = np.asarray(batch.file_vectors, np.float32).reshape(-1, dim)
        windows = col.table({
            "window_id": col.numeric(first_id + n + np.arange(len(owner)), "int64"),
            "file_id": col.numeric(file_ids[owner], "int64"),
            "level": col.choice(is_file, "file", "window"),
            "start_sample": col.numeric(starts, "int64"),
            "end_sample": col.numeric(ends, "int64"),
            "rms_db": col.numeric(levels, "float32"),
            "silent": col.booleans(silent),
            "n_frames": col.numeric(frames, "int32"),
            "vector": (col.vector_blobs if self.blob_vectors() else col.vectors)(vecs, null=silent),
        })
        self.con.register("_files_batch", files)
        names = ", ".join(files.column_names)
        self.con.execute(
            f"INSERT INTO files ({names}, indexed_at) SELECT {names}, current_timestamp FROM _files_batch").fetchall()
        self.con.unregister("_files_batch")
        self.con.register("_windows_batch", windows)
        self.con.execute("INSERT INTO windows SELECT * FROM _windows_batch").fetchall()
        self.con.unregister("_windows_batch")
        return n, int((~silent).sum())

    def delete_files(self, file_ids: Iterable[int]) -> None:
        ids = list(file_ids)
        if not ids:
            return
        self.con.execute("DELETE FROM windows WHERE file_id IN (SELECT unnest(?::BIGINT[]))", [ids])
        self.con.execute("DELETE FROM files WHERE file_id IN (SELECT unnest(?::BIGINT[]))", [ids])

    def update_file_location(self, file_id: int, path: str, size: int, mtime: float, label: str | None,
                             root: str | None = None) -> None:
        self.bump_metadata_version()
        self.con.execute("UPDATE files SET path = ?, size = ?, mtime = ?, label = ?, root = coalesce(?, root) "
                         "WHERE file_id = ?", [path, size, mtime, label, root, file_id])

    def copy_file(self, source_id: int, path: str, size: int, mtime: float, label: str | None,
                  root: str | None = None) -> int:
        """Duplicate a file's row and vectors under a new path (same content); returns windows copied."""
        n = self.con.execute("SELECT count(*) FROM windows WHERE file_id = ?", [source_id]).fetchall()[0][0]
        first = self.allocate_ids(1 + n)
        cols = [c for c in self.file_columns()
                if c not in ("file_id", "path", "size", "mtime", "label", "indexed_at", "root")]
        sel = ", ".join(quote_ident(c) for c in cols)
        self.con.execute(
            f"INSERT INTO files (file_id, path, size, mtime, label, indexed_at, root, {sel}) "
            f"SELECT ?, ?, ?, ?, ?, current_timestamp, coalesce(?, root), {sel} FROM files WHERE file_id = ?",
            [first, path, size, mtime, label, root, source_id])
        self.con.execute(
            "INSERT INTO windows SELECT ? + row_number() OVER (ORDER BY window_id), ?, level, start_sample, "
            "end_sample, rms_db, silent, n_frames, vector FROM windows WHERE file_id = ?",
            [first, first, source_id])
        return int(self.con.execute(
            "SELECT count(*) FROM windows WHERE file_id = ? AND vector IS NOT NULL AND level = 'window'",
            [first]).fetchall()[0][0])

    def files_table(self, *, by_path: bool = False) -> pa.Table:
        """Every column of ``files`` but ``content_hash``, one row per file (by path when ``by_path``)."""
        return arrow_of(self.con.sql("SELECT * EXCLUDE (content_hash) FROM files" + (" ORDER BY path" if by_path else "")))

    def file_counts(self) -> tuple[int, int, float]:
        """``(files, silent files, seconds of audio)``."""
        n, silent, seconds = self.con.execute(
            "SELECT count(*), count(*) FILTER (status = 'silent'), coalesce(sum(duration_s), 0) FROM files").fetchall()[0]
        return int(n), int(silent), float(seconds)

    def silent_windows(self) -> int:
        """How many windows were kept out of the vector index as silent."""
        if not self.has_windows():
            return 0
        return int(self.con.execute("SELECT count(*) FROM windows WHERE silent").fetchall()[0][0])

    def file_columns(self) -> list[str]:
        return [r[0] for r in self.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'files' ORDER BY ordinal_position"
        ).fetchall()]

    def column_types(self) -> dict[str, str]:
        """``name -> SQL type`` of every ``files`` column (what ``--where`` may use)."""
        if self.read_only and ("column_types", "") in self._read_once:
            return dict(self._read_once[("column_types", "")])  # type: ignore[call-overload]
        types = dict(self.con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'files' "
            "ORDER BY ordinal_position").fetchall())
        if self.read_only:
            self._read_once[("column_types", "")] = dict(types)
        return types

    def metadata_columns(self) -> list[str]:
        """Columns beside the built-in ones: ``label`` plus every attached CSV column."""
        return ["label"] + [c for c in self.file_columns() if c not in FILE_COLUMNS]

    def attach_metadata(self, table: pa.Table, key: str = "path") -> int:
        """Set metadata columns from ``table`` (one row per relative ``path``); returns rows matched.

        Columns are added with the Arrow type duckdb infers; existing values are overwritten.
        """
        cols = [c for c in table.column_names if c != key]
        self.con.register("_meta", table)
        try:
            for c in cols:
                if c == "label":
                    continue
                if c in FILE_COLUMNS:
                    raise InputError(f"metadata column {c!r} clashes with a built-in column; rename it in the CSV")
                typ = self.con.execute(
                    f"SELECT typeof({quote_ident(c)}) FROM _meta WHERE {quote_ident(c)} IS NOT NULL LIMIT 1").fetchall()
                sql_type = typ[0][0] if typ and typ[0][0] != "NULL" else "VARCHAR"
                self.con.execute(f"ALTER TABLE files ADD COLUMN IF NOT EXISTS {quote_ident(c)} {sql_type}").fetchall()
            if not cols:
                return 0
            self.bump_metadata_version()
            sets = ", ".join(f"{quote_ident(c)} = _meta.{quote_ident(c)}" for c in cols)
            self.con.execute(f"UPDATE files SET {sets} FROM _meta WHERE files.path = _meta.{quote_ident(key)}").fetchall()
            return int(self.con.execute(
                f"SELECT count(*) FROM files JOIN _meta ON files.path = _meta.{quote_ident(key)}").fetchall()[0][0])
        finally:
            self.con.unregister("_meta")

    # -- errors ----------------------------------------------------------------------------

    def clear_errors(self, paths: Iterable[str], root: str | None = None) -> None:
        """Delete the rows of ``paths`` (under ``root`` only, when given), except discovery's
        (see :meth:`clear_discovery_errors`)."""
        paths = list(paths)
        if paths:
            self.con.execute("DELETE FROM errors WHERE stage <> 'discover' AND path IN (SELECT unnest(?::VARCHAR[])) "
                             "AND (?::VARCHAR IS NULL OR root = ?)", [paths, root, root])

    def clear_discovery_errors(self, roots: Sequence[str]) -> None:
        """Delete the rows discovery recorded under ``roots``; each run walks those roots in full
        and records them again."""
        if roots:
            self.con.execute("DELETE FROM errors WHERE stage = 'discover' "
                             "AND root IN (SELECT unnest(?::VARCHAR[]))", [list(roots)])

    def error_paths(self, root: str) -> set[str]:
        """Paths under ``root`` that have error or warning rows."""
        return {r[0] for r in self.con.execute("SELECT DISTINCT path FROM errors WHERE root = ?", [root]).fetchall()}

    def errors_table(self) -> pa.Table:
        """Every row of ``errors``, by path then time recorded."""
        return arrow_of(self.con.sql("SELECT * FROM errors ORDER BY path, recorded_at"))

    def error_counts(self) -> tuple[int, int]:
        """``(errors, warnings)``: rows of ``errors`` by severity."""
        errors, warnings = self.con.execute(
            "SELECT count(*) FILTER (severity = 'error'), count(*) FILTER (severity = 'warning') FROM errors"
        ).fetchall()[0]
        return int(errors), int(warnings)

    def add_errors(self, rows: Sequence[ErrorRow]) -> None:
        """Insert error rows, in order, in one statement (``recorded_at`` is the transaction's time)."""
        if not rows:
            return
        from retrieval.store import columns as col

        batch = col.table({
            "path": col.strings([r.path for r in rows]), "severity": col.strings([r.severity for r in rows]),
            "stage": col.strings([r.stage for r in rows]), "reason": col.strings([r.reason for r in rows]),
            "size": col.numeric(np.array([r.size for r in rows]), "int64"),
            "mtime": col.numeric(np.array([r.mtime for r in rows], np.float64), "float64"),
            "root": col.strings([r.root for r in rows]),
        })
        self.con.register("_errors_batch", batch)
        try:
            self.con.execute("INSERT INTO errors (path, severity, stage, reason, size, mtime, root) "
                             "SELECT path, severity, stage, reason, size, mtime, root FROM _errors_batch").fetchall()
        finally:
            self.con.unregister("_errors_batch")

    # -- vectors ---------------------------------------------------------------------------

    def _vector_rows(self, select: str, level: str, where_sql: str = "", params: Sequence[Any] = (), *,
                     join: str = "", order: bool = True) -> pa.Table:
        """``SELECT select`` over the rows that hold a vector of ``level``, each joined to its file.

        The one windows-join-files query: ``windows`` is aliased ``s``, ``files`` ``f``;
        ``where_sql`` is an extra parameterised condition (on ``f``'s columns, for
        ``--where``), ``join`` an extra join. Rows come in id order unless ``order=False``.
        """
        return arrow_of(self.con.sql(self._vector_sql(select, where_sql, join, order), params=[level, *params]))

    @staticmethod
    def _vector_sql(select: str, where_sql: str = "", join: str = "", order: bool = True) -> str:
        """The SQL text of :meth:`_vector_rows` (its first parameter is the level)."""
        return (f"SELECT {select} FROM windows s JOIN files f USING (file_id){join} "
                "WHERE s.level = ? AND s.vector IS NOT NULL" + (f" AND ({where_sql})" if where_sql else "")
                + (" ORDER BY s.window_id" if order else ""))

    def vectors(self, level: str, dim: int, where_sql: str = "", params: Sequence[Any] = ()) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (n,) int64, raw vectors (n, dim) float32)`` of one level, in id order.

        ``where_sql`` is an extra parameterised condition on ``files`` (alias ``f``).
        """
        tbl = self._vector_rows("s.window_id, s.vector", level, where_sql, params)
        return _ids_of(tbl), vectors_of(tbl, "vector", dim)

    def vector_rows(self, level: str, where_sql: str = "", params: Sequence[Any] = ()) -> pa.Table:
        """Each vector of ``level`` with its window and its file's columns, in id order.

        Columns: ``window_id, start_sample, end_sample, vector`` (``FLOAT[dim]``, raw
        pooled), then every column of ``files`` but ``content_hash``. ``where_sql``: as in
        :meth:`vectors`.
        """
        tbl = self._vector_rows("s.window_id, s.start_sample, s.end_sample, s.vector, f.* EXCLUDE (content_hash)",
                                level, where_sql, params)
        return as_float_lists(tbl, "vector", self._dim_of(tbl))

    def vector_ids(self, level: str, where_sql: str = "", params: Sequence[Any] = ()) -> np.ndarray:
        """``(n,)`` int64 sorted ids of the rows :meth:`vectors` returns for ``level`` (no vectors read).

        ``where_sql``: as in :meth:`vectors`.
        """
        if not self.has_windows():
            return np.zeros(0, np.int64)
        return _ids_of(self._vector_rows("s.window_id", level, where_sql, params))

    def count_ids(self, level: str, below: int) -> tuple[int, int]:
        """``(all, under)``: how many rows :meth:`vector_ids` would return, and how many of
        them have an id under ``below`` (counted in SQL, no ids read)."""
        if not self.has_windows():
            return 0, 0
        sql = self._vector_sql("count(*), count(*) FILTER (WHERE s.window_id < ?)", order=False)
        total, under = self.con.execute(sql, [int(below), level]).fetchall()[0]  # tuples: no pyarrow
        return int(total), int(under)

    def vectors_between(self, level: str, first: int, last: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`vectors`, for ids ``first <= id <= last`` only (a range read, for builds in chunks)."""
        tbl = self._vector_rows("s.window_id, s.vector", level, "s.window_id BETWEEN ? AND ?", [int(first), int(last)])
        return _ids_of(tbl), vectors_of(tbl, "vector", dim)

    def vectors_by_id(self, level: str, ids: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`vectors`, for the given ``(m,)`` ids only: ``(ids (m',) int64, raw (m', dim) float32)``.

        Ids without a vector at ``level`` are left out; the result is in id order.
        """
        from retrieval.store import columns as col

        want = col.table({"window_id": col.numeric(np.unique(np.asarray(ids, np.int64)), "int64")})
        self.con.register("_wanted_ids", want)
        try:
            tbl = self._vector_rows("s.window_id, s.vector", level, join=" JOIN _wanted_ids w USING (window_id)")
        finally:
            self.con.unregister("_wanted_ids")
        return _ids_of(tbl), vectors_of(tbl, "vector", dim)

    def _dim_of(self, table: pa.Table) -> int:
        """The vector width of ``table``'s BLOB ``vector`` column (bytes / 4), from the recipe when it
        has no rows; 0 for a ``FLOAT[dim]`` column (unused there)."""
        col = table.column("vector")
        if not is_blob_type(col.type):
            return 0
        for chunk in col.chunks:
            if len(chunk):
                return len(chunk[0].as_py()) // 4
        recipe = self.get("recipe")
        return int(json.loads(recipe)["dim"]) if recipe else 0

    def file_vector_rows(self, *, file_id: int | None = None,
                         window_id: int | None = None) -> list[tuple[int, int, str, Sequence[float]]]:
        """``(window_id, file_id, level, vector)`` of every row with a vector of one file, both levels.

        The file is ``file_id``, or the file that owns window ``window_id`` (give one);
        no rows when there is no such file or window. Rows are stored by file, so this is
        one pass.
        """
        if (file_id is None) == (window_id is None):
            raise InputError("give exactly one of file_id and window_id")
        owner = "?" if file_id is not None else \
            "(SELECT file_id FROM windows WHERE window_id = ? AND level = 'window')"
        key = int(file_id if file_id is not None else window_id)  # type: ignore[arg-type]
        rows = self.con.execute(
            f"SELECT window_id, file_id, level, vector FROM windows WHERE file_id = {owner} AND vector IS NOT NULL",
            [key]).fetchall()
        # a BLOB row as the tuple DuckDB gives for a FLOAT[dim] one
        return [(int(r[0]), int(r[1]), r[2], tuple(np.frombuffer(r[3], "<f4").tolist())
                 if isinstance(r[3], bytes) else r[3]) for r in rows]

    def window(self, window_id: int) -> tuple[int, int, int] | None:
        """``(file_id, start_sample, end_sample)`` of window ``window_id``, or None when there is none."""
        rows = self.con.execute(
            "SELECT file_id, start_sample, end_sample FROM windows WHERE window_id = ? AND level = 'window'",
            [int(window_id)]).fetchall()
        return (int(rows[0][0]), int(rows[0][1]), int(rows[0][2])) if rows else None

    def window_bounds(self) -> pa.Table:
        """``window_id, file_id, start_sample, end_sample`` of every row with a vector (both levels)."""
        return arrow_of(self.con.sql("SELECT window_id, file_id, start_sample, end_sample FROM windows "
                                     "WHERE vector IS NOT NULL"))

    def files_of(self, window_ids: np.ndarray) -> np.ndarray:
        """``(n,)`` int64: the file id of each of the ``(n,)`` vector ids, in the order given."""
        ids = np.asarray(window_ids, np.int64)
        if not ids.size:
            return np.zeros(0, np.int64)
        owner = dict(self.con.execute("SELECT window_id, file_id FROM windows "
                                      "WHERE window_id IN (SELECT unnest(?::BIGINT[]))", [ids.tolist()]).fetchall())
        return np.array([owner[i] for i in ids.tolist()], np.int64)

    def hit_rows(self, window_ids: np.ndarray, file_columns: Sequence[str]) -> dict[int, dict[str, Any]]:
        """``window_id -> {file_id, start_sample, end_sample, *file_columns}`` for the given vector
        ids (the rows of a few search hits, read without loading the tables)."""
        ids = np.asarray(window_ids, np.int64)
        cols = list(file_columns)
        sel = ", ".join(f"f.{quote_ident(c)}" for c in cols)
        cur = self.con.execute(
            f"SELECT s.window_id, s.file_id, s.start_sample, s.end_sample, {sel} FROM windows s "
            "JOIN files f USING (file_id) WHERE s.window_id IN (SELECT unnest(?::BIGINT[]))", [ids.tolist()])
        keys = ["file_id", "start_sample", "end_sample", *cols]
        return {r[0]: dict(zip(keys, r[1:])) for r in cur.fetchall()}

    def count_vectors(self, level: str) -> int:
        if not self.has_windows():
            return 0
        return int(self.con.execute(
            "SELECT count(*) FROM windows WHERE level = ? AND vector IS NOT NULL", [level]).fetchall()[0][0])

    # -- transforms ------------------------------------------------------------------------

    def save_transform(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        self.con.execute("DELETE FROM transforms WHERE name = ?", [name])
        self.con.execute("INSERT INTO transforms VALUES (?, ?)", [name, buf.getvalue()])

    def load_transform(self, name: str) -> dict[str, np.ndarray]:
        rows = self.con.execute("SELECT data FROM transforms WHERE name = ?", [name]).fetchall()
        if not rows:
            return {}
        with np.load(io.BytesIO(rows[0][0])) as z:
            return {k: z[k] for k in z.files}

    # -- transactions ----------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """``with db.transaction():`` runs its block as one transaction: committed when the block ends,
        rolled back when it raises (the one write idiom; sqlite-utils' ``Database.atomic`` is the model).

        A commit checkpoints when :data:`CHECKPOINT_EVERY_COMMITS` or :data:`CHECKPOINT_WAL_BYTES` is
        reached. Transactions do not nest: DuckDB has no savepoints.
        """
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        try:
            self.con.execute("COMMIT")
        except duckdb.Error as exc:
            raise store_error(exc, self.path, writing=True) from exc
        self._commits += 1
        if self._commits >= CHECKPOINT_EVERY_COMMITS or _size(self.wal_path) > CHECKPOINT_WAL_BYTES:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Move the WAL into the database file (DuckDB empties the WAL)."""
        try:
            self.con.execute("CHECKPOINT")
        except duckdb.Error as exc:
            raise store_error(exc, self.path, writing=True) from exc
        self._commits = 0


#: Paths of the DuckDB files open in this process, newest last (names the file in errors
#: raised outside this module, e.g. a damaged block met by a query).
_OPEN: list[Path] = []

_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<exe>.*?) \(PID (?P<pid>\d+)\)")


def wal_of(path: Path) -> Path:
    return Path(f"{path}.wal")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def lock_holder(message: str) -> tuple[int, str] | None:
    """``(pid, command line)`` of the process DuckDB says holds the lock, or None.

    The command line comes from ``/proc/<pid>/cmdline`` where readable (else the
    executable DuckDB names), on one line; past 120 characters its middle is cut.
    """
    m = _LOCK_HOLDER.search(message)
    if m is None:
        return None
    pid = int(m.group("pid"))
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        cmd = " ".join(a.decode(errors="replace") for a in raw.split(b"\0") if a) or m.group("exe")
    except OSError:
        cmd = m.group("exe")
    cmd = " ".join(cmd.split())
    return pid, cmd if len(cmd) <= 120 else f"{cmd[:60]} ... {cmd[-55:]}"


def store_error(exc: BaseException, path: Path | None = None, *, writing: bool = False) -> StoreError:
    """A one-line :class:`StoreError` for a DuckDB or file-system failure on an index: what happened, and the fix.

    ``path``: the DuckDB file (default: the one opened last in this process).
    """
    path = Path(path) if path is not None else (_OPEN[-1] if _OPEN else Path("meta.duckdb"))
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    wal = wal_of(path)
    holder = lock_holder(first)
    same_process = "different configuration than existing connections" in first
    if holder is not None or "Could not set lock" in first or same_process:
        who = (f"process {holder[0]} (`{holder[1]}`)" if holder else
               f"this process (pid {os.getpid()}, another connection)" if same_process else "another process")
        what = "write" if writing else "read"
        return IndexLockedError(f"cannot {what} {path}: {who} holds it open; wait for it to finish or stop it, then re-run"
                                + ("" if writing else " (readers use the last published snapshot when one exists)"))
    if "No space left on device" in first:
        return StoreError(f"disk full while writing {path.parent}: {first}; free space on that disk and re-run "
                          "(what was committed before stays, and `retrieve index` resumes)")
    if "WAL" in first or str(wal) in first:
        return StoreError(f"the write-ahead log {wal} is damaged ({first}); move it aside "
                          f"(`mv {wal} {wal}.damaged`) and re-run: what was checkpointed into {path.name} stays, "
                          "and `retrieve index` re-embeds the files the log held")
    if "Corrupt database file" in first or "not a valid DuckDB database" in first:
        from retrieval.store.snapshot import read_pointer

        pointer = read_pointer(path.parent)
        fix = ("move the index folder aside and run `retrieve index CORPUS` again" if pointer is None else
               f"restore the last published snapshot (`cp {pointer.folder(path.parent) / path.name} {path}` and "
               f"remove {wal.name} if present), then re-run `retrieve index` to redo what came after it")
        return StoreError(f"{path} is damaged ({first}); {fix}")
    return StoreError(f"cannot use {path}: {first}")


def describe_failure(exc: BaseException) -> str | None:
    """The one-line message for a store failure that escaped the library (a DuckDB error, a full
    disk), or None when ``exc`` is something else. The CLI renders it instead of a traceback."""
    if isinstance(exc, duckdb.Error) or (isinstance(exc, OSError) and exc.errno == 28) or (
            isinstance(exc, RuntimeError) and "No space left on device" in str(exc)):
        return str(store_error(exc))
    return None
