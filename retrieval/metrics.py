"""Ranking and classification metrics, in one place and scored the way scikit-learn scores them.

Where :mod:`sklearn.metrics` defines a metric (average precision, per-class precision,
recall and F1, the confusion matrix), it computes it. What the callers add (leave-one-out
rankings, excluded files and groups, kNN votes) happens before: they rank or vote, and hand
the scoring here. ``tests/test_metrics.py`` holds every function to sklearn to 1e-9, on
random data with and without tied scores.

**Ties.** Average precision treats items with equal scores as one threshold, as
:func:`sklearn.metrics.average_precision_score` does: a tied block counts its relevant
items at the block's precision. The result does not depend on the order of the rows.

Functions:
    average_precision            AP of one ranking (sklearn)
    label_average_precisions     AP of every label column of ``(n, C)`` scores (sklearn)
    ranked_average_precision     AP of many rankings at once, already sorted (vectorised,
                                 sklearn's tie rule; for leave-one-out retrieval)
    precision_at_k, recall_at_k, average_precision_at_k   top-``k`` retrieval metrics
    per_class_scores             support, predicted, tp, precision, recall, F1 (sklearn)
    confusion_counts             ``(C, C)`` counts; sklearn's matrix for single-label data
"""

from __future__ import annotations

import numpy as np


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """AP of ranking items by ``scores`` (highest first) against ``truth``.

    Args:
        scores: ``(n,)`` float scores, higher is better.
        truth: ``(n,)`` bool relevance.

    Returns:
        :func:`sklearn.metrics.average_precision_score` (tied scores are one threshold);
        NaN when no item is relevant.
    """
    from sklearn.metrics import average_precision_score

    y = np.asarray(truth, bool)
    if not y.any():
        return float("nan")
    return float(average_precision_score(y, np.asarray(scores, np.float64)))


