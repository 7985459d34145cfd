"""Window labels, trained heads and window scores: the tables behind ``retrieve label/train/score/suggest``.

Window labels live in their own file, ``labels.sqlite`` beside ``meta.duckdb``
(:mod:`retrieval.store.label_file`): a label click writes there directly, in milliseconds
whatever the size of the index, and every reader (the server, on its snapshot; the CLI)
reads the labels live. A label names a span of a file's *content* (blake2b of its bytes), in
samples at the recipe's rate, never a row id, so it survives a move, a rename and a
re-ingest: a window takes the label of a span that covers half of it, or half of the span
(so a short event labels the windows holding it). Labels are resolved onto the windows of
whatever ``meta.duckdb`` (live or a snapshot) the store reads.

Heads and scores stay in ``meta.duckdb`` (created on first write):
    heads          one row per target: the head's kind, the recipe hash it was trained on, a
                   JSON summary of its training data and its parameters (``.npz`` bytes).
    window_scores  one row per (window_id, target): the head's score (probability, 0..1).
                   Scores are derived data: re-scoring replaces a target's rows. The file-level
                   maximum is also kept as a ``files`` column ``score_<target>``, so ``--where``
                   and ranking can use it.

Every head or score write bumps the manifest's ``labels_version`` (and ``metadata_version`` when
a ``files`` column changes), so snapshots are republished and search caches reload.

Older indexes kept their labels in a ``meta.duckdb`` table ``window_labels``. Until a writer
opens such an index (:meth:`LabelStore.import_legacy`, called by every writer's open, copies
them to ``labels.sqlite`` and drops the table), readers read both, the file winning for a span
labelled in both; once imported, the table (still in older snapshots) is ignored.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from retrieval.errors import InputError
from retrieval.store.db import MetadataDB, arrow_of, quote_ident
from retrieval.store.label_file import COLUMNS, KEY, LabelFile

LabelValue = Literal["positive", "negative", "uncertain"]
LABEL_VALUES: tuple[LabelValue, ...] = ("positive", "negative", "uncertain")
#: Spellings accepted for each label value (CSV cells, API calls).
LABEL_ALIASES: dict[str, LabelValue] = {
    **{v: v for v in LABEL_VALUES}, "pos": "positive", "+": "positive", "1": "positive", "yes": "positive",
    "true": "positive", "neg": "negative", "-": "negative", "0": "negative", "no": "negative",
    "false": "negative", "?": "uncertain", "unsure": "uncertain",
}
_TARGET = re.compile(r"^[A-Za-z0-9_]{1,60}$")
SCORE_PREFIX = "score_"
_INTS = ("start_sample", "end_sample", "labelled_at_us", "seq")


def check_target(name: str) -> str:
    """A target name usable in a column name (``score_<target>``): letters, digits, underscore."""
    text = str(name).strip()
    if not _TARGET.match(text):
        raise InputError(f"target {name!r} must be 1-60 letters, digits or underscores (it names the column "
                         f"score_{name}); e.g. rooster or car_horn")
    return text


def label_value(value: object) -> LabelValue:
    """``value`` as one of :data:`LABEL_VALUES`, or an InputError listing the accepted spellings."""
    key = str(value).strip().lower()
    if key.endswith(".0"):
        key = key[:-2]
    if key not in LABEL_ALIASES:
        raise InputError(f"label {value!r} is not one of {', '.join(LABEL_VALUES)} "
                         f"(also accepted: {', '.join(k for k in LABEL_ALIASES if k not in LABEL_VALUES)})")
    return LABEL_ALIASES[key]


def _local_us(stamps: pd.Series) -> list[int]:
    """Naive local-time timestamps (what DuckDB's ``current_timestamp`` stored in a ``TIMESTAMP``
    column) as microseconds since the Unix epoch; the inverse of how :meth:`LabelStore.labels`
    shows ``labelled_at``."""
    out = []
    for t in stamps.tolist():
        if pd.isna(t):  # no time recorded: older than every label
            out.append(0)
            continue
        d = pd.Timestamp(t).to_pydatetime()
        out.append(int(time.mktime(d.timetuple())) * 10**6 + d.microsecond)  # exact: no float microseconds
    return out


def _local_time(us: int) -> datetime:
    """Microseconds since the Unix epoch as a naive local-time timestamp, exact to the microsecond."""
    return datetime.fromtimestamp(us // 10**6) + timedelta(microseconds=us % 10**6)


class LabelStore:
    """Typed access to one index's labels (``labels.sqlite`` in ``root``) and to the head and
    score tables of its :class:`MetadataDB` (the live database or a snapshot of it)."""

    def __init__(self, db: MetadataDB, root: Path) -> None:
        self.db = db
        self.con = db.con
        self.file = LabelFile(root)

    # -- schema ----------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the head and score tables (idempotent; needs a writable database)."""
        self.con.execute("CREATE TABLE IF NOT EXISTS heads (target VARCHAR, kind VARCHAR, recipe_hash VARCHAR, "
                         "summary VARCHAR, params BLOB, trained_at TIMESTAMP DEFAULT current_timestamp)")
        self.con.execute("CREATE TABLE IF NOT EXISTS window_scores (window_id BIGINT, target VARCHAR, score REAL)")

    def _has(self, table: str) -> bool:
        return self.db.has_table(table)

    def _bump(self, metadata: bool = False) -> None:
        self.db.set("labels_version", str(int(self.db.get("labels_version") or 0) + 1))
        if metadata:
            self.db.bump_metadata_version()

    # -- labels ----------------------------------------------------------------------------

    def add_labels(self, rows: pd.DataFrame) -> int:
        """Upsert labels in one transaction of ``labels.sqlite``; ``rows`` has ``content_hash,
        start_sample, end_sample, target, label, source``. A later label for the same span and
        target replaces the earlier one. Returns rows written. ``meta.duckdb`` is not touched."""
        if not len(rows):
            return 0
        return self.file.upsert(rows.drop_duplicates(list(KEY), keep="last"))

    def stored(self, targets: Sequence[str] | None = None) -> pd.DataFrame:
        """Every stored label of ``targets`` (None: all), one row per key (``label_file.COLUMNS``):
        the file's, plus those of an older index's ``window_labels`` table not yet imported.
        Reads no ``files`` or ``windows`` row: what counting labels needs, at any index size."""
        found, imported = self.file.rows(targets)
        if imported or not self._has("window_labels"):
            return found
        legacy = self._legacy_rows(targets)
        if not len(legacy):
            return found
        legacy = legacy.merge(found[list(KEY)], on=list(KEY), how="left", indicator=True)
        legacy = legacy[legacy["_merge"] == "left_only"].drop(columns="_merge")
        return pd.concat([found, legacy[list(COLUMNS)]], ignore_index=True) if len(found) else legacy[list(COLUMNS)]

    def _legacy_rows(self, targets: Sequence[str] | None) -> pd.DataFrame:
        """The labels of ``targets`` (None: all) in an older index's ``meta.duckdb`` table
        ``window_labels`` (which must exist), with ``labelled_at_us`` from its local-time
        ``labelled_at`` and ``seq`` 0 (older than every label of the file)."""
        where, params = self._target_filter(targets, "w")
        legacy = arrow_of(self.con.sql(
            "SELECT content_hash, start_sample, end_sample, target, label, source, labelled_at, 0::BIGINT AS seq "
            f"FROM window_labels w WHERE {where}", params=params)).to_pandas()
        legacy["labelled_at_us"] = _local_us(legacy["labelled_at"])
        return legacy

    @contextlib.contextmanager
    def _registered(self, targets: Sequence[str] | None) -> Iterator[bool]:
        """The labels of ``targets`` as the view ``_labels`` of this connection (``label_file.COLUMNS``)
        while the block runs; yields whether there are any."""
        stored = self.stored(targets)
        tbl = pa.table({c: pa.array(stored[c].tolist(), pa.int64() if c in _INTS else pa.string())
                        for c in COLUMNS})
        self.con.register("_labels", tbl)
        try:
            yield bool(tbl.num_rows)
        finally:
            self.con.unregister("_labels")

    def labels(self, targets: Sequence[str] | None = None) -> pd.DataFrame:
        """Stored labels with where they resolve to now: one row per label, ``path`` None when no
        indexed file holds that content (``content_hash, start_sample, end_sample, target, label,
        source, labelled_at, path``; ``labelled_at`` in local time, as a naive timestamp)."""
        cols = ["content_hash", "start_sample", "end_sample", "target", "label", "source", "labelled_at", "path"]
        with self._registered(targets) as any_:
            if not any_:
                return pd.DataFrame({c: [] for c in cols})
            out = arrow_of(self.con.sql(
                "SELECT w.*, (SELECT min(f.path) FROM files f WHERE f.content_hash = w.content_hash) AS path "
                "FROM _labels w ORDER BY w.target, path, w.start_sample")).to_pandas()
        out["labelled_at"] = [_local_time(us) for us in out["labelled_at_us"].tolist()]
        return out[cols]

    def window_labels(self, targets: Sequence[str]) -> pd.DataFrame:
        """Labels resolved onto the windows of this database: ``window_id, target, label`` (one row
        per window and target; where spans disagree, the most recent label wins). A window takes a
        span's label when they overlap by at least half of the shorter of the two; ``uncertain``
        rows are kept."""
        with self._registered(targets) as any_:
            if not any_:
                return pd.DataFrame({"window_id": pd.Series([], dtype="int64"), "target": [], "label": []})
            return arrow_of(self.con.sql(
                "SELECT window_id, target, label FROM ("
                " SELECT s.window_id, w.target, w.label, row_number() OVER (PARTITION BY s.window_id, w.target "
                "  ORDER BY w.labelled_at_us DESC, w.seq DESC) AS r"
                " FROM _labels w JOIN files f ON f.content_hash = w.content_hash"
                " JOIN windows s ON s.file_id = f.file_id AND s.level = 'window' AND s.vector IS NOT NULL"
                " AND 2 * (least(s.end_sample, w.end_sample) - greatest(s.start_sample, w.start_sample))"
                "     >= least(s.end_sample - s.start_sample, w.end_sample - w.start_sample)"
                " AND least(s.end_sample, w.end_sample) > greatest(s.start_sample, w.start_sample)"
                ") WHERE r = 1 ORDER BY window_id, target")).to_pandas()

    def remove_labels(self, targets: Sequence[str]) -> int:
        """Delete every label of ``targets``; returns how many went. Labels of an older index not
        yet imported are deleted from ``meta.duckdb`` (which then needs a writable store)."""
        n = self.file.delete(list(targets))
        if not self.file.legacy_imported() and self._has("window_labels"):
            where, params = self._target_filter(targets, "window_labels")
            n += self.con.execute(f"SELECT count(*) FROM window_labels WHERE {where}", params).fetchall()[0][0]
            self.con.execute(f"DELETE FROM window_labels WHERE {where}", params)
        return int(n)

    def targets(self) -> list[str]:
        """Targets with labels or a head, sorted."""
        names = set(self.stored(None)["target"].tolist())
        if self._has("heads"):
            names |= {r[0] for r in self.con.execute("SELECT DISTINCT target FROM heads").fetchall()}
        return sorted(names)

    def import_legacy(self) -> int:
        """Move the labels of an older index's ``meta.duckdb`` table ``window_labels`` into
        ``labels.sqlite`` and drop the table (writers only; called when one opens the index).
        Returns labels copied. Crash-safe: the copy and its record commit together in the file,
        the table is dropped after; a repeat copies nothing and drops the table."""
        if not self._has("window_labels"):
            return 0
        copied = 0
        if not self.file.legacy_imported():
            legacy = self._legacy_rows(None).sort_values("labelled_at_us").drop_duplicates(list(KEY), keep="last")
            copied = self.file.import_legacy(legacy)
        with self.db.transaction():
            self.con.execute("DROP TABLE window_labels")
        return copied

    @staticmethod
    def _target_filter(targets: Sequence[str] | None, alias: str) -> tuple[str, list[object]]:
        if targets is None:
            return "TRUE", []
        return f"{alias}.target IN (SELECT unnest(?::VARCHAR[]))", [list(targets)]

    # -- windows ---------------------------------------------------------------------------

    def windows_of(self, paths: Sequence[str]) -> pd.DataFrame:
        """``path, root, content_hash, n_samples`` of indexed files with these relative paths."""
        want = pa.table({"path": list(dict.fromkeys(paths))})
        self.con.register("_label_paths", want)
        try:
            return arrow_of(self.con.sql(
                "SELECT f.path, f.root, f.content_hash, f.n_samples, f.sample_rate FROM files f "
                "JOIN _label_paths p USING (path) ORDER BY f.path")).to_pandas()
        finally:
            self.con.unregister("_label_paths")

    def window_spans(self, window_ids: Sequence[int]) -> pd.DataFrame:
        """``window_id, content_hash, start_sample, end_sample, path`` of indexed windows."""
        ids = np.asarray(window_ids, np.int64)
        want = pa.table({"window_id": ids})
        bounds = [int(ids.min()), int(ids.max())] if len(ids) else [0, -1]
        self.con.register("_label_ids", want)
        try:  # the range lets DuckDB skip the row groups of other ids (rows are stored in id order)
            return arrow_of(self.con.sql(
                "SELECT s.window_id, f.content_hash, s.start_sample, s.end_sample, f.path FROM windows s "
                "JOIN files f USING (file_id) JOIN _label_ids USING (window_id) "
                "WHERE s.window_id BETWEEN ? AND ? ORDER BY s.window_id", params=bounds)).to_pandas()
        finally:
            self.con.unregister("_label_ids")

    # -- heads -----------------------------------------------------------------------------

    def save_head(self, target: str, kind: str, recipe_hash: str, summary: dict, params: dict[str, np.ndarray]) -> None:
        """Store (replace) the head of ``target``."""
        self.ensure()
        buf = io.BytesIO()
        np.savez(buf, **params)
        self.con.execute("DELETE FROM heads WHERE target = ?", [target])
        self.con.execute("INSERT INTO heads (target, kind, recipe_hash, summary, params) VALUES (?, ?, ?, ?, ?)",
                         [target, kind, recipe_hash, json.dumps(summary), buf.getvalue()])
        self._bump()

    def head(self, target: str) -> tuple[str, str, dict, dict[str, np.ndarray], str] | None:
        """``(kind, recipe_hash, summary, params, trained_at)`` of ``target``'s head, or None."""
        if not self._has("heads"):
            return None
        rows = self.con.execute("SELECT kind, recipe_hash, summary, params, trained_at::VARCHAR FROM heads "
                                "WHERE target = ?", [target]).fetchall()
        if not rows:
            return None
        kind, recipe_hash, summary, blob, when = rows[0]
        with np.load(io.BytesIO(blob)) as z:
            params = {k: z[k] for k in z.files}
        return kind, recipe_hash, json.loads(summary), params, when

    def heads(self) -> pd.DataFrame:
        """``target, kind, recipe_hash, summary, trained_at`` of every stored head."""
        if not self._has("heads"):
            return pd.DataFrame({c: [] for c in ("target", "kind", "recipe_hash", "summary", "trained_at")})
        return arrow_of(self.con.sql("SELECT target, kind, recipe_hash, summary, trained_at FROM heads "
                                     "ORDER BY target")).to_pandas()

    # -- scores ----------------------------------------------------------------------------

    def save_scores(self, target: str, window_ids: np.ndarray, scores: np.ndarray) -> str:
        """Replace ``target``'s window scores (``(n,)`` ids and float32 scores) and set the files column
        ``score_<target>`` to each file's best window score (NULL for files without one).
        Returns the column name."""
        self.ensure()
        column = SCORE_PREFIX + target
        tbl = pa.table({"window_id": np.asarray(window_ids, np.int64),
                        "score": np.asarray(scores, np.float32)})
        self.con.execute("DELETE FROM window_scores WHERE target = ?", [target])
        self.con.register("_scores", tbl)
        try:
            self.con.execute("INSERT INTO window_scores SELECT window_id, ?, score FROM _scores", [target])
            col = quote_ident(column)
            self.con.execute(f"ALTER TABLE files ADD COLUMN IF NOT EXISTS {col} REAL")
            self.con.execute(f"UPDATE files SET {col} = NULL")
            self.con.execute(
                f"UPDATE files SET {col} = m.best FROM (SELECT s.file_id, max(x.score) AS best FROM _scores x "
                "JOIN windows s USING (window_id) GROUP BY s.file_id) m WHERE files.file_id = m.file_id")
        finally:
            self.con.unregister("_scores")
        self._bump(metadata=True)
        return column

    def scores(self, target: str) -> tuple[np.ndarray, np.ndarray]:
        """``(window_ids (n,) int64, scores (n,) float32)`` of ``target`` over windows still indexed."""
        if not self._has("window_scores"):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        tbl = arrow_of(self.con.sql(
            "SELECT x.window_id, x.score FROM window_scores x JOIN windows s USING (window_id) "
            "WHERE x.target = ? ORDER BY x.window_id", params=[target]))
        return (tbl.column("window_id").to_numpy().astype(np.int64),
                tbl.column("score").to_numpy().astype(np.float32))
