"""Window labels, trained heads and window scores: the tables behind ``retrieve label/train/score/suggest``.

Tables (created on first write):
    window_labels  one row per (content_hash, start_sample, end_sample, target): the label
                   (``positive``, ``negative`` or ``uncertain``), its source (``csv:<file>``,
                   ``query:<clip>``, ``api``, ...) and when it was set. A label names a span of
                   a file's *content* (blake2b of its bytes), in samples at the recipe's rate,
                   never a row id, so it survives a move, a rename and a re-ingest: a window
                   takes the label of a span that covers half of it, or half of the span
                   (so a short event labels the windows holding it).
    heads          one row per target: the head's kind, the recipe hash it was trained on, a
                   JSON summary of its training data and its parameters (``.npz`` bytes).
    window_scores  one row per (window_id, target): the head's score (probability, 0..1).
                   Scores are derived data: re-scoring replaces a target's rows. The file-level
                   maximum is also kept as a ``files`` column ``score_<target>``, so ``--where``
                   and ranking can use it.

Every write bumps the manifest's ``labels_version`` (and ``metadata_version`` when a ``files``
column changes), so snapshots are republished and search caches reload.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from retrieval.errors import InputError
from retrieval.store.db import MetadataDB, arrow_of, quote_ident

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


class LabelStore:
    """Typed access to the label, head and score tables of one index's :class:`MetadataDB`."""

    def __init__(self, db: MetadataDB) -> None:
        self.db = db
        self.con = db.con

    # -- schema ----------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the tables (idempotent; needs a writable database)."""
        self.con.execute("CREATE TABLE IF NOT EXISTS window_labels (content_hash VARCHAR, start_sample BIGINT, "
                         "end_sample BIGINT, target VARCHAR, label VARCHAR, source VARCHAR, "
                         "labelled_at TIMESTAMP DEFAULT current_timestamp)")
        self.con.execute("CREATE TABLE IF NOT EXISTS heads (target VARCHAR, kind VARCHAR, recipe_hash VARCHAR, "
                         "summary VARCHAR, params BLOB, trained_at TIMESTAMP DEFAULT current_timestamp)")
        self.con.execute("CREATE TABLE IF NOT EXISTS window_scores (window_id BIGINT, target VARCHAR, score REAL)")

    def _has(self, table: str) -> bool:
        return bool(self.con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                                     [table]).fetchall()[0][0])

    def _bump(self, metadata: bool = False) -> None:
        self.db.set("labels_version", str(int(self.db.get("labels_version") or 0) + 1))
        if metadata:
            self.db.bump_metadata_version()

    # -- labels ----------------------------------------------------------------------------

    def add_labels(self, rows: pd.DataFrame) -> int:
        """Upsert labels; ``rows`` has ``content_hash, start_sample, end_sample, target, label, source``.

        A later label for the same span and target replaces the earlier one. Returns rows written.
        """
        if not len(rows):
            return 0
        self.ensure()
        tbl = pa.Table.from_pandas(rows[["content_hash", "start_sample", "end_sample", "target", "label", "source"]]
                                   .drop_duplicates(["content_hash", "start_sample", "end_sample", "target"],
                                                    keep="last"), preserve_index=False)
        self.con.register("_new_labels", tbl)
        try:
            self.con.execute("DELETE FROM window_labels w USING _new_labels n WHERE w.content_hash = n.content_hash "
                             "AND w.start_sample = n.start_sample AND w.end_sample = n.end_sample "
                             "AND w.target = n.target")
            self.con.execute("INSERT INTO window_labels (content_hash, start_sample, end_sample, target, label, "
                             "source) SELECT content_hash, start_sample, end_sample, target, label, source "
                             "FROM _new_labels")
        finally:
            self.con.unregister("_new_labels")
        self._bump()
        return tbl.num_rows

    def labels(self, targets: Sequence[str] | None = None) -> pd.DataFrame:
        """Stored labels with where they resolve to now: one row per label, ``path`` None when no
        indexed file holds that content (``content_hash, start_sample, end_sample, target, label,
        source, labelled_at, path``)."""
        cols = ["content_hash", "start_sample", "end_sample", "target", "label", "source", "labelled_at", "path"]
        if not self._has("window_labels"):
            return pd.DataFrame({c: [] for c in cols})
        where, params = self._target_filter(targets, "w")
        return arrow_of(self.con.sql(
            "SELECT w.*, (SELECT min(f.path) FROM files f WHERE f.content_hash = w.content_hash) AS path "
            f"FROM window_labels w WHERE {where} ORDER BY w.target, path, w.start_sample",
            params=params)).to_pandas()[cols]

    def window_labels(self, targets: Sequence[str]) -> pd.DataFrame:
        """Labels resolved onto today's windows: ``window_id, target, label`` (one row per window
        and target; where spans disagree, the most recent label wins). A window takes a span's
        label when they overlap by at least half of the shorter of the two; ``uncertain`` rows are kept."""
        if not self._has("window_labels"):
            return pd.DataFrame({"window_id": pd.Series([], dtype="int64"), "target": [], "label": []})
        where, params = self._target_filter(targets, "w")
        return arrow_of(self.con.sql(
            "SELECT window_id, target, label FROM ("
            " SELECT s.window_id, w.target, w.label, row_number() OVER (PARTITION BY s.window_id, w.target "
            "  ORDER BY w.labelled_at DESC) AS r"
            " FROM window_labels w JOIN files f ON f.content_hash = w.content_hash"
            " JOIN windows s ON s.file_id = f.file_id AND s.level = 'window' AND s.vector IS NOT NULL"
            " AND 2 * (least(s.end_sample, w.end_sample) - greatest(s.start_sample, w.start_sample))"
            "     >= least(s.end_sample - s.start_sample, w.end_sample - w.start_sample)"
            " AND least(s.end_sample, w.end_sample) > greatest(s.start_sample, w.start_sample)"
            f" WHERE {where}) WHERE r = 1 ORDER BY window_id, target", params=params)).to_pandas()

    def remove_labels(self, targets: Sequence[str]) -> int:
        """Delete every label of ``targets``; returns how many went."""
        if not self._has("window_labels"):
            return 0
        where, params = self._target_filter(targets, "window_labels")
        n = self.con.execute(f"SELECT count(*) FROM window_labels WHERE {where}", params).fetchall()[0][0]
        self.con.execute(f"DELETE FROM window_labels WHERE {where}", params)
        self._bump()
        return int(n)

    def targets(self) -> list[str]:
        """Targets with labels or a head, sorted."""
        names: set[str] = set()
        if self._has("window_labels"):
            names |= {r[0] for r in self.con.execute("SELECT DISTINCT target FROM window_labels").fetchall()}
        if self._has("heads"):
            names |= {r[0] for r in self.con.execute("SELECT DISTINCT target FROM heads").fetchall()}
        return sorted(names)

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
        want = pa.table({"window_id": np.asarray(window_ids, np.int64)})
        self.con.register("_label_ids", want)
        try:
            return arrow_of(self.con.sql(
                "SELECT s.window_id, f.content_hash, s.start_sample, s.end_sample, f.path FROM windows s "
                "JOIN files f USING (file_id) JOIN _label_ids USING (window_id) ORDER BY s.window_id"
            )).to_pandas()
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
