"""Few-shot learning curves: the trained head against class prototypes and kNN, n labelled examples per class.

Protocol (``retrieve eval --few-shot 1,2,4,8,16,32``):

* Folds. With groups (``--group-column speaker``) each group is held out in turn: the
  test items are that group's, and the support examples come from the other groups only,
  so no speaker (recording, site) is on both sides. Without groups, five stratified folds.
* Draws. In each fold, ``draws`` times: n items per class are drawn (seeded) from the
  fold's training pool as the support set (all of a class's items when it has fewer).
* Methods, all scoring every test item for every class:
    - ``head``: one :func:`retrieval.heads.fit_head` per class (one-vs-rest), the other
      classes' support items as its negatives (labelled data only);
    - ``head_weak``: the same, plus the rest of the training pool as weak negatives of
      weight ``weak_negatives``: what ``retrieve train`` fits by default. Where a class is
      common (FSDD: 10 % of the pool) its unlabelled members are wrong negatives, and this
      costs the head dearly (docs/bench_adapt.md); for a rare target they are nearly all right;
    - ``prototype``: cosine to the class prototype (the normalised mean of its support vectors);
    - ``knn``: the similarity-weighted vote of the ``k`` nearest support items (the same
      rule as ``retrieve classify``), cosine similarity per class.
* Metrics per (fold, draw): macro ROC-AUC and cmAP (class-wise average precision, macro)
  from ``sklearn.metrics`` over the classes present in the test items, and top-1 accuracy.
  Each figure is the mean over all (fold, draw) replicates with a 95 % t interval;
  head-minus-kNN and head-minus-prototype differences are paired by replicate.

Single-label: an item's first label (``a;b`` keeps ``a``); unlabelled items are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from retrieval.errors import InputError
from retrieval.heads import fit_head

METHODS = ("head", "head_weak", "prototype", "knn")
METRICS = ("macro_roc_auc", "cmap", "top1")
KNN_K = 5
DEFAULT_DRAWS = 5
#: At most this many pool items (a seeded sample) join each head fit as weak negatives.
MAX_WEAK_EVAL = 5000


@dataclass
class FewShotResult:
    """``table``: one row per (shots, method, metric) with ``mean, ci_low, ci_high, replicates``;
    ``diffs``: the paired head-minus-other differences (``shots, other, metric, mean, ci_low, ci_high``);
    ``replicates``: every (fold, draw, shots, method) row of metrics."""

    table: pd.DataFrame
    diffs: pd.DataFrame
    replicates: pd.DataFrame
    settings: dict = field(default_factory=dict)

    def verdict(self, metric: str = "macro_roc_auc") -> str:
        """Where the head overtakes kNN and prototypes on ``metric`` (CI of the paired difference above 0), or that it doesn't."""
        lines = []
        for other in ("knn", "prototype"):
            d = self.diffs[(self.diffs["other"] == other) & (self.diffs["metric"] == metric)].sort_values("shots")
            wins = d["ci_low"].to_numpy() > 0
            from_n = next((int(d["shots"].iloc[i]) for i in range(len(d)) if wins[i:].all()), None)
            if from_n is None:
                best = d.loc[d["mean"].idxmax()] if len(d) else None
                lines.append(f"the head does not beat {other} on {metric} at every shot count from some n on"
                             + (f" (its best margin: {best['mean']:+.4f} [{best['ci_low']:+.4f}, {best['ci_high']:+.4f}]"
                                f" at n={int(best['shots'])})" if best is not None else ""))
            else:
                r = d[d["shots"] == from_n].iloc[0]
                lines.append(f"the head beats {other} on {metric} from n={from_n} per class on "
                             f"(at n={from_n}: {r['mean']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}], 95% CI)")
        return "; ".join(lines)


def _ci(values: np.ndarray) -> tuple[float, float, float]:
    from scipy import stats

    v = np.asarray(values, float)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return mean, mean - half, mean + half


def class_scores(method: str, x_support: np.ndarray, y_support: np.ndarray, x_test: np.ndarray, n_classes: int, *,
                 x_weak: np.ndarray | None = None, weak_negatives: float = 0.1, k: int = KNN_K,
                 seed: int = 0) -> np.ndarray:
    """``(n_test, n_classes)`` float32 scores of one method from a support set.

    Args:
        x_support: ``(s, D)`` unit vectors; ``y_support``: ``(s,)`` int class indices.
        x_test: ``(t, D)`` unit vectors.
        x_weak: ``(w, D)`` unlabelled vectors, weak negatives of the head (weight ``weak_negatives``).
    """
    if method == "prototype":
        protos = np.zeros((n_classes, x_support.shape[1]), np.float32)
        for c in range(n_classes):
            if (y_support == c).any():
                m = x_support[y_support == c].mean(axis=0)
                protos[c] = m / max(float(np.linalg.norm(m)), 1e-12)
        return x_test @ protos.T
    if method == "knn":
        sims = x_test @ x_support.T
        kk = min(k, len(x_support))
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        out = np.zeros((len(x_test), n_classes), np.float32)
        rows = np.arange(len(x_test))[:, None]
        np.add.at(out, (np.broadcast_to(rows, top.shape), y_support[top]), np.maximum(sims[rows, top], 0.0))
        return out
    if method in ("head", "head_weak"):
        weak = (np.zeros((0, x_support.shape[1]), np.float32)
                if method == "head" or x_weak is None or weak_negatives <= 0 else x_weak)
        x = np.concatenate([x_support, weak])
        w = np.r_[np.ones(len(x_support)), np.full(len(weak), weak_negatives)]
        out = np.zeros((len(x_test), n_classes), np.float32)
        for c in range(n_classes):
            y = np.r_[y_support == c, np.zeros(len(weak), bool)]
            if y.any():
                out[:, c] = fit_head(x, y, w, seed=seed).logits(x_test)
            else:
                out[:, c] = -np.inf
        return out
    raise InputError(f"unknown few-shot method {method!r}; choose one of {', '.join(METHODS)}")


