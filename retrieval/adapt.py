"""The agile-modelling loop on one index: label windows, train a head, score every window, suggest the next labels.

    >>> ad = Index.open("indexes/birds", writable=True).adapter()
    >>> ad.label("dawn/0412.wav", "rooster", "positive", start_s=3.0, end_s=5.0)
    >>> ad.train(["rooster"])                 # logistic head, unlabelled windows as weak negatives
    >>> ad.score(["rooster"])                 # window scores + files column score_rooster
    >>> ad.suggest(["rooster"], n=20)         # the windows nearest the decision boundary
    >>> ad.finetune(["rooster"], blocks=2)   # or unfreeze the encoder's last 2 blocks (retrieval.finetune)

Labels are stored by content hash and sample span (:mod:`retrieval.store.labels`), so they
survive moves, renames and re-ingests. Heads train on the index's search vectors
(post-processed, unit length; :mod:`retrieval.heads`) and are refused on an index whose
recipe differs from the one they were trained on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retrieval.errors import InputError
from retrieval.heads import HEAD_KINDS, Head, HeadKind, fit_head
from retrieval.store import Store
from retrieval.store.labels import LabelStore, check_target, label_value

from retrieval.options import STRATEGIES, WEAK_WEIGHT, Strategy  # noqa: E402,F401  (re-exported)
#: At most this many unlabelled windows (a seeded sample) enter a fit as weak negatives.
MAX_WEAK = 20_000
#: The end of a span that covers a whole file, in samples.
WHOLE_FILE = 2**62
_SCORED_KEY = "scored_head_"
#: Margin sampling shortlists this many times ``n`` of the windows nearest a decision boundary
#: and picks ``n`` of them spread out (:func:`pick_windows`). On FSDD's simulated loop this beat
#: plain margin sampling and random sampling (docs/bench_adapt.md); 1 = plain margin sampling.
MARGIN_POOL = 5


class Adapter:
    """Labels, heads, scores and suggestions of one index.

    Labels are written to the index's ``labels.sqlite`` (:mod:`retrieval.store.label_file`), so
    labelling works on any store, a reader of a snapshot included; training and scoring write
    ``meta.duckdb`` and need a writable store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.recipe = store.require_recipe()
        self.labels_db = LabelStore(store.db, store.root)
        self._space: tuple[np.ndarray, np.ndarray, str] | None = None

    # -- labels ----------------------------------------------------------------------------

    def label(self, path: str, target: str, label: str, *, start_s: float | None = None,
              end_s: float | None = None, source: str = "api") -> int:
        """Label a span of an indexed file (the whole file when ``start_s``/``end_s`` are None)."""
        return self.add_labels(pd.DataFrame({"path": [path], "start_s": [start_s], "end_s": [end_s],
                                             "target": [target], "label": [label]}), source=source)

    def add_labels(self, rows: pd.DataFrame, *, source: str = "api") -> int:
        """Store labels given by corpus-relative ``path``, ``start_s``, ``end_s`` (seconds, empty =
        the file's start/end), ``target`` and ``label``. All rows are checked before any is written.

        Raises:
            InputError: a missing column, an unknown path (with examples), a bad target or label,
                or ``end_s <= start_s``.
        """
        missing = [c for c in ("path", "target", "label") if c not in rows.columns]
        if missing:
            raise InputError(f"labels need columns path, start_s, end_s, target, label; missing: {', '.join(missing)}")
        rows = rows.copy()
        for c in ("start_s", "end_s"):
            if c not in rows.columns:
                rows[c] = None
        rows["path"] = rows["path"].astype(str).str.strip().str.replace("\\", "/", regex=False)
        found = self.labels_db.windows_of(rows["path"].tolist()).drop_duplicates("path").set_index("path")
        unknown = sorted(set(rows["path"]) - set(found.index))
        if unknown:
            raise InputError(f"{len(unknown)} labelled path(s) are not in the index, e.g. {unknown[0]!r}; paths are "
                             "relative to the indexed folder, as `retrieve query` prints them")
        sr = self.recipe.sample_rate
        out = []
        for i, r in enumerate(rows.itertuples(index=False)):
            start = 0 if _blank(r.start_s) else int(round(float(r.start_s) * sr))
            end = WHOLE_FILE if _blank(r.end_s) else int(round(float(r.end_s) * sr))
            if end <= start or start < 0:
                raise InputError(f"label row {i + 1} ({r.path}): start_s {r.start_s} .. end_s {r.end_s} is not a "
                                 "span; end_s must be after start_s, both >= 0")
            out.append({"content_hash": found.loc[r.path, "content_hash"], "start_sample": start, "end_sample": end,
                        "target": check_target(r.target), "label": label_value(r.label), "source": source})
        return self.labels_db.add_labels(pd.DataFrame(out))

    def label_csv(self, csv: str | Path) -> int:
        """Labels from a CSV with columns ``path`` (or ``file``), ``start_s``, ``end_s``, ``target``, ``label``."""
        try:
            rows = pd.read_csv(csv, dtype={"path": str, "file": str, "target": str, "label": str})
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read labels CSV {csv}: {exc}") from exc
        rows.columns = [str(c).strip() for c in rows.columns]
        if "path" not in rows.columns and "file" in rows.columns:
            rows = rows.rename(columns={"file": "path"})
        return self.add_labels(rows, source=f"csv:{Path(csv).name}")

    def label_windows(self, window_ids: Sequence[int], target: str, label: str, *, source: str = "api") -> int:
        """Label indexed windows by id (as search results and suggestions name them)."""
        spans = self.labels_db.window_spans(list(window_ids))
        missing = sorted(set(int(s) for s in window_ids) - set(spans["window_id"].tolist()))
        if missing:
            raise InputError(f"no indexed window with id {missing[0]} ({len(missing)} missing); ids are the "
                             "window_id of search results and suggestions")
        rows = spans.assign(target=check_target(target), label=label_value(label), source=source)
        return self.labels_db.add_labels(rows)

    def labels(self, targets: Sequence[str] | None = None) -> pd.DataFrame:
        """Stored labels with their current path and span in seconds (``start_s``, ``end_s``; NaN end = whole file)."""
        out = self.labels_db.labels(None if targets is None else [check_target(t) for t in targets])
        sr = self.recipe.sample_rate
        out["start_s"] = out["start_sample"] / sr
        out["end_s"] = np.where(out["end_sample"] >= WHOLE_FILE, np.nan, out["end_sample"] / sr)
        return out[["target", "label", "path", "start_s", "end_s", "source", "labelled_at", "content_hash"]]

    # -- vectors ---------------------------------------------------------------------------

    def space(self) -> tuple[np.ndarray, np.ndarray]:
        """``(window_ids (n,) int64, search vectors (n, D) float32)`` of every window, cached per generation.

        The vectors are memory-mapped from the store's derived copy (:meth:`Store.search_vectors`),
        so a fresh open neither reads them from DuckDB nor post-processes them again.
        """
        gen = self.store.db.get("generation") or "0"
        if self._space is None or self._space[2] != gen:
            ids, x = self.store.search_vectors("window")
            self._space = (ids, x, gen)
        return self._space[0], self._space[1]

    # -- heads -----------------------------------------------------------------------------

    def train(self, targets: Sequence[str], *, head: HeadKind = "linear", weak_negatives: float = WEAK_WEIGHT,
              max_weak: int = MAX_WEAK, seed: int = 0) -> list[dict]:
        """Fit and store one head per target (one-vs-rest); returns each head's training summary.

        Positives and negatives are the target's labelled windows (``uncertain`` ones are left
        out); up to ``max_weak`` other windows (a seeded sample) join as negatives of weight
        ``weak_negatives`` (0 = none).

        Raises:
            InputError: an unknown head, a negative weight, or a target without positives.
        """
        if head not in HEAD_KINDS:
            raise InputError(f"unknown head {head!r}; choose one of {', '.join(HEAD_KINDS)}")
        if weak_negatives < 0:
            raise InputError(f"--weak-negatives must be >= 0; got {weak_negatives}")
        targets = [check_target(t) for t in targets]
        if not targets:
            raise InputError("name at least one --target")
        ids, x = self.space()
        resolved = self.labels_db.window_labels(targets)
        summaries, fitted = [], []
        for target in targets:
            t0 = time.perf_counter()
            mine = resolved[resolved["target"] == target]
            row_of = np.searchsorted(ids, mine["window_id"].to_numpy(np.int64))
            pos = row_of[(mine["label"] == "positive").to_numpy()]
            neg = row_of[(mine["label"] == "negative").to_numpy()]
            if not len(pos):
                raise InputError(f"target {target!r} has no positive window; label some with `retrieve label`")
            free = np.ones(len(ids), bool)
            free[row_of] = False
            weak = np.flatnonzero(free) if weak_negatives > 0 else np.zeros(0, np.int64)
            if len(weak) > max_weak:
                weak = np.sort(np.random.default_rng(seed).choice(weak, max_weak, replace=False))
            rows = np.concatenate([pos, neg, weak])
            y = np.r_[np.ones(len(pos), bool), np.zeros(len(neg) + len(weak), bool)]
            w = np.r_[np.ones(len(pos) + len(neg)), np.full(len(weak), weak_negatives)]
            fitted.append(fit_head(x[rows], y, w, kind=head, seed=seed))
            summaries.append({"target": target, "head": head, "positives": int(len(pos)), "negatives": int(len(neg)),
                              "uncertain": int((mine["label"] == "uncertain").sum()),
                              "weak_negatives": int(len(weak)), "weak_weight": float(weak_negatives),
                              "windows": int(len(ids)), "seed": seed,
                              "seconds": round(time.perf_counter() - t0, 3)})
        with self.store.db.transaction():
            for s, h in zip(summaries, fitted):
                self.labels_db.save_head(s["target"], h.kind, self.recipe.hash(), s, h.params)
        return summaries

    def finetune(self, targets: Sequence[str], blocks: int, **options: Any) -> dict:
        """Fine-tune the last ``blocks`` transformer blocks of this index's encoder with a head on the
        labelled windows of ``targets`` and write an adapted checkpoint (:func:`retrieval.finetune.finetune`).

        ``options`` are the other fields of :class:`retrieval.finetune.FinetuneOptions` (``epochs``,
        ``patience``, ``lr``, ``head_lr``, ``group_column``, ``seed``, ``device``, ``out``, ...).
        Reads the index only. Returns the summary, with ``model`` (the ``--model`` of a new
        index) and ``command`` (the ``retrieve index`` that builds it).
        """
        from retrieval.finetune import FinetuneOptions, finetune

        return finetune(self, targets, FinetuneOptions(blocks=blocks, **options))

    def head(self, target: str) -> Head:
        """The stored head of ``target``, checked against this index's recipe.

        Raises:
            InputError: no head, or one trained on another recipe (names both hashes and the fix).
        """
        found = self.labels_db.head(check_target(target))
        if found is None:
            raise InputError(f"no head for target {target!r}; train one with `retrieve train --target {target}`")
        kind, recipe_hash, _, params, _ = found
        if recipe_hash != self.recipe.hash():
            raise InputError(f"the head for {target!r} was trained on recipe {recipe_hash}; this index's recipe is "
                             f"{self.recipe.hash()}: retrain it here with `retrieve train --target {target}`")
        return Head(kind, params)  # type: ignore[arg-type]

    def heads(self) -> pd.DataFrame:
        """Stored heads: target, kind, recipe_hash, summary (JSON), trained_at."""
        return self.labels_db.heads()

    # -- scores ----------------------------------------------------------------------------

    def score(self, targets: Sequence[str]) -> list[dict]:
        """Score every window with each target's head; store window scores and the files column
        ``score_<target>`` (each file's best window). Returns ``{target, column, windows, seconds}`` each."""
        heads = {t: self.head(t) for t in (check_target(t) for t in targets)}
        ids, x = self.space()
        out = []
        for target, h in heads.items():
            t0 = time.perf_counter()
            s = h.scores(x)
            with self.store.db.transaction():
                column = self.labels_db.save_scores(target, ids, s)
                self.store.db.set(_SCORED_KEY + target, self._trained_at(target))
            out.append({"target": target, "column": column, "windows": int(len(ids)),
                        "seconds": round(time.perf_counter() - t0, 3)})
        return out

    def _trained_at(self, target: str) -> str:
        found = self.labels_db.head(target)
        return "" if found is None else str(found[4])

    def window_scores(self, target: str) -> tuple[np.ndarray, np.ndarray]:
        """``(window_ids, scores)`` stored for ``target`` by its current head.

        Raises:
            InputError: never scored, or scored by an older head than the stored one.
        """
        target = check_target(target)
        when = self.store.db.get(_SCORED_KEY + target)
        if when is None:
            raise InputError(f"target {target!r} has no scores; run `retrieve score --target {target}`")
        if when != self._trained_at(target):
            raise InputError(f"the scores of {target!r} come from an older head; run `retrieve score --target {target}`")
        return self.labels_db.scores(target)

    # -- suggestions -----------------------------------------------------------------------

    def suggest(self, targets: Sequence[str], n: int = 20, *, strategy: Strategy = "margin",
                seed: int = 0) -> pd.DataFrame:
        """The next ``n`` windows to label, among windows without a label for any of ``targets``.

        ``margin``: nearest a decision boundary (smallest ``|score - 0.5|`` over the targets),
        spread out: ``n`` far-apart windows among the ``MARGIN_POOL * n`` nearest the boundary
        (:func:`pick_windows`); ``top``: highest score over the targets; ``random``: a seeded uniform sample.

        Returns:
            One row per window, best first: ``rank, window_id, path, start_s, end_s``, then
            ``score_<target>`` for each target and ``margin``.
        """
        if strategy not in STRATEGIES:
            raise InputError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if n < 1:
            raise InputError(f"-n must be at least 1; got {n}")
        targets = [check_target(t) for t in targets]
        ids, x = self.space()
        table = np.full((len(ids), len(targets)), np.nan, np.float32)
        for j, t in enumerate(targets):
            sid, s = self.window_scores(t)
            pos = np.searchsorted(ids, sid)
            ok = (pos < len(ids)) & (ids[np.minimum(pos, len(ids) - 1)] == sid)
            table[pos[ok], j] = s[ok]
        labelled = self.labels_db.window_labels(targets)["window_id"].to_numpy(np.int64)
        free = ~np.isin(ids, labelled) & ~np.isnan(table).any(axis=1)
        margin = np.abs(table - 0.5).min(axis=1)
        pick = pick_windows(table, np.flatnonzero(free), n, strategy, seed, vectors=x)
        spans = self.labels_db.window_spans(ids[pick].tolist()).set_index("window_id").loc[ids[pick]]
        sr = self.recipe.sample_rate
        out = pd.DataFrame({"rank": np.arange(1, len(pick) + 1), "window_id": ids[pick],
                            "path": spans["path"].to_numpy(), "start_s": spans["start_sample"].to_numpy() / sr,
                            "end_s": spans["end_sample"].to_numpy() / sr})
        for j, t in enumerate(targets):
            out[f"score_{t}"] = table[pick, j]
        out["margin"] = margin[pick]
        return out


