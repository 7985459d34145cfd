"""Window labels in their own small file beside ``meta.duckdb``: ``labels.sqlite``.

Why a file of their own: ``meta.duckdb`` has one writer at a time and readers during a write
read a published snapshot (:mod:`retrieval.store.snapshot`), so a label stored there reached a
running server only through a writer's open and a new snapshot, a copy of the whole database
(1.1 s per click at 100,000 windows, growing with the index). Labels are small, written one
click at a time by several processes (the server, ``retrieve label``), and read live by all:
what SQLite is made for. Every process opens the file for one operation and closes it.

    window_labels  one row per (content_hash, start_sample, end_sample, target): ``label``,
                   ``source``, ``labelled_at_us`` (microseconds since the Unix epoch, UTC) and
                   ``seq`` (rowid; a rewrite of a key gets a new, higher one, so it breaks ties
                   between labels of the same instant)
    meta           ``key, value``; ``legacy_imported`` = ``1`` once the labels an older index
                   kept in ``meta.duckdb`` were copied here (:meth:`LabelFile.import_legacy`)

Guarantees: every write is one SQLite transaction (rollback journal, ``synchronous=FULL``), so a
committed label survives a crash and a reader sees a write entirely or not at all. A writer
waits up to :data:`BUSY_TIMEOUT_S` for another; a write takes milliseconds. Nothing here
touches ``meta.duckdb``, so labelling never waits for an ingest and an ingest never waits for
labelling. A missing file holds no labels; it is created by the first write.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from retrieval.errors import IndexLockedError, StoreError

LABELS_NAME = "labels.sqlite"
#: Seconds a write (or a read, during another's commit) waits for the file's lock.
BUSY_TIMEOUT_S = 5.0
#: What makes a label: a span of a file's content, for one target.
KEY = ("content_hash", "start_sample", "end_sample", "target")
#: Columns of :meth:`LabelFile.rows`, in order.
COLUMNS = (*KEY, "label", "source", "labelled_at_us", "seq")
_LEGACY_KEY = "legacy_imported"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS window_labels (seq INTEGER PRIMARY KEY, content_hash TEXT NOT NULL, "
    "start_sample INTEGER NOT NULL, end_sample INTEGER NOT NULL, target TEXT NOT NULL, label TEXT NOT NULL, "
    "source TEXT, labelled_at_us INTEGER NOT NULL, UNIQUE (content_hash, start_sample, end_sample, target))",
    "CREATE INDEX IF NOT EXISTS window_labels_target ON window_labels (target)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
)
#: One label row in: ``verb`` REPLACE (a new label of a key wins) or IGNORE (the one stored wins).
_INSERT = ("INSERT OR {verb} INTO window_labels (content_hash, start_sample, end_sample, target, label, source, "
           "labelled_at_us) VALUES (?, ?, ?, ?, ?, ?, ?)")


def now_us() -> int:
    """Microseconds since the Unix epoch (UTC): a label's ``labelled_at_us``."""
    return time.time_ns() // 1000