def metrics(scores: np.ndarray, y_test: np.ndarray, n_classes: int) -> dict[str, float]:
    """Macro ROC-AUC and cmAP over the classes with positives in ``y_test``, and top-1 accuracy."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    onehot = np.eye(n_classes, dtype=bool)[y_test]
    present = onehot.any(axis=0) & ~onehot.all(axis=0)
    s = np.nan_to_num(scores[:, present], neginf=-1e30)
    return {"macro_roc_auc": float(roc_auc_score(onehot[:, present], s, average="macro")),
            "cmap": float(average_precision_score(onehot[:, present], s, average="macro")),
            "top1": float((np.argmax(np.nan_to_num(scores, neginf=-1e30), axis=1) == y_test).mean())}


def few_shot(vectors: np.ndarray, labels: Sequence[object], groups: Sequence[object] | None = None,
             shots: Sequence[int] = (1, 2, 4, 8, 16, 32), *, draws: int = DEFAULT_DRAWS,
             weak_negatives: float = 0.1, k: int = KNN_K, seed: int = 0,
             methods: Sequence[str] = METHODS) -> FewShotResult:
    """Run the protocol in the module docstring on ``(n, D)`` unit ``vectors``.

    Raises:
        InputError: fewer than two labelled classes, a shot count below 1, fewer than two
            groups, or draws below 1.
    """
    from retrieval.knn import split_label

    first = [split_label(v)[:1] for v in labels]
    keep = np.array([bool(f) for f in first])
    names = sorted({f[0] for f in first if f})
    if len(names) < 2:
        raise InputError(f"few-shot evaluation needs at least two labelled classes; found {len(names)}")
    if not shots or min(shots) < 1:
        raise InputError(f"--few-shot counts must be 1 or more; got {list(shots)}")
    if draws < 1:
        raise InputError(f"draws must be at least 1; got {draws}")
    x = np.asarray(vectors, np.float32)[keep]
    y = np.array([names.index(f[0]) for f in first if f])
    if groups is not None:
        g = pd.Series(list(groups))[keep].astype(str).to_numpy()
        uniq = sorted(set(g))
        if len(uniq) < 2:
            raise InputError(f"group exclusion needs at least two groups; found {len(uniq)}")
        folds = [(np.flatnonzero(g != u), np.flatnonzero(g == u), u) for u in uniq]
    else:
        from sklearn.model_selection import StratifiedKFold

        n_splits = int(min(5, np.bincount(y).min())) if np.bincount(y).min() >= 2 else 2
        skf = StratifiedKFold(n_splits=max(n_splits, 2), shuffle=True, random_state=seed)
        folds = [(tr, te, f"fold{i}") for i, (tr, te) in enumerate(skf.split(x, y))]
    rng = np.random.default_rng(seed)
    rows = []
    for fold_train, fold_test, fold_name in folds:
        for draw in range(draws):
            for n in sorted(set(int(s) for s in shots)):
                support = np.concatenate([rng.permutation(fold_train[y[fold_train] == c])[:n]
                                          for c in range(len(names))])
                pool = np.setdiff1d(fold_train, support)
                if len(pool) > MAX_WEAK_EVAL:
                    pool = rng.choice(pool, MAX_WEAK_EVAL, replace=False)
                for method in methods:
                    if method == "head_weak" and weak_negatives <= 0:
                        continue
                    s = class_scores(method, x[support], y[support], x[fold_test], len(names), x_weak=x[pool],
                                     weak_negatives=weak_negatives, k=k, seed=seed + draw)
                    rows.append({"fold": fold_name, "draw": draw, "shots": n, "method": method,
                                 **metrics(s, y[fold_test], len(names))})
    reps = pd.DataFrame(rows)
    table, diffs = [], []
    for (n, method), grp in reps.groupby(["shots", "method"]):
        for m in METRICS:
            mean, lo, hi = _ci(grp[m].to_numpy())
            table.append({"shots": n, "method": method, "metric": m, "mean": mean, "ci_low": lo, "ci_high": hi,
                          "replicates": len(grp)})
    if "head" in methods:
        wide = reps.pivot_table(index=["fold", "draw", "shots"], columns="method", values=list(METRICS))
        for other in (m for m in methods if m != "head" and m in set(reps["method"])):
            for m in METRICS:
                d = (wide[(m, "head")] - wide[(m, other)]).groupby(level="shots")
                for n, vals in d:
                    mean, lo, hi = _ci(vals.to_numpy())
                    diffs.append({"shots": n, "other": other, "metric": m, "mean": mean, "ci_low": lo, "ci_high": hi})
    settings = {"classes": len(names), "items": int(len(x)), "folds": len(folds), "draws": draws,
                "grouped": groups is not None, "weak_negatives": weak_negatives, "knn_k": k, "seed": seed}
    return FewShotResult(pd.DataFrame(table), pd.DataFrame(diffs, columns=["shots", "other", "metric", "mean", "ci_low",
                                                                          "ci_high"]), reps, settings)
