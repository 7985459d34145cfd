"""Published snapshots: the committed state readers search while a writer holds the index.

DuckDB lets one process write a database file and no other process open it meanwhile,
so a search during an ingest cannot read ``meta.duckdb``. Instead, every writer
publishes what it committed as an immutable *snapshot*, and readers that find the live
file locked read the newest one:

    snapshots/<id>/meta.duckdb     a copy of the checkpointed database (vectors included)
    snapshots/<id>/<level>s.faiss  the FAISS files and their sidecars (hard links: the
                                   writer replaces FAISS files, never rewrites them)
    snapshots/<id>/COMPLETE        written last inside the folder; without it the folder
                                   is not a snapshot
    snapshots/<id>/LEASE           readers hold a shared ``flock`` on it while they use
                                   the snapshot; garbage collection needs an exclusive one
    snapshots/CURRENT              JSON ``{"id", "state", "published_at"}``, replaced
                                   atomically (``os.replace``) once the folder is complete
    snapshots/.tmp-*               a publish in progress; a killed one is removed by the
                                   next writer

Publishing (:func:`publish`) happens when a writer closes cleanly after changing the
index (the end of ``retrieve index``, ``retrieve tag``), and when a writer opens an index
whose snapshot is missing or older than the database (an index from before snapshots, or
one whose last ingest was killed), so readers during this ingest see everything committed
before it. A snapshot is never changed after CURRENT names it, except that a reader may
replace a damaged FAISS file in it by an identical rebuild. Older snapshots are removed
after each publish once no reader holds their lease (:func:`collect`); a reader that still
has one open keeps it until it closes or refreshes.

Window labels are not part of a snapshot: they live in ``labels.sqlite`` beside ``meta.duckdb``
(:mod:`retrieval.store.label_file`), which readers of any snapshot read live, so a label
needs no publish.

A publish costs a checkpoint and a copy of ``meta.duckdb``: 0.02-0.04 s for FSDD (3,000
files, 5.8 MiB), 0.11-0.20 s for 100k windows (87 MiB) on 2 shared cores
(``scripts/bench_publish.py``). Ids increase by one per publish; the DuckDB ``state`` recorded with each (a digest of the
manifest and the row counts, :meth:`MetadataDB.state_key`) tells a writer whether the
snapshot is current.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SNAPSHOTS = "snapshots"
CURRENT = "CURRENT"
COMPLETE = "COMPLETE"
LEASE = "LEASE"
#: Attempts to lease the snapshot CURRENT names when a publish replaces it meanwhile.
LEASE_ATTEMPTS = 20


@dataclass(frozen=True)
class Pointer:
    """What ``snapshots/CURRENT`` says: the newest complete snapshot."""

    id: int
    state: str
    published_at: float

    def folder(self, root: Path) -> Path:
        return Path(root) / SNAPSHOTS / str(self.id)


def read_pointer(root: Path) -> Pointer | None:
    """The pointer of the index folder ``root``; None when absent or malformed."""
    try:
        raw = json.loads((Path(root) / SNAPSHOTS / CURRENT).read_text())
        return Pointer(int(raw["id"]), str(raw["state"]), float(raw["published_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Lease:
    """A shared lock on one snapshot folder: while held, :func:`collect` leaves the folder alone."""

    def __init__(self, folder: Path, fd: int, pointer: Pointer) -> None:
        self.folder = folder
        self.pointer = pointer
        self._fd: int | None = fd

    @property
    def id(self) -> int:
        return self.pointer.id

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def lease_current(root: Path) -> Lease | None:
    """Lease the snapshot CURRENT names; None when there is none.

    A publish may replace CURRENT and collect the old folder between reading the pointer
    and locking: the folder is then gone or locked exclusively, and the pointer is read again.
    """
    for _ in range(LEASE_ATTEMPTS):
        pointer = read_pointer(root)
        if pointer is None:
            return None
        folder = pointer.folder(root)
        try:
            fd = os.open(folder / LEASE, os.O_RDONLY)
        except OSError:
            time.sleep(0.01)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            time.sleep(0.01)
            continue
        if (folder / COMPLETE).is_file():
            return Lease(folder, fd, pointer)
        os.close(fd)  # collected between open and lock
    return None


def publish(root: Path, db_file: Path, faiss_files: list[Path], state: str) -> Pointer:
    """Copy ``db_file`` (checkpointed, not being written) and link ``faiss_files`` into a new
    snapshot of ``root``, point CURRENT at it, and collect older ones; returns the new pointer.

    Call it while holding the index's write lock, so no other publish runs at once.
    """
    base = Path(root) / SNAPSHOTS
    base.mkdir(exist_ok=True)
    tmp = base / f".tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        shutil.copyfile(db_file, tmp / db_file.name)
        for f in faiss_files:
            _link_or_copy(f, tmp / f.name)
        (tmp / LEASE).touch()
        (tmp / COMPLETE).write_text(state)
        old = read_pointer(root)
        new_id = 1 + max([int(p.name) for p in base.iterdir() if p.name.isdigit()] + [old.id if old else 0])
        os.replace(tmp, base / str(new_id))
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    pointer = Pointer(new_id, state, time.time())
    _write_atomic(base / CURRENT, json.dumps({"id": pointer.id, "state": pointer.state,
                                               "published_at": pointer.published_at}))
    collect(root)
    return pointer


def collect(root: Path) -> list[int]:
    """Remove snapshots other than the current one that no reader leases, and unfinished
    publishes; returns the ids removed. Call it while holding the index's write lock."""
    base = Path(root) / SNAPSHOTS
    pointer = read_pointer(root)
    removed: list[int] = []
    if not base.is_dir():
        return removed
    for folder in base.iterdir():
        if folder.name.startswith(".tmp-"):
            shutil.rmtree(folder, ignore_errors=True)
            continue
        if not folder.name.isdigit() or (pointer is not None and int(folder.name) == pointer.id):
            continue
        if _remove_unleased(folder):
            removed.append(int(folder.name))
    return sorted(removed)


def describe(pointer: Pointer | None) -> dict[str, Any] | None:
    """JSON-able summary for ``retrieve info``."""
    if pointer is None:
        return None
    return {"id": pointer.id, "published_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(pointer.published_at))}


def _remove_unleased(folder: Path) -> bool:
    """Delete ``folder`` if no reader holds its lease; COMPLETE goes first, so a reader that
    locks the lease just after sees an incomplete folder and reads the pointer again."""
    try:
        fd = os.open(folder / LEASE, os.O_RDONLY)
    except OSError:  # no lease file: a folder from an unfinished publish
        shutil.rmtree(folder, ignore_errors=True)
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    try:
        (folder / COMPLETE).unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
    finally:
        os.close(fd)
    return True


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