def pick_windows(scores: np.ndarray, candidates: np.ndarray, n: int, strategy: Strategy = "margin",
                 seed: int = 0, *, vectors: np.ndarray | None = None, margin_pool: int = MARGIN_POOL) -> np.ndarray:
    """Rows of ``scores`` (``(N, T)`` probabilities, one column per target) to label next, best first.

    ``candidates`` are the row numbers that may be picked. ``margin``: smallest
    ``min_t |score - 0.5|``; with ``vectors`` (``(N, D)`` float32 unit search vectors) and
    ``margin_pool > 1``, the ``margin_pool * n`` candidates of smallest margin are shortlisted
    and ``n`` of them chosen spread out (:func:`farthest_points`, starting from the smallest
    margin), then returned by margin, so one batch does not ask about ``n`` near-identical
    windows. ``top``: largest ``max_t score``; ``random``: a seeded sample.
    Ties keep row order. Returns at most ``n`` row numbers.
    """
    cand = np.asarray(candidates, np.int64)
    if strategy == "margin":
        margin = np.abs(scores[cand] - 0.5).min(axis=1)
        rank = np.argsort(margin, kind="stable")
        if vectors is None or margin_pool <= 1 or len(cand) <= n:
            return cand[rank[:n]]
        short = rank[:margin_pool * n]
        chosen = np.sort(short[farthest_points(np.asarray(vectors[cand[short]], np.float32), n)])
        return cand[chosen[np.argsort(margin[chosen], kind="stable")]]
    if strategy == "top":
        order = cand[np.argsort(-scores[cand].max(axis=1), kind="stable")]
    elif strategy == "random":
        order = np.random.default_rng(seed).permutation(cand)
    else:
        raise InputError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    return order[:n]


