"""Leave-one-out nearest-neighbour quality of a set of labelled vectors.

Every labelled item is a query against every other labelled item, with leakage
removed: items of the query's own file are never neighbours (window-level rows of
one file would otherwise find each other), and, when ``groups`` are given, neither
are items of the query's group (speaker, recording, site). Unlabelled items are
neither queries nor neighbours. An item is *relevant* to a query when they share a
label. Ranking, vote and tie rules are those of :mod:`retrieval.knn`.

Metrics (``EvalResult.metrics``; ``@k`` for each requested ``k``):
    knn_accuracy@k   share of queries whose kNN vote over the top ``k`` is one of their
                     labels (a query without any neighbour counts as wrong)
    precision@k      relevant among the top ``k``, over ``min(k, eligible items)``
    recall@k         relevant among the top ``k``, over all relevant eligible items
    map@k            mean of AP@k = sum_{j<=k} P@j rel_j / min(k, R)  (R = relevant items)
    map              mean of full-ranking AP = sum_j P@j rel_j / R (equal similarities count
                     as one threshold, as in sklearn)
    label_map@K      mean over labels of the AP of ranking all queries by their kNN score
                     for that label at K = ``per_class_k`` ("sigmoid-style": each label is
                     scored on its own; the standard multi-label metric). Queries with equal
                     scores form one threshold (sklearn's rule), so it does not depend on
                     the order of the rows.
    macro_f1@K       mean over labels of the per-class F1 at K
    chance_accuracy  accuracy of always answering the most frequent label
    chance_precision expected precision of a random ranking: mean of R / eligible items
    n_items, n_labelled, n_queries, n_classes, n_no_neighbours, n_no_relevant
Scoring is :mod:`retrieval.metrics` (scikit-learn where it defines the metric); this
module ranks, excludes and votes. Recall and AP are undefined for a query with no
relevant eligible item; such queries are left out of those means and counted in
``n_no_relevant``. Because precision@k and accuracy keep them (as misses), ``map@k`` can
read higher than ``precision@1`` when group exclusion leaves many queries without a
relevant item. ``EvalResult.coverage`` says, for every metric, how many queries (or
labels) it averages, how many were left out, and why.

The per-class table and the confusions use the vote at ``per_class_k``, by default the
largest ``k``: the label transfer ``retrieve classify`` would make with that ``k``. For
single-label data the prediction is the vote's winner; for multi-label data it is every
label whose score (weighted fraction of neighbours carrying it) is at least 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from retrieval.errors import InputError
from retrieval.knn import (
    BLOCK_QUERIES,
    LABEL_SEP,
    check_vectors,
    check_weighting,
    exclusion_block,
    key_codes,
    label_sets,
    membership,
    pick,
    rank_top_k,
    tally,
    vote_weights,
)
from retrieval.metrics import (
    average_precision_at_k,
    confusion_counts,
    label_average_precisions,
    per_class_scores,
    precision_at_k,
    ranked_average_precision,
    recall_at_k,
)
from retrieval.postprocess import l2_normalize

#: Recall levels of the interpolated precision-recall curve.
PR_LEVELS = np.linspace(0.0, 1.0, 21)
#: Multi-label: a label is predicted when its kNN score reaches this.
MULTI_LABEL_THRESHOLD = 0.5


@dataclass
class EvalResult:
    """What :func:`evaluate` measured.

    Attributes:
        metrics: flat ``name -> number`` dict (module docstring for the names).
        per_class: one row per label: ``label, support, predicted, tp, precision, recall,
            f1, ap`` (``ap``: the label's sigmoid-style AP), sorted by label.
        confusions: off-diagonal ``true, predicted, count, rate`` rows (``rate`` = count /
            support of ``true``), most frequent first.
        confusion_matrix: ``(C, C)`` counts, rows true label, columns predicted label.
        predictions: one row per query, indexed by item id: ``file_id, group, label,
            predicted, confidence, n_eligible, n_relevant, nearest, nearest_similarity``
            (item id of the best neighbour), and per-query metric values under the metric names (``knn_accuracy@k`` 0/1,
            ``precision@k``, ``recall@k``, ``map@k`` = AP@k, ``map`` = AP, NaN where
            undefined), so the mean of a column is the metric.
        pr_curve: ``recall, precision`` at :data:`PR_LEVELS`, interpolated precision
            averaged over queries with a relevant item.
        classes: every label, sorted.
        multi_label: whether the labels were treated as multi-label.
        ks: the ``k`` values measured.
        per_class_k: the ``k`` behind ``per_class``, ``confusions`` and ``predicted``.
        settings: how the evaluation was run (weighting, grouped, ...).
        coverage: one row per metric in ``metrics`` (index ``metric``): ``averaged_over``
            (how many values its mean takes), ``unit`` (``queries`` or ``labels``),
            ``excluded`` (queries left out of the mean) and ``why`` (the reason, "" when
            none was left out; queries kept as misses are said there too).
    """

    metrics: dict[str, float | int]
    per_class: pd.DataFrame
    confusions: pd.DataFrame
    confusion_matrix: pd.DataFrame
    predictions: pd.DataFrame
    pr_curve: pd.DataFrame
    classes: list[str]
    multi_label: bool
    ks: tuple[int, ...]
    per_class_k: int
    settings: dict[str, Any] = field(default_factory=dict)
    coverage: pd.DataFrame = field(default_factory=pd.DataFrame)


def check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """Sorted distinct positive ``k`` values, or :class:`InputError`."""
    try:
        values = sorted({int(k) for k in ks})
    except (TypeError, ValueError):
        raise InputError(f"ks must be positive integers; got {ks!r}") from None
    if not values or values[0] < 1 or any(isinstance(k, bool) or float(k) != int(k) for k in ks):
        raise InputError(f"ks must be positive integers; got {ks!r}")
    return tuple(values)


def evaluate(
    vectors: np.ndarray,
    labels: Sequence[Any],
    file_ids: Sequence[Any],
    groups: Sequence[Any] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    *,
    weighting: str = "similarity",
    per_class_k: int | None = None,
    item_ids: Sequence[Any] | None = None,
    full_map: bool = True,
    sep: str = LABEL_SEP,
) -> EvalResult:
    """Leave-one-out kNN evaluation of labelled vectors, leakage-aware.

    Args:
        vectors: ``(n, D)`` float vectors (L2-normalised here).
        labels: ``n`` label cells; ``"a;b"`` is multi-label; None/NaN/"" is unlabelled.
        file_ids: ``n`` file ids; rows of the same file never see each other.
        groups: optional ``n`` groups; rows of the same group never see each other.
            A missing group (None/NaN) excludes nothing beyond the file.
        ks: the ``k`` values to measure.
        weighting: kNN vote weighting, ``similarity`` or ``uniform``.
        per_class_k: the ``k`` for the per-class table and confusions; default ``max(ks)``.
        item_ids: ids for ``predictions``' index; default the row positions ``0..n-1``.
        full_map: compute ``map`` and ``pr_curve`` from the full ranking (a sort of
            ``n_labelled^2`` similarities); turn off for very large sets.
        sep: multi-label separator.

    Returns:
        :class:`EvalResult`.

    Raises:
        InputError: lengths that differ from ``n``, non-finite vectors, bad ``ks``, or
            fewer than two labelled items.
    """
    x = check_vectors(vectors, "vectors")
    n = x.shape[0]
    weighting = check_weighting(weighting)
    ks = check_ks(ks)
    for name, seq in (("labels", labels), ("file_ids", file_ids), ("groups", groups), ("item_ids", item_ids)):
        if seq is not None and len(seq) != n:
            raise InputError(f"{name} has {len(seq)} entries but there are {n} vectors")
    k_table = max(ks) if per_class_k is None else int(per_class_k)
    if k_table < 1:
        raise InputError(f"per_class_k must be a positive integer; got {per_class_k!r}")
    k_need = max(max(ks), k_table)

    sets, classes, multi = label_sets(labels, sep)
    labelled = np.flatnonzero([bool(s) for s in sets])
    m = labelled.size
    if m < 2:
        raise InputError(f"need at least 2 labelled items to evaluate; got {m} of {n}")
    sets_l = [sets[i] for i in labelled]
    members = membership(sets_l, classes)
    files = np.asarray(file_ids, dtype=object)[labelled]
    grp = None if groups is None else np.asarray(groups, dtype=object)[labelled]
    keys = [key_codes(files, files, "file_ids", m, m)]
    if grp is not None:
        keys.append(key_codes(grp, grp, "groups", m, m))
    xn = l2_normalize(x[labelled])
    single_code = members.argmax(axis=1) if not multi else None

    kk = min(k_need, m)
    top_idx = np.full((m, kk), -1, np.int64)
    top_sim = np.full((m, kk), np.nan, np.float32)
    n_elig = np.zeros(m, np.int64)
    n_rel = np.zeros(m, np.int64)
    top_rel = np.zeros((m, kk), bool)
    ap_full = np.full(m, np.nan)
    pr_sum = np.zeros(PR_LEVELS.size)
    pr_n = 0
    block = max(1, min(BLOCK_QUERIES, 4_000_000 // m))  # bounds each (block, m) array
    for start in range(0, m, block):
        rows = slice(start, min(start + block, m))
        s = xn[rows] @ xn.T
        excl = exclusion_block(rows, m, None, keys)
        s[excl] = -np.inf
        if single_code is not None:
            rel = single_code[rows, None] == single_code[None, :]
        else:
            rel = (members[rows].astype(np.float32) @ members.T.astype(np.float32)) > 0
        rel &= ~excl
        n_elig[rows] = (~excl).sum(axis=1)
        n_rel[rows] = rel.sum(axis=1)
        if full_map:
            order = np.argsort(-s, axis=1, kind="stable")
            top = order[:, :kk]
            rel_sorted = np.take_along_axis(rel, order, axis=1)
            ap_full[rows] = ranked_average_precision(np.take_along_axis(s, order, axis=1), rel_sorted)
            curve, ok = _pr_curve(rel_sorted, n_rel[rows])
            pr_sum += curve.sum(axis=0)
            pr_n += int(ok.sum())
        else:
            top = rank_top_k(s, kk)
        vals = np.take_along_axis(s, top, axis=1)
        present = np.isfinite(vals)
        top_idx[rows] = np.where(present, top, -1)
        top_sim[rows] = np.where(present, vals, np.nan)
        top_rel[rows] = np.take_along_axis(rel, top, axis=1) & present

    # Per-query metrics at each k.
    qcols: dict[str, np.ndarray] = {}
    preds: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    for k in sorted(set(ks) | {k_table}):
        kc = min(k, kk)
        idx, sim = top_idx[:, :kc], top_sim[:, :kc]
        w = vote_weights(sim, weighting)
        votes, total, first = tally(idx, w, members)
        win = pick(votes, total, first)
        preds[k] = (votes, total, first, win)
        if k in ks:
            hit = np.where(win >= 0, members[np.arange(m), np.maximum(win, 0)], False)
            rel_k = top_rel[:, :kc]
            qcols[f"knn_accuracy@{k}"] = hit.astype(np.float64)
            qcols[f"precision@{k}"] = precision_at_k(rel_k, k, n_elig)
            qcols[f"recall@{k}"] = recall_at_k(rel_k, k, n_rel)
            qcols[f"map@{k}"] = average_precision_at_k(rel_k, k, n_rel)
    if full_map:
        qcols["map"] = ap_full

    votes, total, first, win = preds[k_table]
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = votes / np.where(total > 0, total, 1.0)[:, None]
    if multi:
        predicted_sets = scores >= MULTI_LABEL_THRESHOLD
    else:
        predicted_sets = np.zeros_like(members)
        has = win >= 0
        predicted_sets[np.flatnonzero(has), win[has]] = True

    per_class = _per_class(members, predicted_sets, scores, classes)
    cm = pd.DataFrame(confusion_counts(members, predicted_sets, multi), index=pd.Index(classes, name="true"),
                      columns=pd.Index(classes, name="predicted"))
    confusions = _confusions(cm, members.sum(axis=0))

    metrics: dict[str, float | int] = {}
    for k in ks:
        for name in ("knn_accuracy", "precision", "recall", "map"):
            col = qcols[f"{name}@{k}"]
            metrics[f"{name}@{k}"] = _mean(col)
    if full_map:
        metrics["map"] = _mean(ap_full)
    metrics[f"label_map@{k_table}"] = _mean(per_class["ap"].to_numpy(float))
    metrics[f"macro_f1@{k_table}"] = _mean(per_class["f1"].to_numpy(float))
    freq = members.sum(axis=0)
    metrics["chance_accuracy"] = float(freq.max() / m) if freq.size else 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        metrics["chance_precision"] = _mean(np.where(n_elig > 0, n_rel / np.maximum(n_elig, 1), np.nan))
    metrics.update({
        "n_items": int(n), "n_labelled": int(m), "n_queries": int(m), "n_classes": len(classes),
        "n_no_neighbours": int((n_elig == 0).sum()), "n_no_relevant": int((n_rel == 0).sum()),
    })

    ids = np.arange(n) if item_ids is None else np.asarray(item_ids, dtype=object)
    first_nb = top_idx[:, 0] if kk else np.full(m, -1)
    nearest_id = [ids[labelled[j]] if j >= 0 else None for j in first_nb]
    pred_labels = [sep.join(classes[c] for c in np.flatnonzero(row)) or None for row in predicted_sets]
    conf = np.where(win >= 0, scores[np.arange(m), np.maximum(win, 0)], 0.0)
    predictions = pd.DataFrame({
        "file_id": files,
        "group": grp if grp is not None else [None] * m,
        "label": [sep.join(s) for s in sets_l],
        "predicted": pred_labels,
        "confidence": conf,
        "n_eligible": n_elig,
        "n_relevant": n_rel,
        "nearest": nearest_id,
        "nearest_similarity": top_sim[:, 0] if kk else np.full(m, np.nan),
        **qcols,
    }, index=pd.Index(ids[labelled], name="item"))
    pr_curve = pd.DataFrame({"recall": PR_LEVELS, "precision": pr_sum / pr_n if pr_n else np.full(PR_LEVELS.size, np.nan)})
    settings = {"weighting": weighting, "grouped": groups is not None, "full_map": full_map, "sep": sep}
    coverage = _coverage(metrics, qcols, n_elig, n_rel, len(classes), groups is not None)
    return EvalResult(metrics, per_class, confusions, cm, predictions, pr_curve, classes, multi, ks, k_table, settings,
                      coverage)


def _coverage(metrics: dict[str, float | int], qcols: dict[str, np.ndarray], n_elig: np.ndarray, n_rel: np.ndarray,
              n_classes: int, grouped: bool) -> pd.DataFrame:
    """How many queries each metric averages, how many it leaves out, and why (see ``EvalResult.coverage``)."""
    m = int(n_elig.size)
    own = "their own file and group" if grouped else "their own file"
    no_rel = int((n_rel == 0).sum())
    no_nb = int((n_elig == 0).sum())
    no_rel_why = (f"{no_rel} queries have no relevant item left after excluding {own}; recall and AP are undefined "
                  "for them") if no_rel else ""
    misses = (f"none left out: the {no_rel} queries with no relevant item left count as misses here, but are "
              "left out of recall and map" if no_rel else "")
    rows = []
    for name in metrics:
        if name.startswith("n_"):
            continue
        base = name.split("@")[0]
        if name in qcols and base in ("recall", "map"):
            n = int(np.isfinite(qcols[name]).sum())
            rows.append((name, n, "queries", m - n, no_rel_why if m - n else ""))
        elif name in qcols or name == "chance_accuracy":
            rows.append((name, m, "queries", 0, misses if base in ("knn_accuracy", "precision") else ""))
        elif name == "chance_precision":
            rows.append((name, m - no_nb, "queries", no_nb,
                         f"{no_nb} queries have no eligible neighbour after excluding {own}" if no_nb else ""))
        else:  # label_map@K, macro_f1@K: means over labels
            rows.append((name, n_classes, "labels", 0, ""))
    return pd.DataFrame(rows, columns=["metric", "averaged_over", "unit", "excluded", "why"]).set_index("metric")


def _mean(values: np.ndarray) -> float:
    """Mean of the finite values; NaN when there are none."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _pr_curve(rel_sorted: np.ndarray, n_rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated precision-recall curve per query.

    Args:
        rel_sorted: ``(b, g)`` bool relevance in ranked order (excluded items are never relevant).
        n_rel: ``(b,)`` relevant items per query.

    Returns:
        ``(curve, ok)``: ``(b, L)`` interpolated precision at :data:`PR_LEVELS` (zero rows where
        not ``ok``) and ``(b,)`` bool ``ok`` (the query has a relevant item).
    """
    b, g = rel_sorted.shape
    ok = n_rel > 0
    cum = np.cumsum(rel_sorted, axis=1, dtype=np.int64)
    prec = cum / np.arange(1, g + 1)[None, :]
    # Interpolated precision: best precision at any rank at or beyond the given recall.
    best_after = np.maximum.accumulate(prec[:, ::-1], axis=1)[:, ::-1]
    _, ranks = np.nonzero(rel_sorted)  # ranks of the relevant items, row by row
    ranks = ranks if ranks.size else np.zeros(1, np.int64)
    first = np.concatenate([[0], np.cumsum(n_rel)[:-1]])  # where each row's relevant items start in ``ranks``
    curve = np.zeros((b, PR_LEVELS.size))
    for i, level in enumerate(PR_LEVELS):
        need = np.ceil(level * n_rel - 1e-9).astype(np.int64)  # relevant items needed to reach the level
        # the rank of the need-th relevant item (rank 0 when none is needed)
        pos = np.where(need > 0, ranks[np.clip(first + need - 1, 0, ranks.size - 1)], 0)
        curve[:, i] = np.where(ok, best_after[np.arange(b), pos], 0.0)
    return curve, ok


def _per_class(members: np.ndarray, predicted: np.ndarray, scores: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Per-label table from ``(m, C)`` truth, prediction sets and kNN scores (:mod:`retrieval.metrics`)."""
    counts = per_class_scores(members, predicted)
    return pd.DataFrame({"label": classes, **counts, "ap": label_average_precisions(scores, members)})


def _confusions(cm: pd.DataFrame, support: np.ndarray) -> pd.DataFrame:
    """Off-diagonal pairs with a count, most frequent first (ties: higher rate, then names)."""
    c = cm.to_numpy()
    rows, cols = np.nonzero(c)
    off = rows != cols
    rows, cols = rows[off], cols[off]
    names = list(cm.index)
    df = pd.DataFrame({
        "true": [names[i] for i in rows],
        "predicted": [names[j] for j in cols],
        "count": c[rows, cols].astype(np.int64),
        "rate": c[rows, cols] / np.maximum(support[rows], 1),
    })
    return df.sort_values(["count", "rate", "true", "predicted"], ascending=[False, False, True, True],
                          ignore_index=True)
