"""Side-by-side comparison of evaluations on the same items, with a paired bootstrap.

The margin between the best and the runner-up on one metric is the mean, over the
queries both scored, of their per-query difference (for ``knn_accuracy@k``: 1 if the
query's vote was right, else 0). Its confidence interval comes from a paired
bootstrap: resample the queries with replacement (or whole groups, when groups are
given, so that a speaker's correlated queries move together), recompute the mean
difference, and take the percentiles. The resampling is seeded, so a comparison is
reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from retrieval.errors import InputError
from retrieval.evaluate import EvalResult


@dataclass(frozen=True)
class Comparison:
    """Result of :func:`compare`.

    Attributes:
        table: one row per compared name (in the order given), one column per metric
            (every metric any evaluation reported; NaN where one lacks it).
        metric: the metric the winner was chosen on (higher is better).
        winner, runner_up: names; ``runner_up`` is None with one entry.
        margin: winner minus runner-up, mean per-query difference on the shared queries.
        ci_low, ci_high: bootstrap percentile interval of ``margin`` at ``confidence``.
        p_value: share of bootstrap resamples in which the winner is not ahead
            (margin <= 0): a one-sided bootstrap p-value.
        confidence, n_resamples, seed: bootstrap settings.
        unit: ``query`` or ``group``, what was resampled; n_units: how many of them.
    """

    table: pd.DataFrame
    metric: str
    winner: str
    runner_up: str | None
    margin: float
    ci_low: float
    ci_high: float
    p_value: float
    confidence: float
    n_resamples: int
    seed: int
    unit: str
    n_units: int

    def summary(self) -> str:
        """One line, e.g. ``a beats b on knn_accuracy@1 by +0.052 (95% CI +0.031 to +0.074, 1000 query resamples)``."""
        if self.runner_up is None:
            return f"{self.winner} is the only entry ({self.metric} = {self.table.loc[self.winner, self.metric]:.4f})"
        return (f"{self.winner} beats {self.runner_up} on {self.metric} by {self.margin:+.4f} "
                f"({self.confidence:.0%} CI {self.ci_low:+.4f} to {self.ci_high:+.4f}, p = {self.p_value:.3f}, "
                f"{self.n_resamples} resamples of {self.n_units} {'queries' if self.unit == 'query' else 'groups'})")


def per_query(result: EvalResult | np.ndarray | Sequence[float], metric: str) -> pd.Series:
    """Per-query values of ``metric``: a Series indexed by item id.

    An :class:`EvalResult` gives its ``predictions[metric]`` column; an array or list is
    taken as the values themselves, indexed ``0..n-1``.
    """
    if isinstance(result, EvalResult):
        cols = [c for c in result.predictions.columns if "@" in c or c == "map"]
        if metric not in cols:
            raise InputError(f"metric {metric!r} has no per-query values to resample; choose one of: {', '.join(cols)}")
        return result.predictions[metric].astype(float)
    values = np.asarray(result, dtype=np.float64)
    if values.ndim != 1:
        raise InputError(f"per-query values must be 1-D; got shape {values.shape}")
    return pd.Series(values)


def compare(
    results: Mapping[str, EvalResult | np.ndarray | Sequence[float]],
    metric: str = "knn_accuracy@1",
    *,
    groups: Sequence[Any] | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """Compare evaluations of the same items on ``metric`` and bootstrap the winning margin.

    Args:
        results: name -> :class:`EvalResult` (from :func:`retrieval.evaluate.evaluate`) or
            per-query values ``(n,)``. Every entry must cover the same items: EvalResults
            are aligned on their predictions' item ids, arrays by position.
        metric: a per-query metric, e.g. ``knn_accuracy@1``, ``precision@5``, ``map@10``, ``map``.
        groups: optional group of each query (in the first entry's item order); when
            given, whole groups are resampled. For EvalResults made with groups,
            ``result.predictions["group"]`` is the natural choice.
        n_resamples: bootstrap resamples.
        confidence: width of the interval, in (0, 1).
        seed: seed of the resampling.

    Raises:
        InputError: no entries, different items, an unknown metric, bad settings.
    """
    if not results:
        raise InputError("nothing to compare: pass at least one evaluation")
    if not 0 < confidence < 1:
        raise InputError(f"confidence must lie in (0, 1); got {confidence}")
    if isinstance(n_resamples, bool) or int(n_resamples) < 1:
        raise InputError(f"n_resamples must be a positive integer; got {n_resamples!r}")
    names = list(results)
    series = {name: per_query(results[name], metric) for name in names}
    ref = series[names[0]]
    if ref.index.has_duplicates:
        raise InputError(f"{names[0]!r} has repeated item ids; each query must appear once")
    for name in names[1:]:
        s = series[name]
        if len(s) != len(ref) or set(s.index) != set(ref.index):
            only_a = len(set(ref.index) - set(s.index))
            only_b = len(set(s.index) - set(ref.index))
            raise InputError(
                f"{names[0]!r} and {name!r} were scored on different items ({len(ref)} vs {len(s)}; "
                f"{only_a} only in the first, {only_b} only in the second): evaluate every entry on the same labelled items"
            )
        series[name] = s.loc[ref.index]
    values = pd.DataFrame({name: series[name].to_numpy() for name in names}, index=ref.index)

    rows = {}
    for name in names:
        r = results[name]
        row = dict(r.metrics) if isinstance(r, EvalResult) else {}
        row[metric] = float(np.nanmean(values[name])) if values[name].notna().any() else float("nan")
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "name"

    means = table[metric].to_numpy(float)
    order = sorted(range(len(names)), key=lambda i: (-(means[i] if np.isfinite(means[i]) else -np.inf), i))
    winner = names[order[0]]
    runner = names[order[1]] if len(names) > 1 else None

    g = None
    if groups is not None:
        g = np.asarray(groups, dtype=object)
        if g.shape[0] != len(values):
            raise InputError(f"groups has {g.shape[0]} entries but there are {len(values)} queries")
    if runner is None:
        return Comparison(table, metric, winner, None, float("nan"), float("nan"), float("nan"), float("nan"),
                          confidence, int(n_resamples), seed, "query" if g is None else "group", len(values))
    diff = (values[winner] - values[runner]).to_numpy(float)
    ok = np.isfinite(diff)
    if not ok.any():
        raise InputError(f"{metric} is undefined for every query of {winner!r} and {runner!r}")
    margin, lo, hi, p, unit, n_units = paired_bootstrap(diff[ok], None if g is None else g[ok],
                                                        int(n_resamples), confidence, seed)
    return Comparison(table, metric, winner, runner, margin, lo, hi, p, confidence, int(n_resamples), seed,
                      unit, n_units)


def paired_bootstrap(
    diff: np.ndarray, groups: np.ndarray | None, n_resamples: int, confidence: float, seed: int
) -> tuple[float, float, float, float, str, int]:
    """Bootstrap the mean of per-query differences ``(n,)``.

    With ``groups``, groups are drawn with replacement and the margin of a resample is
    ``sum of drawn groups' differences / their query count``.

    Returns:
        ``(margin, ci_low, ci_high, p_value, unit, n_units)``.
    """
    rng = np.random.default_rng(seed)
    margin = float(diff.mean())
    if groups is None:
        draws = rng.integers(0, diff.size, size=(n_resamples, diff.size))
        boot = diff[draws].mean(axis=1)
        unit, n_units = "query", diff.size
    else:
        codes, uniq = pd.factorize(pd.Series(groups, dtype=object), use_na_sentinel=False)
        sums = np.bincount(codes, weights=diff, minlength=len(uniq))
        counts = np.bincount(codes, minlength=len(uniq)).astype(np.float64)
        draws = rng.integers(0, len(uniq), size=(n_resamples, len(uniq)))
        boot = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
        unit, n_units = "group", len(uniq)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
    return margin, float(lo), float(hi), float((boot <= 0).mean()), unit, n_units
