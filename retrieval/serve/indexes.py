"""The server's one door to its indexes: open, serve, and swap in a newer version.

Every request reaches an index through :meth:`LiveIndex.use`, which hands out the
current :class:`Snapshot` and keeps it open until the request is done. Nothing else in
``retrieval.serve`` opens a store.

How a newer version is picked up: every ``retrieve index`` publishes what it committed
as an immutable snapshot (:mod:`retrieval.store.snapshot`). The server opens indexes with
``snapshot_only=True``, so it never holds the live database and never blocks an ingest.
:func:`source_version` reads the id of the newest published snapshot (one small file);
when it changes, a new :class:`Index` on that snapshot is opened aside, warmed, then
switched in under a lock, and the old one is closed (releasing its snapshot's lease) when
its last request ends. No request ever sees a half-written state: a snapshot is complete
before it is published.

Labels are written to the index's ``labels.sqlite`` directly, from the snapshot being served
(:mod:`retrieval.serve.labelling`), and read live: no writer, no new snapshot. Writes of
heads and scores go through :meth:`LiveIndex.writing`: a writer of the live database for one
request, which publishes a snapshot when it closes; the server then swaps that snapshot in
before answering, so the next request sees the write.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from retrieval.errors import IndexNotFoundError, RetrievalError
from retrieval.hit_table import file_queries
from retrieval.index import Index, find_index
from retrieval.store import Store

#: Seconds between two looks at the folder for a newer version.
CHECK_EVERY_S = 0.5
#: Columns with at most this many distinct values get a select on the page.
SELECT_MAX_VALUES = 30
#: Column types that get a text box whatever their count of values (``score_<target>`` is REAL).
FLOAT_TYPES = ("REAL", "FLOAT", "DOUBLE")


def source_version(root: Path) -> int | None:
    """The id of the newest snapshot published in the index folder ``root`` (None: none yet).

    One small file read; any change means there is a newer version to open.
    """
    from retrieval.store.snapshot import read_pointer

    pointer = read_pointer(root)
    return None if pointer is None else pointer.id


@dataclass
class Snapshot:
    """One opened, immutable version of an index and what the server caches about it.

    Attributes:
        index: the opened :class:`Index`, reading one published snapshot.
        version: the id of that snapshot.
        files: the ``files`` table indexed by ``file_id``.
        corpus_root: folder that the ``path`` column is relative to (files of an index
            with several roots name their own in the ``root`` column).
        taken_at: Unix time it was opened.
        lock: held while a request uses ``index`` (DuckDB connections and FAISS are not
            shared across threads).
    """

    index: Index
    version: int | None
    files: pd.DataFrame
    corpus_root: Path
    taken_at: float
    lock: threading.RLock = field(default_factory=threading.RLock)
    users: int = 0
    retired: bool = False
    _filters: list[dict[str, Any]] | None = None
    _adapter: Any = None

    def audio_path(self, file_id: int) -> Path:
        """The audio file of an indexed ``file_id``; never a path taken from a request.

        Raises:
            IndexNotFoundError: the id is not in the index, or its file is gone from disk.
        """
        if file_id not in self.files.index:
            raise IndexNotFoundError(f"no file with id {file_id} in this index")
        from retrieval.audio.paths import real_path

        rel = str(self.files.at[file_id, "path"])
        root = self.files.at[file_id, "root"] if "root" in self.files.columns else None
        root = Path(str(root)) if isinstance(root, str) else self.corpus_root
        path = real_path(root, rel)
        if not path.is_file():
            raise IndexNotFoundError(f"file {file_id} ({rel}) is no longer on disk under {root}; "
                                     "re-run `retrieve index`")
        return path

    def window(self, window_id: int) -> tuple[int, float, float]:
        """``(file_id, start_s, end_s)`` of an indexed window.

        Raises:
            IndexNotFoundError: no window with that id.
        """
        found = self.index.store.db.window(window_id)
        if found is None:
            raise IndexNotFoundError(f"no window with id {window_id} in this index")
        rate = self.index.recipe.sample_rate
        return found[0], found[1] / rate, found[2] / rate

    def filters(self) -> list[dict[str, Any]]:
        """One entry per metadata column: ``name``, ``type``, and ``values`` when there are few
        (never for floating-point columns)."""
        if self._filters is None:
            columns = self.index.store.db.column_types()
            out = []
            for name in self.index.store.db.metadata_columns():
                values = self.files[name].dropna() if name in self.files else pd.Series([], dtype=object)
                distinct = sorted({str(v) for v in values})
                kind = columns.get(name, "VARCHAR")
                few = 0 < len(distinct) <= SELECT_MAX_VALUES and kind not in FLOAT_TYPES  # no select of scores
                out.append({"name": name, "type": kind, "distinct": len(distinct),
                            "values": distinct if few else None})
            self._filters = out
        return self._filters

    def adapter(self) -> Any:
        """This version's :class:`retrieval.adapt.Adapter`, for reads (labels, scores, suggestions)
        and label writes (``labels.sqlite``, read live by every version); kept, so its mapped
        search vectors are loaded once per version."""
        if self._adapter is None:
            self._adapter = self.index.adapter()
        return self._adapter

    def close(self) -> None:
        self.index.close()  # releases the snapshot's lease, so the next publish may remove it


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

    @contextlib.contextmanager
    def writing(self) -> Iterator[Index]:
        """A writable :class:`Index` of this folder for one write of ``meta.duckdb`` (heads, scores).

        Writes are serialised with each other and with the opening of newer versions (both
        open the live database, and DuckDB shares one instance per file within a process).
        The writer waits up to :data:`retrieval.store.store.LOCK_WAIT_S` for another process
        (an ingest) to let go. On a clean exit it publishes a snapshot, which is swapped in
        before this returns, so the next request sees the write; requests in flight finish on
        the snapshot they hold, and searches never wait for the write.

        Raises:
            IndexLockedError: another process held the index for longer than that.
        """
        with self._one_refresh:
            index = Index.open(self.root, writable=True, device=self.device)
            with index.store:  # publishes a snapshot on a clean exit (and closes)
                yield index
            self._swap_in_newer(just_published=True)

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

    def _swap_in_newer(self, just_published: bool = False) -> bool:
        if source_version(self.root) == self._current.version:
            return False
        try:
            new = self._snapshot(self._current, just_published)
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

    def _snapshot(self, previous: Snapshot | None, just_published: bool = False) -> Snapshot:
        """Open the newest published snapshot, warmed for the first request (``just_published``:
        this process published it, so it is current and the live database need not be checked).

        Raises:
            RetrievalError: the folder is not an index, or has no snapshot yet while a
                first ingest writes it.
        """
        if just_published:
            index = Index(Store.open_published(self.root), device=self.device)
        else:
            index = Index.open(self.root, device=self.device, snapshot_only=True)
        try:
            _freeze(index)
            if previous is not None and previous.index.recipe == index.recipe:
                index._encoder = previous.index._encoder  # keep a loaded model warm across versions
            index.store.vectors("window")  # load (or rebuild) FAISS now, not in the first request
            index.store.postprocess  # noqa: B018 - and the fitted transform, which queries then only read
            file_queries(index.store)  # and the tables hits and file queries are looked up in
            files = index.files().set_index("file_id")
            root = Path(index.store.db.get("corpus_root") or ".")
        except BaseException:
            index.close()
            raise
        return Snapshot(index, index.store.snapshot_id, files, root, time.time())


def _freeze(index: Index) -> None:
    """Memoise the manifest and schema reads of an opened snapshot, which nothing writes.

    The store re-reads its manifest (generation, recipe, metadata version) several times
    per search so that it notices writers; a snapshot has none, and those reads were a
    third of a search by id at 100k windows.
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
