"""Linear probe: how much label information a frozen embedding holds linearly.

A multinomial logistic regression on standardised features, scored by
cross-validation. Folds keep groups apart (``GroupKFold``) when groups are given, so a
speaker or recording never sits on both sides; otherwise folds are stratified by label
(``StratifiedKFold``, shuffled with a fixed seed). The scaler is fitted on each
training fold only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import warnings
from typing import Any

import numpy as np

from retrieval import progress
from retrieval.errors import InputError
from retrieval.knn import check_vectors, label_sets

#: BLAS threads while fitting. The fits are many small matrix products; on a shared
#: machine, BLAS threads that spin waiting for cores made them 4x slower than one thread.
PROBE_THREADS = 1


@dataclass(frozen=True)
class ProbeResult:
    """Cross-validated linear-probe scores.

    Attributes:
        accuracy_mean, accuracy_std: accuracy over folds (std with ``ddof=0``).
        macro_f1_mean, macro_f1_std: macro-averaged F1 over folds.
        fold_accuracy, fold_macro_f1: per-fold values.
        n_splits: folds used (may be fewer than asked, see :func:`linear_probe`).
        splitter: ``GroupKFold`` or ``StratifiedKFold``.
        n_items: labelled items used; n_classes: distinct labels.
    """

    accuracy_mean: float
    accuracy_std: float
    macro_f1_mean: float
    macro_f1_std: float
    fold_accuracy: tuple[float, ...]
    fold_macro_f1: tuple[float, ...]
    n_splits: int
    splitter: str
    n_items: int
    n_classes: int

    def metrics(self) -> dict[str, float | int | str]:
        """Flat dict for tables and JSON (``probe_accuracy``, ``probe_accuracy_std``, ...)."""
        return {"probe_accuracy": self.accuracy_mean, "probe_accuracy_std": self.accuracy_std,
                "probe_macro_f1": self.macro_f1_mean, "probe_macro_f1_std": self.macro_f1_std,
                "probe_folds": self.n_splits, "probe_splitter": self.splitter}


def linear_probe(
    vectors: np.ndarray,
    labels: Sequence[Any],
    groups: Sequence[Any] | None = None,
    *,
    n_splits: int = 5,
    c: float = 1.0,
    max_iter: int = 200,
    seed: int = 0,
) -> ProbeResult:
    """Cross-validated logistic-regression accuracy on frozen vectors.

    Args:
        vectors: ``(n, D)`` float vectors (raw or post-processed; they are standardised).
        labels: ``n`` single labels; None/NaN/"" rows are dropped.
        groups: optional ``n`` groups; folds never split a group. Rows with a missing
            group are dropped when groups are given.
        n_splits: folds wanted. Lowered to the number of groups, or to the size of the
            smallest class without groups; fewer than 2 is an error.
        c: inverse L2 regularisation strength of the logistic regression.
        max_iter: L-BFGS iterations per fold.
        seed: seed of the stratified shuffle.

    Raises:
        InputError: lengths that differ, multi-label cells, fewer than two classes, or
            too few groups / items per class for two folds.
    """
    from sklearn.model_selection import GroupKFold, StratifiedKFold
    from threadpoolctl import threadpool_limits

    x = check_vectors(vectors, "vectors")
    if len(labels) != x.shape[0]:
        raise InputError(f"labels has {len(labels)} entries but there are {x.shape[0]} vectors")
    sets, classes, multi = label_sets(labels)
    if multi:
        raise InputError("the linear probe takes one label per item; some labels hold several (';'). "
                         "Use the kNN evaluation (evaluate), which scores multi-label data")
    keep = np.array([bool(s) for s in sets])
    if groups is not None:
        if len(groups) != x.shape[0]:
            raise InputError(f"groups has {len(groups)} entries but there are {x.shape[0]} vectors")
        g_all = np.asarray(groups, dtype=object)
        keep &= np.array([not (v is None or (isinstance(v, float) and np.isnan(v))) for v in g_all])
    y = np.array([s[0] if s else "" for s in sets], dtype=object)[keep]
    x = x[keep]
    values, counts = np.unique(y.astype(str), return_counts=True)
    if values.size < 2:
        raise InputError(f"the linear probe needs at least 2 labels; got {values.size} ({', '.join(values)})")
    if groups is not None:
        g = g_all[keep].astype(str)
        n_groups = np.unique(g).size
        k = min(n_splits, n_groups)
        if k < 2:
            raise InputError(f"group-aware folds need at least 2 groups; got {n_groups}")
        splits = list(GroupKFold(n_splits=k).split(x, y, g))
        splitter = "GroupKFold"
    else:
        k = min(n_splits, int(counts.min()))
        if k < 2:
            raise InputError(f"stratified folds need at least 2 items per label; "
                             f"label {str(values[counts.argmin()])!r} has {int(counts.min())}")
        splits = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y.astype(str)))
        splitter = "StratifiedKFold"
    with threadpool_limits(PROBE_THREADS):
        accs, f1s = _fit_folds(x, y.astype(str), splits, c, max_iter)
    return ProbeResult(float(np.mean(accs)), float(np.std(accs)), float(np.mean(f1s)), float(np.std(f1s)),
                       tuple(accs), tuple(f1s), len(splits), splitter, int(x.shape[0]), int(values.size))


def _fit_folds(x: np.ndarray, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]], c: float,
               max_iter: int) -> tuple[list[float], list[float]]:
    """Per-fold accuracy and macro-F1 of standardised logistic regression."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.preprocessing import StandardScaler

    accs, f1s = [], []
    for train, test in progress.bar(splits, desc="linear probe", unit="fold"):
        scaler = StandardScaler().fit(x[train])
        clf = LogisticRegression(C=c, max_iter=max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(scaler.transform(x[train]), y[train])
        pred = clf.predict(scaler.transform(x[test]))
        accs.append(float(accuracy_score(y[test], pred)))
        f1s.append(float(f1_score(y[test], pred, average="macro", zero_division=0)))
    return accs, f1s
