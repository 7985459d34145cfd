"""``info.json``: the index's last :meth:`Store.info`, so ``retrieve info`` answers without
opening DuckDB or FAISS (issue 16 item 9: importing numpy, duckdb and faiss alone costs
more than the 0.3 s a glance at an index should take).

A writer that closes cleanly writes it (:func:`write`): the info of the committed state,
plus the size and modification time (ns) of every file that info was computed from,
taken after the database is closed:

    meta.duckdb, meta.duckdb.wal            (the WAL recorded as absent)
    windows.faiss(.json), files.faiss(.json)
    lookup/*                                (what a query reads instead of DuckDB; absent is fine)

A reader (:func:`read_fresh`) trusts it only while each of those files still has exactly
that size and time. Any commit, repair, replacement or deletion since changes at least
one, and the caller takes the full path, which opens the database, checks FAISS and
rebuilds what is stale. The summary is derived data like FAISS: deleting it costs one
slow ``info``.

Standard library only: importing this module must not load numpy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SUMMARY = "info.json"
#: Files an index's info is computed from, relative to its folder.
#: The lookup a one-off query reads instead of DuckDB (:mod:`retrieval.store.lookup`).
LOOKUP_FILES = tuple(f"lookup/{name}" for name in ("windows.npy", "files.jsonl", "files_offsets.npy",
                                                   "files_ids.npy", "postprocess.npz", "lookup.json"))
WATCHED = ("meta.duckdb", "meta.duckdb.wal", "windows.faiss", "windows.faiss.json", "files.faiss",
           "files.faiss.json", *LOOKUP_FILES)
#: Keys of :meth:`Store.info` that describe this read, not the index: set by the reader.
PER_READ = ("reading", "snapshot", "repaired_on_open")


def stamp(root: Path) -> dict[str, list[int] | None]:
    """``{name: [size bytes, mtime ns] or None when absent}`` for each watched file of ``root``."""
    out: dict[str, list[int] | None] = {}
    for name in WATCHED:
        try:
            st = os.stat(Path(root) / name)
        except FileNotFoundError:
            out[name] = None
        else:
            out[name] = [st.st_size, st.st_mtime_ns]
    return out


def write(root: Path, info: dict[str, Any], stamped: dict[str, list[int] | None]) -> None:
    """Record ``info`` with the stamp ``stamped`` its files had when it was computed.

    The caller takes the stamp while it still holds the database (so no writer can change
    the files between the info and the stamp) and checks it again after closing.
    Written to a temporary name and moved into place, so a reader sees the old summary or
    the new one, never half of one. A read-only folder is skipped: the summary is optional.
    """
    root = Path(root)
    body = {"stamp": stamped, "info": info}
    tmp = root / f".{SUMMARY}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(body, default=str))
        os.replace(tmp, root / SUMMARY)
    except OSError:
        tmp.unlink(missing_ok=True)


def read_fresh(root: Path) -> dict[str, Any] | None:
    """The recorded info of ``root`` when none of its watched files changed since; else None.

    The per-read keys are filled in as a read of the live database would: ``reading``
    ``"live"``, the published ``snapshot``, nothing repaired.
    """
    from retrieval.store import snapshot

    root = Path(root)
    try:
        body = json.loads((root / SUMMARY).read_text())
        if not isinstance(body, dict) or body.get("stamp") != stamp(root) or not isinstance(body.get("info"), dict):
            return None
    except (OSError, ValueError):
        return None
    info = dict(body["info"])
    info.update(reading="live", snapshot=snapshot.describe(snapshot.read_pointer(root)))
    if "consistent" in info:
        info["repaired_on_open"] = []
    return info
