"""Store format 1 -> 2: "segment" became "window" (issue 16 item 7).

Format 1 (every index written before the rename) named a window row a *segment*:

    table ``segments`` (column ``segment_id``, ``level = 'segment'``), ``files.n_segments``,
    ``window_scores.segment_id``, manifest key ``faiss_segment``,
    ``segments.faiss`` / ``segments.faiss.json`` / ``segments.faiss.<tag>.{exact,ids}.npy``,
    ``segments.search.json`` / ``segments.search.<tag>[.ids].npy``

Format 2 says ``windows``, ``window_id``, ``'window'``, ``n_windows``, ``faiss_window`` and
``windows.*``. A writer migrates an index when it opens it, under the database's exclusive
lock (:class:`~retrieval.store.store.Store` readers open a short writer first; see
:meth:`Store.open`):

1. :func:`migrate_schema`: every rename and the manifest's ``schema_version`` in one
   transaction, so the database is either format 1 or format 2, never half of each.
2. :func:`rename_files`: the derived files, after that commit. Each group's JSON is its
   commit point (as when it is written): members are moved to their new names first, then
   the JSON is written under its new name with the members' new names, and the old JSON
   goes last. A kill at any step leaves the old JSON, so the next writer's open redoes the
   group (moves are skipped for members already moved). Nothing here is truth: a group that
   cannot be moved is rebuilt from DuckDB like any missing FAISS file, vectors are never lost.

Rows, ids, vectors and the generation are unchanged, so a migrated index gives the same
results with the FAISS files it already had.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrieval.store.db import SCHEMA_VERSION

if TYPE_CHECKING:
    from retrieval.store.db import MetadataDB

#: Derived-file groups of format 1: (old prefix, new prefix) of names beside ``meta.duckdb``;
#: each group's commit point is ``<prefix>.json``.
FILE_GROUPS = (("segments.faiss", "windows.faiss"), ("segments.search", "windows.search"))


def needs_migration(db: MetadataDB) -> bool:
    """Whether ``db`` is an older format than :data:`SCHEMA_VERSION` (no version: a new, empty database)."""
    version = db.get("schema_version")
    return version is not None and int(version) < SCHEMA_VERSION


def files_pending(folder: Path) -> bool:
    """Whether ``folder`` still holds a format 1 file group (a migration was interrupted after its commit)."""
    return any((Path(folder) / f"{old}.json").exists() for old, _ in FILE_GROUPS)


def migrate_schema(db: MetadataDB) -> bool:
    """Rename format 1's tables, columns, level values and manifest keys in one transaction
    (the caller holds ``db`` for writing). Returns whether anything was migrated."""
    if not needs_migration(db):
        return False
    con = db.con

    def has(table: str, column: str) -> bool:
        sql = "SELECT count(*) FROM information_schema.columns WHERE table_name = ? AND column_name = ?"
        return bool(con.execute(sql, [table, column]).fetchall()[0][0])

    with db.transaction():
        if db.has_table("segments"):
            con.execute("ALTER TABLE segments RENAME TO windows")
            con.execute("ALTER TABLE windows RENAME COLUMN segment_id TO window_id")
            con.execute("UPDATE windows SET level = 'window' WHERE level = 'segment'")
        if has("files", "n_segments"):
            con.execute("ALTER TABLE files RENAME COLUMN n_segments TO n_windows")
        if has("window_scores", "segment_id"):
            con.execute("ALTER TABLE window_scores RENAME COLUMN segment_id TO window_id")
        con.execute("UPDATE manifest SET key = 'faiss_window' WHERE key = 'faiss_segment'")
        db.set("schema_version", str(SCHEMA_VERSION))
    db.checkpoint()
    return True


def _renamed(value: Any, old: str, new: str) -> Any:
    """``value`` (a JSON document) with every string naming a file of the ``old`` group renamed."""
    if isinstance(value, str) and value.startswith(old + "."):
        return new + value[len(old):]
    if isinstance(value, dict):
        return {k: _renamed(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, old, new) for v in value]
    return value


def rename_files(folder: Path) -> list[str]:
    """Move format 1's derived files in ``folder`` to format 2's names (see the module docstring);
    returns the groups moved. Idempotent; call it after :func:`migrate_schema`, as a writer."""
    folder = Path(folder)
    moved = []
    for old, new in FILE_GROUPS:
        commit = folder / f"{old}.json"
        try:
            meta = json.loads(commit.read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            meta = None  # damaged: the group is rebuilt from DuckDB, like any damaged derived file
        for member in sorted(folder.glob(f"{old}*")):
            if member != commit and not member.name.endswith(".tmp"):
                os.replace(member, folder / (new + member.name[len(old):]))
        if meta is not None:
            tmp = folder / f".{new}.json.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(_renamed(meta, old, new)))
            os.replace(tmp, folder / f"{new}.json")
        commit.unlink()
        moved.append(old)
    return moved
