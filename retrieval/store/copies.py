"""DuckDB tables of content identity: copy frames per file, and the duplicates found.

Tables:
    copy_frames      file_id, version (``features.FEATURE_VERSION``), n_frames, frames BLOB
                     (``(n_frames, BANDS)`` uint8, row-major; see :mod:`retrieval.copies.features`)
    duplicate_pairs  one row per verified pair: the container ``a`` and the contained ``b``
                     (file ids), where ``b`` lies in ``a`` (``a_start_s``, ``a_end_s``) and which
                     part of ``b`` that is (``b_start_s``, ``b_end_s``), the match ``confidence``,
                     ``gain_db`` (level of b minus a), ``offset_s`` and ``duration_ratio`` (b/a),
                     ``group_id`` (the smallest file id of its group)
    files.duplicate_of  the path of the group's first file (longest, then smallest id) on
                     every other member, NULL elsewhere: ``--where "duplicate_of IS NOT NULL"``

Rows of files that ingest removed are ignored by every read (joined with ``files``) and
dropped by :meth:`CopyStore.prune`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from retrieval.store.db import MetadataDB

PAIR_COLUMNS = ("a_id", "b_id", "a_start_s", "a_end_s", "b_start_s", "b_end_s", "confidence", "gain_db",
                "offset_s", "duration_ratio", "group_id")


@dataclass(frozen=True)
class PairRow:
    """One verified duplicate pair (see the module docstring for the fields)."""

    a_id: int
    b_id: int
    a_start_s: float
    a_end_s: float
    b_start_s: float
    b_end_s: float
    confidence: float
    gain_db: float
    offset_s: float
    duration_ratio: float
    group_id: int


class CopyStore:
    """Typed access to the copy tables of one index's :class:`MetadataDB`."""

    def __init__(self, db: MetadataDB) -> None:
        self.db = db
        self._created = False
        if not db.read_only:
            self.create()

    def create(self) -> None:
        con = self.db.con
        con.execute("CREATE TABLE IF NOT EXISTS copy_frames (file_id BIGINT, version INTEGER, n_frames INTEGER, "
                    "frames BLOB)")
        con.execute("CREATE TABLE IF NOT EXISTS duplicate_pairs (a_id BIGINT, b_id BIGINT, a_start_s DOUBLE, "
                    "a_end_s DOUBLE, b_start_s DOUBLE, b_end_s DOUBLE, confidence DOUBLE, gain_db DOUBLE, "
                    "offset_s DOUBLE, duration_ratio DOUBLE, group_id BIGINT)")
        self._created = True  # both tables exist: _has need not ask the catalogue

    def _has(self, table: str) -> bool:
        if self._created:
            return True
        return bool(self.db.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).fetchall()[0][0])

    # -- frames ----------------------------------------------------------------------------

    def put_frames(self, items: Sequence[tuple[int, np.ndarray]], version: int) -> None:
        """Store ``(file_id, (T, BANDS) uint8 frames)`` pairs, replacing older rows of those files."""
        if not items:
            return
        ids = [int(i) for i, _ in items]
        self.db.con.execute("DELETE FROM copy_frames WHERE file_id IN (SELECT unnest(?::BIGINT[]))", [ids])
        table = pa.table({
            "file_id": pa.array(ids, pa.int64()),
            "version": pa.array([version] * len(items), pa.int32()),
            "n_frames": pa.array([int(f.shape[0]) for _, f in items], pa.int32()),
            "frames": pa.array([np.ascontiguousarray(f, np.uint8).tobytes() for _, f in items], pa.binary()),
        })
        self.db.con.register("_copy_batch", table)
        try:
            self.db.con.execute("INSERT INTO copy_frames SELECT * FROM _copy_batch").fetchall()
        finally:
            self.db.con.unregister("_copy_batch")

    def ids_of(self, keys: Sequence[tuple[str | None, str]]) -> dict[tuple[str | None, str], int]:
        """``(root, path) -> file_id`` for those of ``keys`` that are indexed."""
        if not keys:
            return {}
        table = pa.table({"root": [k[0] for k in keys], "path": [k[1] for k in keys]})
        self.db.con.register("_keys", table)
        try:
            rows = self.db.con.execute("SELECT f.root, f.path, f.file_id FROM files f JOIN _keys k "
                                       "ON f.path = k.path AND f.root IS NOT DISTINCT FROM k.root").fetchall()
        finally:
            self.db.con.unregister("_keys")
        return {(r[0], r[1]): int(r[2]) for r in rows}

    def missing(self, version: int) -> list[tuple[int, str, str | None]]:
        """``(file_id, path, root)`` of ``ok`` files with no frames of ``version``, by id."""
        if not self._has("copy_frames"):
            return [(r[0], r[1], r[2]) for r in self.db.con.execute(
                "SELECT file_id, path, root FROM files WHERE status = 'ok' ORDER BY file_id").fetchall()]
        return [(r[0], r[1], r[2]) for r in self.db.con.execute(
            "SELECT f.file_id, f.path, f.root FROM files f LEFT JOIN copy_frames c "
            "ON c.file_id = f.file_id AND c.version = ? WHERE c.file_id IS NULL AND f.status = 'ok' "
            "ORDER BY f.file_id", [version]).fetchall()]

    def frames(self, bands: int, version: int, file_ids: Iterable[int] | None = None) -> dict[int, np.ndarray]:
        """``file_id -> (T, bands) uint8`` for indexed files with frames of ``version``."""
        if not self._has("copy_frames"):
            return {}
        sql = ("SELECT c.file_id, c.n_frames, c.frames FROM copy_frames c JOIN files f ON f.file_id = c.file_id "
               "WHERE c.version = ?")
        params: list = [version]
        if file_ids is not None:
            sql += " AND c.file_id IN (SELECT unnest(?::BIGINT[]))"
            params.append([int(i) for i in file_ids])
        out: dict[int, np.ndarray] = {}
        for fid, n, blob in self.db.con.execute(sql, params).fetchall():
            out[int(fid)] = np.frombuffer(blob, np.uint8).reshape(int(n), bands)
        return out

    def copy_frames_of(self, source_id: int, target_id: int) -> None:
        """Give ``target_id`` the frames of ``source_id`` (a byte-identical copy)."""
        self.db.con.execute("INSERT INTO copy_frames SELECT ?, version, n_frames, frames FROM copy_frames "
                            "WHERE file_id = ?", [target_id, source_id])

    def prune(self) -> int:
        """Drop frames and pairs of files no longer indexed; returns frame rows dropped."""
        if not self._has("copy_frames"):
            return 0
        n = self.db.con.execute("SELECT count(*) FROM copy_frames WHERE file_id NOT IN (SELECT file_id FROM files)"
                                ).fetchall()[0][0]
        self.db.con.execute("DELETE FROM copy_frames WHERE file_id NOT IN (SELECT file_id FROM files)")
        self.db.con.execute("DELETE FROM duplicate_pairs WHERE a_id NOT IN (SELECT file_id FROM files) "
                            "OR b_id NOT IN (SELECT file_id FROM files)")
        return int(n)

    # -- duplicates ------------------------------------------------------------------------

    def file_table(self) -> list[tuple[int, str, str | None, float]]:
        """``(file_id, path, root, duration_s)`` of every indexed file, by id."""
        return [(r[0], r[1], r[2], r[3]) for r in self.db.con.execute(
            "SELECT file_id, path, root, duration_s FROM files ORDER BY file_id").fetchall()]

    def identical_groups(self) -> list[list[int]]:
        """File ids sharing a content hash (byte-identical copies), groups of two or more."""
        rows = self.db.con.execute(
            "SELECT list(file_id ORDER BY file_id) FROM files GROUP BY content_hash HAVING count(*) > 1").fetchall()
        return [list(r[0]) for r in rows]

    def replace_pairs(self, pairs: Sequence[PairRow], duplicate_of: dict[int, str]) -> None:
        """Replace every stored pair with ``pairs``, and set ``files.duplicate_of`` from ``duplicate_of``
        (file id -> path of its group's first file; other files get NULL)."""
        con = self.db.con
        con.execute("DELETE FROM duplicate_pairs")
        if pairs:
            table = pa.table({c: [getattr(p, c) for p in pairs] for c in PAIR_COLUMNS})
            con.register("_pairs", table)
            try:
                con.execute(f"INSERT INTO duplicate_pairs SELECT {', '.join(PAIR_COLUMNS)} FROM _pairs").fetchall()
            finally:
                con.unregister("_pairs")
        con.execute("ALTER TABLE files ADD COLUMN IF NOT EXISTS duplicate_of VARCHAR")
        con.execute("UPDATE files SET duplicate_of = NULL WHERE duplicate_of IS NOT NULL")
        if duplicate_of:
            con.register("_dup", pa.table({"file_id": list(duplicate_of), "of": list(duplicate_of.values())}))
            try:
                con.execute("UPDATE files SET duplicate_of = _dup.of FROM _dup WHERE files.file_id = _dup.file_id"
                            ).fetchall()
            finally:
                con.unregister("_dup")
        self.db.bump_metadata_version()

    def pairs(self) -> list[PairRow]:
        """Stored pairs of files still indexed, by group then confidence (best first)."""
        if not self._has("duplicate_pairs"):
            return []
        rows = self.db.con.execute(
            f"SELECT {', '.join('p.' + c for c in PAIR_COLUMNS)} FROM duplicate_pairs p "
            "JOIN files a ON a.file_id = p.a_id JOIN files b ON b.file_id = p.b_id "
            "ORDER BY p.group_id, p.confidence DESC, p.a_id, p.b_id").fetchall()
        return [PairRow(*r) for r in rows]
