"""The server's one door to its indexes: open, serve, and swap in a newer version.

Every request reaches an index through :meth:`LiveIndex.use`, which hands out the
current :class:`Snapshot` and keeps it open until the request is done. Nothing else in
``retrieval.serve`` opens a store.

How a newer version is picked up (the seam to replace):

* :func:`source_version` says, cheaply, whether the index folder changed. Today it is
  the size and mtime of the DuckDB file, its WAL and the FAISS files.
* :meth:`LiveIndex._snapshot` opens the folder. Today DuckDB allows one writer *or*
  readers across processes, so a server that kept the index open would stop
  ``retrieve index`` from running, and could not open it while an ingest runs. So it
  takes a private copy: it opens the DuckDB file read-only for the length of the copy
  (that lock proves no writer is half-way through a transaction, and fails while one
  holds the file), copies the database and FAISS files into a temporary folder, lets
  go, and opens the copy. While a writer holds the file the copy fails and the previous
  snapshot keeps serving; the next request tries again.

When the store gains a published-generation mechanism (readers open the newest
committed generation, and a cheap call says whether a newer one exists), replace the
body of :func:`source_version` with that call and :meth:`LiveIndex._snapshot` with
opening that generation; the swap below (built aside, warmed, then switched under a lock,
old one closed when its last request ends) stays as it is.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from retrieval.errors import IndexNotFoundError, RetrievalError
from retrieval.index import Index, find_index

#: Files of an index folder that make up one consistent version.
_DB = "meta.duckdb"
#: Seconds between two looks at the folder for a newer version.
CHECK_EVERY_S = 0.5
#: Columns with at most this many distinct values get a select on the page.
SELECT_MAX_VALUES = 30


def source_version(root: Path) -> tuple[Any, ...]:
    """A cheap fingerprint of the index folder's committed state: ``(name, size, mtime_ns)`` per file.

    The seam for the store's own generation counter: any change of the value means
    "there may be a newer version to open".
    """
    out = []
    for p in sorted([root / _DB, root / f"{_DB}.wal", *root.glob("*.faiss")]):
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        out.append((p.name, st.st_size, st.st_mtime_ns))
    return tuple(out)


@dataclass
class Snapshot:
    """One opened, immutable version of an index and what the server caches about it.

    Attributes:
        index: the opened :class:`Index` (a private copy of the folder).
        version: :func:`source_version` of the folder when it was copied.
        files: the ``files`` table indexed by ``file_id``.
        corpus_root: folder that the ``path`` column is relative to.
        taken_at: Unix time of the copy.
        lock: held while a request uses ``index`` (DuckDB connections and FAISS are not
            shared across threads).
    """

    index: Index
    version: tuple[Any, ...]
    files: pd.DataFrame
    corpus_root: Path
    taken_at: float
    folder: Path
    lock: threading.RLock = field(default_factory=threading.RLock)
    users: int = 0
    retired: bool = False
    _filters: list[dict[str, Any]] | None = None

    def audio_path(self, file_id: int) -> Path:
        """The audio file of an indexed ``file_id``; never a path taken from a request.

        Raises:
            IndexNotFoundError: the id is not in the index, or its file is gone from disk.
        """
        if file_id not in self.files.index:
            raise IndexNotFoundError(f"no file with id {file_id} in this index")
        rel = str(self.files.at[file_id, "path"])
        path = self.corpus_root / rel
        if not path.is_file():
            raise IndexNotFoundError(f"file {file_id} ({rel}) is no longer on disk under {self.corpus_root}; "
                                     "re-run `retrieve index`")
        return path

    def window(self, segment_id: int) -> tuple[int, float, float]:
        """``(file_id, start_s, end_s)`` of an indexed window.

        Raises:
            IndexNotFoundError: no window with that id.
        """
        rows = self.index.store.db.con.execute(
            "SELECT file_id, start_sample, end_sample FROM segments WHERE segment_id = ? AND level = 'segment'",
            [int(segment_id)]).fetchall()
        if not rows:
            raise IndexNotFoundError(f"no window with id {segment_id} in this index")
        rate = self.index.recipe.sample_rate
        return int(rows[0][0]), rows[0][1] / rate, rows[0][2] / rate

    def filters(self) -> list[dict[str, Any]]:
        """One entry per metadata column: ``name``, ``type``, and ``values`` when there are few."""
        if self._filters is None:
            columns = self.index.store.db.column_types()
            out = []
            for name in self.index.store.db.metadata_columns():
                values = self.files[name].dropna() if name in self.files else pd.Series([], dtype=object)
                distinct = sorted({str(v) for v in values})
                out.append({"name": name, "type": columns.get(name, "VARCHAR"), "distinct": len(distinct),
                            "values": distinct if 0 < len(distinct) <= SELECT_MAX_VALUES else None})
            self._filters = out
        return self._filters

    def close(self) -> None:
        self.index.close()
        shutil.rmtree(self.folder, ignore_errors=True)


class LiveIndex:
    """An index folder served from snapshots, swapped for a newer one without a restart.

    Args:
        path: index folder or name (as ``--index`` takes it).
        device: torch device for model encoders.
        check_every_s: least seconds between two looks for a newer version.
    """

    def __init__(self, path: str | Path, *, device: str = "cpu", check_every_s: float = CHECK_EVERY_S) -> None:
        self.root = find_index(str(path))
        self.name = self.root.name
        self.device = device
        self.check_every_s = check_every_s
        self._swap = threading.Lock()
        self._one_refresh = threading.Lock()
        self._refreshing = False
        self._checked = 0.0
        self.last_refresh_error: str | None = None
        self._current = self._snapshot(None)

    # -- requests --------------------------------------------------------------------------

    @contextlib.contextmanager
    def use(self) -> Iterator[Snapshot]:
        """The current snapshot, held open until the ``with`` block ends.

        Starts a background refresh when the folder changed; the request itself never
        waits for one.
        """
        self._maybe_refresh()
        with self._swap:
            snap = self._current
            snap.users += 1
        try:
            yield snap
        finally:
            with self._swap:
                snap.users -= 1
                done = snap.retired and snap.users == 0
            if done:
                snap.close()

    def current(self) -> Snapshot:
        """The snapshot now being served (for reads that need no lock, such as ``version``)."""
        return self._current

    def refresh(self) -> bool:
        """Look for a newer version now and swap it in; True when one was."""
        return self._refresh()

    def close(self) -> None:
        with self._swap:
            snap = self._current
            snap.retired = True
            done = snap.users == 0
        if done:
            snap.close()

    # -- internals -------------------------------------------------------------------------

    def _maybe_refresh(self) -> None:
        now = time.monotonic()
        if self._refreshing or now - self._checked < self.check_every_s:
            return
        self._checked = now
        if source_version(self.root) == self._current.version:
            return
        with self._swap:
            if self._refreshing:
                return
            self._refreshing = True
        threading.Thread(target=self._refresh, name=f"refresh-{self.name}", daemon=True).start()

    def _refresh(self) -> bool:
        try:
            with self._one_refresh:
                return self._swap_in_newer()
        finally:
            self._refreshing = False

    def _swap_in_newer(self) -> bool:
        if source_version(self.root) == self._current.version:
            return False
        try:
            new = self._snapshot(self._current)
        except RetrievalError as exc:  # a writer holds the file: keep serving the old snapshot
            self.last_refresh_error = str(exc)
            return False
        self.last_refresh_error = None
        with self._swap:
            old, self._current = self._current, new
            old.retired = True
            done = old.users == 0
        if done:
            old.close()
        return True

    def _snapshot(self, previous: Snapshot | None) -> Snapshot:
        """Copy the folder's committed state aside and open it, warmed for the first request.

        Raises:
            RetrievalError: the folder is being written (DuckDB lock) or is not an index.
        """
        import duckdb

        folder = Path(tempfile.mkdtemp(prefix=f"retrieve-serve-{self.name}-"))
        try:
            try:
                guard = duckdb.connect(str(self.root / _DB), read_only=True)
            except duckdb.Error as exc:
                raise RetrievalError(f"{self.root} is being written ({str(exc).splitlines()[0]}); "
                                     "serving the previous version") from exc
            try:
                version = source_version(self.root)
                for p in [self.root / _DB, self.root / f"{_DB}.wal", *self.root.glob("*.faiss*")]:
                    if p.is_file():
                        shutil.copy2(p, folder / p.name)
            finally:
                guard.close()
            index = Index.open(folder, device=self.device)
            _freeze(index)
            if previous is not None and previous.index.recipe == index.recipe:
                index._encoder = previous.index._encoder  # keep a loaded model warm across versions
            index.store.vectors("segment")  # load (or rebuild) FAISS now, not in the first request
            index.store.postprocess  # noqa: B018 - and the fitted transform, which queries then only read
            files = index.files().set_index("file_id")
            root = Path(index.store.db.get("corpus_root") or ".")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return Snapshot(index, version, files, root, time.time(), folder)


def _freeze(index: Index) -> None:
    """Memoise the manifest and schema reads of an opened copy that nothing writes.

    The store re-reads its manifest (generation, recipe, metadata version) several times
    per search so that it notices writers; a private copy has none, and those reads were
    a third of a search by id at 100k windows.
    """
    db = index.store.db
    db.get = functools.lru_cache(maxsize=None)(db.get)  # type: ignore[method-assign]
    db.column_types = functools.lru_cache(maxsize=None)(db.column_types)  # type: ignore[method-assign]


class IndexSet:
    """The indexes one server holds, by name; the first is the default."""

    def __init__(self, paths: list[str | Path], *, device: str = "cpu",
                 check_every_s: float = CHECK_EVERY_S) -> None:
        if not paths:
            paths = [find_index(None)]
        self.live: dict[str, LiveIndex] = {}
        for p in paths:
            li = LiveIndex(p, device=device, check_every_s=check_every_s)
            name = li.name if li.name not in self.live else str(li.root)
            self.live[name] = li

    @property
    def names(self) -> list[str]:
        return list(self.live)

    def get(self, name: str | None) -> LiveIndex:
        """The index called ``name`` (None: the first).

        Raises:
            IndexNotFoundError: an unknown name (lists the served ones).
        """
        if not name:
            return next(iter(self.live.values()))
        if name not in self.live:
            raise IndexNotFoundError(f"this server holds no index {name!r}; it serves {', '.join(self.live)}")
        return self.live[name]

    def warm(self) -> None:
        """Load every index's encoder now (the first query would otherwise pay for it)."""
        for li in self.live.values():
            with li.use() as snap, snap.lock:
                snap.index.encoder  # noqa: B018 - loads and keeps the model

    def close(self) -> None:
        for li in self.live.values():
            li.close()
