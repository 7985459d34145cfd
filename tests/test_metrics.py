"""retrieval.metrics agrees with sklearn.metrics to 1e-9, on random data with and without tied
scores, and the metrics built on it (label_map@k, zero-shot mAP) do not depend on row order."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from retrieval import metrics
from retrieval.evaluate import evaluate
from retrieval.zeroshot import zero_shot_eval

TOL = 1e-9
SEEDS = range(8)


def _scores(rng: np.random.Generator, shape: tuple[int, ...], tied: bool) -> np.ndarray:
    """Continuous scores, or scores on a coarse grid (ties everywhere) when ``tied``."""
    x = rng.random(shape)
    return np.round(x * 4) / 4 if tied else x


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_average_precision_is_sklearns(seed: int, tied: bool) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 200))
    s = _scores(rng, (n,), tied)
    y = rng.random(n) < rng.uniform(0.05, 0.9)
    y[rng.integers(n)] = True
    assert metrics.average_precision(s, y) == pytest.approx(average_precision_score(y, s), abs=TOL)


def test_average_precision_by_hand() -> None:
    # ranked truth [1, 0, 1, 0]: (1/1 + 2/3) / 2
    assert metrics.average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0], bool)) \
        == pytest.approx(5 / 6, abs=TOL)
    # all tied: one threshold, where precision is 2/4, whatever the order of the rows
    assert metrics.average_precision(np.zeros(4), np.array([1, 1, 0, 0], bool)) == pytest.approx(0.5, abs=TOL)
    assert metrics.average_precision(np.zeros(4), np.array([0, 0, 1, 1], bool)) == pytest.approx(0.5, abs=TOL)
    assert metrics.average_precision(np.array([0.3, 0.2, 0.1]), np.array([0, 0, 1], bool)) \
        == pytest.approx(1 / 3, abs=TOL)
    assert np.isnan(metrics.average_precision(np.array([0.3]), np.array([False])))


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_ranked_average_precision_is_sklearns_row_by_row(seed: int, tied: bool) -> None:
    rng = np.random.default_rng(seed)
    b, g = 30, int(rng.integers(1, 120))
    s = _scores(rng, (b, g), tied)
    rel = rng.random((b, g)) < rng.uniform(0.05, 0.6)
    rel[0] = False  # a query without a relevant item
    excluded = rng.random((b, g)) < 0.2  # leave-one-out: excluded items sink to -inf and are never relevant
    s[excluded] = -np.inf
    rel &= ~excluded
    order = np.argsort(-s, axis=1, kind="stable")
    got = metrics.ranked_average_precision(np.take_along_axis(s, order, 1), np.take_along_axis(rel, order, 1))
    for i in range(b):
        keep = ~excluded[i]
        if not rel[i].any():
            assert np.isnan(got[i])
        else:
            assert got[i] == pytest.approx(average_precision_score(rel[i, keep], s[i, keep]), abs=TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_ranked_average_precision_ignores_the_order_inside_a_tie(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s = np.sort(_scores(rng, (5, 40), tied=True), axis=1)[:, ::-1]
    rel = rng.random((5, 40)) < 0.4
    reordered = rel.copy()
    for i in range(5):  # shuffle the relevance inside every block of equal scores
        for value in np.unique(s[i]):
            block = np.flatnonzero(s[i] == value)
            reordered[i, block] = rng.permutation(rel[i, block])
    np.testing.assert_allclose(metrics.ranked_average_precision(s, rel),
                               metrics.ranked_average_precision(s, reordered), atol=TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_average_precision_at_k_is_ap_over_a_whole_untied_ranking(seed: int) -> None:
    rng = np.random.default_rng(seed)
    b, g = 20, 50
    s = rng.random((b, g))
    rel = rng.random((b, g)) < 0.3
    rel[:, 0] = True
    order = np.argsort(-s, axis=1)
    ranked = np.take_along_axis(rel, order, 1)
    want = [average_precision_score(rel[i], s[i]) for i in range(b)]
    np.testing.assert_allclose(metrics.average_precision_at_k(ranked, g, rel.sum(axis=1)), want, atol=TOL)
    # a shorter cut-off divides by min(k, R) and only sees the top k
    k = 5
    top = ranked[:, :k]
    by_hand = [sum(top[i, :j + 1].sum() / (j + 1) for j in range(k) if top[i, j]) / min(k, rel[i].sum())
               for i in range(b)]
    np.testing.assert_allclose(metrics.average_precision_at_k(ranked, k, rel.sum(axis=1)), by_hand, atol=TOL)


def test_precision_and_recall_at_k() -> None:
    ranked = np.array([[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 0, 0]], bool)
    np.testing.assert_allclose(metrics.precision_at_k(ranked, 3, np.array([10, 10, 2])), [2 / 3, 0, 1.0])
    recall = metrics.recall_at_k(ranked, 3, np.array([4, 0, 2]))
    assert recall[0] == pytest.approx(0.5) and np.isnan(recall[1]) and recall[2] == pytest.approx(1.0)


@pytest.mark.parametrize("n_classes", [1, 2, 7])
@pytest.mark.parametrize("seed", SEEDS)
def test_per_class_scores_are_sklearns(seed: int, n_classes: int) -> None:
    rng = np.random.default_rng(seed)
    m = 60
    truth = rng.random((m, n_classes)) < 0.4
    predicted = rng.random((m, n_classes)) < 0.3
    predicted[:5] = False  # some items get no prediction at all
    got = metrics.per_class_scores(truth, predicted)
    if n_classes == 1:  # sklearn's own answer for label 1 of the binary task
        p, r, f, s = precision_recall_fscore_support(truth[:, 0], predicted[:, 0], labels=[True], average=None,
                                                     zero_division=0)
    else:
        p, r, f, s = precision_recall_fscore_support(truth, predicted, average=None, zero_division=0)
    np.testing.assert_allclose(got["precision"], p, atol=TOL)
    np.testing.assert_allclose(got["recall"], r, atol=TOL)
    np.testing.assert_allclose(got["f1"], f, atol=TOL)
    np.testing.assert_array_equal(got["support"], s)
    np.testing.assert_array_equal(got["tp"], (truth & predicted).sum(axis=0))
    np.testing.assert_array_equal(got["predicted"], predicted.sum(axis=0))


@pytest.mark.parametrize("seed", SEEDS)
def test_single_label_confusion_counts_are_sklearns(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m, c = 80, 5
    y_true, y_pred = rng.integers(0, c, m), rng.integers(0, c, m)
    truth, predicted = np.eye(c, dtype=bool)[y_true], np.eye(c, dtype=bool)[y_pred]
    predicted[:7] = False  # no prediction: counted nowhere
    want = confusion_matrix(y_true[7:], y_pred[7:], labels=np.arange(c))
    np.testing.assert_array_equal(metrics.confusion_counts(truth, predicted, multi_label=False), want)


def test_multi_label_confusion_counts() -> None:
    truth = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]], bool)
    predicted = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 1]], bool)
    cm = metrics.confusion_counts(truth, predicted, multi_label=True)
    # hits on the diagonal; (missed true, wrong predicted) pairs off it
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 0, 1], [0, 0, 1]])


def _tied_corpus(seed: int) -> tuple[np.ndarray, list[str], list[int], list[int]]:
    """Clustered vectors and uniform votes: kNN scores are multiples of 1/k, so ties abound."""
    rng = np.random.default_rng(seed)
    n, c = 240, 6
    y = rng.integers(0, c, n)
    centres = rng.normal(size=(c, 16))
    x = (centres[y] + rng.normal(scale=1.2, size=(n, 16))).astype(np.float32)
    return x, [str(v) for v in y], list(range(n)), list(rng.integers(0, 8, n))


@pytest.mark.parametrize("seed", range(3))
def test_label_map_does_not_depend_on_row_order(seed: int) -> None:
    x, labels, files, groups = _tied_corpus(seed)
    base = evaluate(x, labels, files, groups, ks=(1, 5), weighting="uniform")
    rng = np.random.default_rng(100 + seed)
    for _ in range(3):
        p = rng.permutation(len(labels))
        r = evaluate(x[p], [labels[i] for i in p], [files[i] for i in p], [groups[i] for i in p], ks=(1, 5),
                     weighting="uniform")
        for name in ("label_map@5", "macro_f1@5", "map", "map@5", "knn_accuracy@1"):
            assert r.metrics[name] == pytest.approx(base.metrics[name], abs=TOL), name


def test_evaluate_macro_f1_is_sklearns_on_its_predictions() -> None:
    x, labels, files, groups = _tied_corpus(0)
    r = evaluate(x, labels, files, groups, ks=(5,), weighting="uniform")
    assert r.metrics["label_map@5"] == pytest.approx(float(r.per_class["ap"].mean()), abs=TOL)
    pred = r.predictions
    want = f1_score(pred["label"], pred["predicted"].fillna("<none>"), labels=r.classes, average="macro",
                    zero_division=0)
    assert r.metrics["macro_f1@5"] == pytest.approx(want, abs=TOL)


def test_zero_shot_map_is_the_mean_of_sklearn_ap_and_order_free() -> None:
    rng = np.random.default_rng(3)
    labels = ["a", "b", "c", "d"]
    s = np.round(rng.random((50, 4)) * 3) / 3  # tied scores
    truth = [labels[i] for i in rng.integers(0, 4, 50)]
    out = zero_shot_eval(s, truth, labels)
    want = np.mean([average_precision_score([t == lab for t in truth], s[:, j]) for j, lab in enumerate(labels)])
    assert out["map"] == pytest.approx(want, abs=TOL)
    p = rng.permutation(50)
    assert zero_shot_eval(s[p], [truth[i] for i in p], labels)["map"] == pytest.approx(out["map"], abs=TOL)