def farthest_points(x: np.ndarray, n: int) -> np.ndarray:
    """Greedy farthest-point (k-center) selection: ``n`` row numbers of ``(m, D)`` unit vectors ``x``.

    Starts at row 0, then adds the row with the largest cosine distance (``1 - x_i . x_j``)
    to its nearest chosen row; ties go to the lower row. Returns ``min(n, m)`` distinct rows,
    in the order chosen.
    """
    m = len(x)
    if m == 0 or n <= 0:
        return np.zeros(0, np.int64)
    chosen = [0]
    dist = 1.0 - x @ x[0]
    dist[0] = -np.inf
    while len(chosen) < min(n, m):
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, 1.0 - x @ x[i])
        dist[chosen] = -np.inf
    return np.asarray(chosen, np.int64)


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or (isinstance(value, str) and not value.strip())


def parse_ranks(text: str | None) -> list[int]:
    """``"1-5,9"`` -> ``[1, 2, 3, 4, 5, 9]`` (1-based result ranks)."""
    if not text:
        return []
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise InputError(f"ranks are numbers and ranges like 1-5,9; got {text!r}") from None
        if a < 1 or b < a:
            raise InputError(f"rank range {part!r} in {text!r} must be 1 or more, low to high")
        out.extend(range(a, b + 1))
    return list(dict.fromkeys(out))