def label_average_precisions(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-label AP: for each column ``c``, items ranked by ``scores[:, c]`` against ``truth[:, c]``.

    Args:
        scores: ``(n, C)`` float scores.
        truth: ``(n, C)`` bool membership.

    Returns:
        ``(C,)`` float64 AP (:func:`average_precision`), NaN for a label no item carries.
        Their mean over the finite values is the label-wise mAP ("macro" mAP).
    """
    s = np.asarray(scores, np.float64)
    t = np.asarray(truth, bool)
    return np.array([average_precision(s[:, c], t[:, c]) for c in range(s.shape[1])], np.float64)


def ranked_average_precision(sorted_scores: np.ndarray, sorted_relevant: np.ndarray) -> np.ndarray:
    """AP of ``b`` rankings at once, by sklearn's rule (tied scores are one threshold).

    Args:
        sorted_scores: ``(b, g)`` float scores, each row sorted from best to worst. Items that
            are not candidates may sit at the end with ``-inf``; they must not be relevant.
        sorted_relevant: ``(b, g)`` bool relevance in the same order.

    Returns:
        ``(b,)`` float64: for each row, ``sum_j rel_j * P(end of j's tie block) / R``, which is
        :func:`sklearn.metrics.average_precision_score` on that row's finite items; NaN for a
        row without a relevant item.
    """
    s = np.asarray(sorted_scores)
    rel = np.asarray(sorted_relevant, bool)
    b, g = rel.shape
    row, col = np.nonzero(rel)  # the relevant items, row by row, in ranked order
    # A relevant item counts at the precision where its block of equal scores ends; a block
    # only spans more than the item itself where the next score equals its score.
    end = col.copy()
    nxt = col < g - 1
    tie = np.zeros(row.size, bool)
    tie[nxt] = s[row[nxt], col[nxt] + 1] == s[row[nxt], col[nxt]]
    if tie.any():
        tied = np.unique(row[tie])
        ends = np.ones((tied.size, g), bool)
        ends[:, :-1] = s[tied, 1:] != s[tied, :-1]
        pos = np.where(ends, np.arange(g)[None, :], g)
        block_end = np.minimum.accumulate(pos[:, ::-1], axis=1)[:, ::-1]  # (t, g) end of each item's block
        sub = np.full(b, -1)
        sub[tied] = np.arange(tied.size)
        inside = sub[row] >= 0
        end[inside] = block_end[sub[row[inside]], col[inside]]
    # relevant items up to and including position ``end`` of the same row
    key = row * (g + 1) + col
    hits = np.searchsorted(key, row * (g + 1) + end, side="right") - np.searchsorted(key, row * (g + 1))
    n_rel = np.bincount(row, minlength=b)
    total = np.bincount(row, weights=hits / (end + 1.0), minlength=b)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_rel > 0, total / np.maximum(n_rel, 1), np.nan)


def precision_at_k(top_relevant: np.ndarray, k: int, n_candidates: np.ndarray) -> np.ndarray:
    """Relevant among the top ``k``, over ``min(k, candidates)`` (1 when every candidate is shown).

    Args:
        top_relevant: ``(b, >= min(k, g))`` bool relevance of each ranking's first items
            (absent neighbours are False); only the first ``k`` columns are read.
        k: the cut-off.
        n_candidates: ``(b,)`` items each query could have retrieved.

    Returns:
        ``(b,)`` float64; 0 for a query without candidates.
    """
    hits = np.asarray(top_relevant, bool)[:, :k].sum(axis=1)
    return hits / np.maximum(np.minimum(k, np.asarray(n_candidates)), 1)


def recall_at_k(top_relevant: np.ndarray, k: int, n_relevant: np.ndarray) -> np.ndarray:
    """Relevant among the top ``k`` over all relevant candidates: ``(b,)`` float64, NaN where there are none."""
    hits = np.asarray(top_relevant, bool)[:, :k].sum(axis=1)
    n_rel = np.asarray(n_relevant)
    return np.where(n_rel > 0, hits / np.maximum(n_rel, 1), np.nan)


def average_precision_at_k(top_relevant: np.ndarray, k: int, n_relevant: np.ndarray) -> np.ndarray:
    """AP@k = ``sum_{j<=k} P@j rel_j / min(k, R)`` per ranking (``R``: relevant candidates).

    Args:
        top_relevant: ``(b, >= min(k, g))`` bool relevance in ranked order; the first ``k`` are read.
        k: the cut-off.
        n_relevant: ``(b,)`` relevant candidates per query.

    Returns:
        ``(b,)`` float64, NaN where ``R == 0``. With ``k`` at least the number of candidates and
        no tied scores it equals :func:`average_precision`.
    """
    rel = np.asarray(top_relevant, bool)[:, :k]
    n_rel = np.asarray(n_relevant)
    cum = np.cumsum(rel, axis=1)
    precision = cum / np.arange(1, rel.shape[1] + 1)[None, :]
    ap = (precision * rel).sum(axis=1) / np.maximum(np.minimum(k, n_rel), 1)
    return np.where(n_rel > 0, ap, np.nan)


def per_class_scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, np.ndarray]:
    """Per-label counts and precision, recall and F1, by :func:`sklearn.metrics.precision_recall_fscore_support`.

    Args:
        truth: ``(m, C)`` bool: the labels each item carries.
        predicted: ``(m, C)`` bool: the labels predicted for it (a row may be empty: no prediction).

    Returns:
        ``support``, ``predicted``, ``tp`` (``(C,)`` int64) and ``precision``, ``recall``, ``f1``
        (``(C,)`` float64; 0 where undefined, sklearn's ``zero_division=0``).
    """
    from sklearn.metrics import precision_recall_fscore_support

    t = np.asarray(truth, bool)
    p = np.asarray(predicted, bool)
    c = t.shape[1]
    if c == 1:  # sklearn reads one column as binary labels; a blank second column keeps it a label matrix
        t, p = np.pad(t, ((0, 0), (0, 1))), np.pad(p, ((0, 0), (0, 1)))
    precision, recall, f1, _ = precision_recall_fscore_support(t, p, average=None, zero_division=0)
    return {
        "support": t.sum(axis=0)[:c].astype(np.int64),
        "predicted": p.sum(axis=0)[:c].astype(np.int64),
        "tp": (t & p).sum(axis=0)[:c].astype(np.int64),
        "precision": np.asarray(precision, np.float64)[:c],
        "recall": np.asarray(recall, np.float64)[:c],
        "f1": np.asarray(f1, np.float64)[:c],
    }


def confusion_counts(truth: np.ndarray, predicted: np.ndarray, multi_label: bool) -> np.ndarray:
    """``(C, C)`` int64 counts, rows true label, columns predicted label.

    Single-label (one true label per row): :func:`sklearn.metrics.confusion_matrix` over the
    rows with a prediction (a row without one is counted nowhere). Multi-label, which sklearn
    has no ``C x C`` form for: a hit label counts on the diagonal, and every pair of a missed
    true label and a wrongly predicted label counts off it.

    Args:
        truth: ``(m, C)`` bool.
        predicted: ``(m, C)`` bool; single-label rows hold at most one True.
        multi_label: which rule applies.
    """
    t = np.asarray(truth, bool)
    p = np.asarray(predicted, bool)
    c = t.shape[1]
    if multi_label:
        hit = (t & p).astype(np.int64)
        cm = (t.astype(np.int64) - hit).T @ (p.astype(np.int64) - hit)
        cm[np.diag_indices_from(cm)] = hit.sum(axis=0)
        return cm
    from sklearn.metrics import confusion_matrix

    has = p.any(axis=1)
    if not has.any():
        return np.zeros((c, c), np.int64)
    return confusion_matrix(t[has].argmax(axis=1), p[has].argmax(axis=1), labels=np.arange(c)).astype(np.int64)