class LabelFile:
    """The ``labels.sqlite`` of the index folder ``root``."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / LABELS_NAME

    # -- connections -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``), committed when the block ends, rolled back when it raises."""
        try:
            con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._error(exc, writing=True) from exc
        try:
            con.execute("PRAGMA synchronous = FULL")
            con.execute("BEGIN IMMEDIATE")
            try:
                for sql in _SCHEMA:
                    con.execute(sql)
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._error(exc, writing=True) from exc
        finally:
            con.close()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection | None]:
        """One read transaction; None when there is no file or schema yet.

        The file is opened read-write when it may be written, so a read after a writer was killed
        mid-transaction rolls that transaction back (its hot journal) and sees the last commit;
        read-only otherwise (a read-only copy of an index)."""
        if not self.path.is_file():
            yield None
            return
        mode = "rw" if os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK) else "ro"
        try:
            con = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode={mode}", uri=True, timeout=BUSY_TIMEOUT_S,
                                  isolation_level=None)
        except sqlite3.Error as exc:
            raise self._error(exc, writing=False) from exc
        try:
            con.execute("BEGIN")
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()}
            yield con if "window_labels" in tables else None
            con.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._error(exc, writing=False) from exc
        finally:
            con.close()

    def _error(self, exc: sqlite3.Error, *, writing: bool) -> StoreError:
        if "locked" in str(exc) or "busy" in str(exc):
            return IndexLockedError(f"the labels file {self.path} was held by another process for more than "
                                    f"{BUSY_TIMEOUT_S:g} s ({exc}); retry")
        return StoreError(f"cannot {'write' if writing else 'read'} the labels file {self.path}: {exc}"
                          + ("; the index folder must be writable to label" if writing else ""))

    # -- writes ----------------------------------------------------------------------------

    def upsert(self, rows: pd.DataFrame) -> int:
        """Store ``rows`` (columns ``content_hash, start_sample, end_sample, target, label, source``) in
        one transaction; a row replaces the label of the same key. Returns rows written."""
        if not len(rows):
            return 0
        values = _values(rows.assign(labelled_at_us=now_us()))
        with self._writing() as con:
            con.executemany(_INSERT.format(verb="REPLACE"), values)
        return len(values)

    def delete(self, targets: Sequence[str]) -> int:
        """Delete every label of ``targets``; returns how many went."""
        if not self.path.is_file():
            return 0
        marks = ", ".join("?" * len(targets))
        with self._writing() as con:
            return con.execute(f"DELETE FROM window_labels WHERE target IN ({marks})", list(targets)).rowcount

    def import_legacy(self, rows: pd.DataFrame) -> int:
        """Copy the labels an older index kept in ``meta.duckdb`` (``KEY`` columns, ``label``,
        ``source``, ``labelled_at_us``) and record that it was done, in one transaction. A key
        already here was labelled since, so it keeps its label. Returns rows copied."""
        values = _values(rows)
        with self._writing() as con:
            before = con.total_changes
            con.executemany(_INSERT.format(verb="IGNORE"), values)
            copied = con.total_changes - before
            con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, '1')", [_LEGACY_KEY])
        return copied

    # -- reads -----------------------------------------------------------------------------

    def rows(self, targets: Sequence[str] | None = None) -> tuple[pd.DataFrame, bool]:
        """``(labels, legacy_imported)``: the stored labels of ``targets`` (None: all), one row
        per key with :data:`COLUMNS`, and whether the labels of ``meta.duckdb`` were imported
        (then that table, where a snapshot still holds it, is to be ignored). One read transaction."""
        with self._reading() as con:
            if con is None:
                return pd.DataFrame({c: pd.Series([], dtype="int64" if c in ("start_sample", "end_sample",
                                                                               "labelled_at_us", "seq") else object)
                                     for c in COLUMNS}), False
            where, params = ("TRUE", []) if targets is None else (
                f"target IN ({', '.join('?' * len(targets))})", list(targets))
            found = con.execute(f"SELECT {', '.join(COLUMNS)} FROM window_labels WHERE {where}", params).fetchall()
            imported = con.execute("SELECT count(*) FROM meta WHERE key = ?", [_LEGACY_KEY]).fetchall()[0][0] > 0
        frame = pd.DataFrame.from_records(found, columns=list(COLUMNS))
        for c in ("start_sample", "end_sample", "labelled_at_us", "seq"):
            frame[c] = frame[c].astype("int64")
        return frame, bool(imported)

    def legacy_imported(self) -> bool:
        """Whether :meth:`import_legacy` has run on this file."""
        return self.rows([])[1]


def _values(rows: pd.DataFrame) -> list[tuple]:
    """``rows`` (``KEY`` columns, ``label``, ``source``, ``labelled_at_us``) as :data:`_INSERT`'s parameters."""
    return [(str(h), int(a), int(b), str(t), str(lab), None if s is None else str(s), int(us))
            for h, a, b, t, lab, s, us in rows[[*KEY, "label", "source", "labelled_at_us"]].itertuples(index=False)]
