"""Leave-one-out evaluation against hand-computed answers."""

from __future__ import annotations


import numpy as np
import pytest

from retrieval.errors import InputError
from retrieval.evaluate import evaluate


def arc(*degrees: float) -> np.ndarray:
    """Unit vectors at these angles: similarity falls with the angle between two items."""
    r = np.deg2rad(degrees)
    return np.stack([np.cos(r), np.sin(r)], axis=1)


# Five labelled items on an arc plus one unlabelled item (which must never take part).
# Pairwise angles per query are all distinct, so rankings hold no ties:
#   q0 (0 deg, A):   i1 (10, A)  i2 (30, B)  i3 (70, A)  i4 (125, B)
#   q1 (10 deg, A):  i0 (10, A)  i2 (20, B)  i3 (60, A)  i4 (115, B)
#   q2 (30 deg, B):  i1 (20, A)  i0 (30, A)  i3 (40, A)  i4 (95, B)
#   q3 (70 deg, A):  i2 (40, B)  i4 (55, B)  i1 (60, A)  i0 (70, A)
#   q4 (125 deg, B): i3 (55, A)  i2 (95, B)  i1 (115, A) i0 (125, A)
VECTORS = arc(0, 10, 30, 70, 125, 5)
LABELS = ["A", "A", "B", "A", "B", None]
FILES = ["f0", "f1", "f2", "f3", "f4", "f5"]


@pytest.fixture(scope="module")
def result():
    return evaluate(VECTORS, LABELS, FILES, ks=(1, 3), weighting="uniform")


def test_metrics_at_k1_by_hand(result) -> None:
    m = result.metrics
    # Nearest neighbours: q0->A ok, q1->A ok, q2->A wrong, q3->B wrong, q4->A wrong.
    assert m["knn_accuracy@1"] == pytest.approx(2 / 5)
    assert m["precision@1"] == pytest.approx(2 / 5)
    # Recall@1: q0 and q1 find 1 of their 2 relevant items, the rest 0.
    assert m["recall@1"] == pytest.approx((0.5 + 0.5) / 5)
    assert m["map@1"] == pytest.approx(2 / 5)


def test_metrics_at_k3_by_hand(result) -> None:
    m = result.metrics
    # Uniform votes over 3: q0 A,B,A -> A ok; q1 A,B,A -> A ok; q2 A,A,A -> A wrong;
    # q3 B,B,A -> B wrong; q4 A,B,A -> A wrong.
    assert m["knn_accuracy@3"] == pytest.approx(2 / 5)
    # Relevant in top 3: 2, 2, 0, 1, 1 of 3.
    assert m["precision@3"] == pytest.approx((2 + 2 + 0 + 1 + 1) / 15)
    # Relevant found over relevant existing: 2/2, 2/2, 0/1, 1/2, 1/1.
    assert m["recall@3"] == pytest.approx((1 + 1 + 0 + 0.5 + 1) / 5)
    # AP@3 = sum P@j rel_j / min(3, R): q0 (1 + 2/3)/2, q1 same, q2 0, q3 (1/3)/2, q4 (1/2)/1.
    assert m["map@3"] == pytest.approx((5 / 6 + 5 / 6 + 0 + 1 / 6 + 1 / 2) / 5)


def test_full_map_and_chance_by_hand(result) -> None:
    m = result.metrics
    # Full rankings: q0 [1,0,1,0] -> 5/6; q1 5/6; q2 [0,0,0,1] -> 1/4;
    # q3 [0,0,1,1] -> (1/3 + 2/4)/2 = 5/12; q4 [0,1,0,0] -> 1/2.
    assert m["map"] == pytest.approx((5 / 6 + 5 / 6 + 1 / 4 + 5 / 12 + 1 / 2) / 5)
    assert m["chance_accuracy"] == pytest.approx(3 / 5)  # always answer A
    # Random ranking: A queries see 2 relevant of 4, B queries 1 of 4.
    assert m["chance_precision"] == pytest.approx((3 * 2 / 4 + 2 * 1 / 4) / 5)
    assert (m["n_items"], m["n_labelled"], m["n_queries"], m["n_classes"]) == (6, 5, 5, 2)
    assert (m["n_no_neighbours"], m["n_no_relevant"]) == (0, 0)


def test_per_class_and_confusions_at_largest_k(result) -> None:
    # Predictions at k=3: q0 A, q1 A, q2 A, q3 B, q4 A.
    assert result.per_class_k == 3
    pc = result.per_class.set_index("label")
    assert pc.loc["A", ["support", "predicted", "tp"]].tolist() == [3, 4, 2]
    assert pc.loc["A", "precision"] == pytest.approx(0.5)
    assert pc.loc["A", "recall"] == pytest.approx(2 / 3)
    assert pc.loc["A", "f1"] == pytest.approx(4 / 7)
    assert pc.loc["B", ["support", "predicted", "tp"]].tolist() == [2, 1, 0]
    assert pc.loc["B", "f1"] == 0.0
    conf = result.confusions
    assert conf[["true", "predicted", "count"]].values.tolist() == [["B", "A", 2], ["A", "B", 1]]
    assert conf["rate"].tolist() == pytest.approx([1.0, 1 / 3])
    assert result.confusion_matrix.loc["A"].tolist() == [2, 1]


def test_predictions_hold_per_query_values(result) -> None:
    p = result.predictions
    assert p.index.tolist() == [0, 1, 2, 3, 4]  # the unlabelled row 5 is not a query
    assert p["predicted"].tolist() == ["A", "A", "A", "B", "A"]
    assert p["nearest"].tolist() == [1, 0, 1, 2, 3]
    assert p["knn_accuracy@1"].tolist() == [1, 1, 0, 0, 0]
    assert p["map"].mean() == pytest.approx(result.metrics["map"])


def test_k_larger_than_gallery_divides_by_what_exists() -> None:
    r = evaluate(VECTORS, LABELS, FILES, ks=(10,), weighting="uniform")
    # Each query sees 4 items; q0 has 2 relevant among them.
    assert r.predictions.loc[0, "precision@10"] == pytest.approx(2 / 4)
    assert r.metrics["recall@10"] == pytest.approx(1.0)


def test_same_file_rows_never_see_each_other() -> None:
    # Two windows of file "x" (label A) are identical; a B item is close to both.
    # Rows 0 and 1 must skip each other and find row 2 (B); row 2 sees 0 and 1 tied
    # (same vector) and takes the lower index; row 3 (30 deg) is nearest row 2 (22 deg).
    v = arc(0, 0, 8, 30)
    labels = ["A", "A", "B", "A"]
    r = evaluate(v, labels, ["x", "x", "y", "z"], ks=(1,))
    assert r.predictions["nearest"].tolist() == [2, 2, 0, 2]
    assert r.metrics["knn_accuracy@1"] == 0.0
    leaky = evaluate(v, labels, ["x", "w", "y", "z"], ks=(1,))  # rows 0 and 1 now find each other
    assert leaky.metrics["knn_accuracy@1"] == pytest.approx(2 / 4)


def test_group_members_never_vote() -> None:
    # q (A, speaker s1) has a same-speaker twin labelled B; its nearest other-speaker
    # item is A. Letting the group vote flips the answer to B.
    v = arc(0, 1, 20, 90, 92)
    labels = ["A", "B", "A", "B", "B"]
    groups = ["s1", "s1", "s2", "s3", "s3"]
    files = ["a", "b", "c", "d", "e"]
    grouped = evaluate(v, labels, files, groups, ks=(1,))
    open_ = evaluate(v, labels, files, None, ks=(1,))
    assert grouped.predictions.loc[0, "predicted"] == "A"
    assert open_.predictions.loc[0, "predicted"] == "B"
    p = grouped.predictions
    near_group = [groups[i] for i in p["nearest"]]
    assert all(g != ng for g, ng in zip(p["group"], near_group))


def test_single_group_leaves_queries_without_neighbours() -> None:
    r = evaluate(arc(0, 10, 20), ["A", "B", "A"], ["a", "b", "c"], ["s", "s", "s"], ks=(1,))
    assert r.metrics["n_no_neighbours"] == 3
    assert r.metrics["knn_accuracy@1"] == 0.0
    assert r.predictions["predicted"].isna().all()


def test_gaussian_mixture_is_perfect() -> None:
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(4), 25)
    v = np.eye(16)[truth] * 10 + rng.normal(0, 0.3, (100, 16))
    r = evaluate(v, [f"c{t}" for t in truth], np.arange(100), ks=(1, 5, 10))
    for key in ("knn_accuracy@1", "knn_accuracy@10", "precision@10", "map@10", "map"):
        assert r.metrics[key] == pytest.approx(1.0)
    assert r.metrics["chance_accuracy"] == pytest.approx(0.25)
    assert r.pr_curve["precision"].tolist() == pytest.approx([1.0] * 21)



def test_multi_label_by_hand() -> None:
    # q0 (0 deg, a;b)  q1 (10, a)  q2 (30, b)  q3 (70, c); nearest at k=1:
    # q0 -> q1 (a), q1 -> q0 (a;b: a and b tie at one rank -> "a"), q2 -> q1 (a), q3 -> q2 (b).
    r = evaluate(arc(0, 10, 30, 70), ["a;b", "a", "b", "c"], ["0", "1", "2", "3"], ks=(1,))
    assert r.multi_label
    m = r.metrics
    assert m["knn_accuracy@1"] == pytest.approx(2 / 4)  # q0 a in {a,b}, q1 a in {a}
    assert m["precision@1"] == pytest.approx(2 / 4)  # relevance = shares a label
    assert m["n_no_relevant"] == 1  # nobody else is "c"
    # Per-label AP of the k=1 scores, each label on its own; tied scores are one threshold (sklearn):
    #   a: scores [1,1,1,0], truth [1,1,0,0] -> at 1: precision 2/3, recall 1 -> 2/3
    #   b: scores [0,1,0,1], truth [1,0,1,0] -> at 1: recall 0; at 0: precision 2/4, recall 1 -> 1/2
    #   c: scores [0,0,0,0], truth [0,0,0,1] -> 1/4
    # (ranking tied queries by row, as before, gave a 1 and b 5/12: it depended on the row order)
    ap = r.per_class.set_index("label")["ap"]
    assert ap.tolist() == pytest.approx([2 / 3, 1 / 2, 1 / 4])
    assert m["label_map@1"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 4) / 3)
    # Predicted sets (score >= 0.5): {a}, {a,b}, {a}, {b}.
    assert r.predictions["predicted"].tolist() == ["a", "a;b", "a", "b"]
    pc = r.per_class.set_index("label")
    assert pc.loc["a", ["support", "predicted", "tp"]].tolist() == [2, 3, 2]
    assert pc.loc["b", ["support", "predicted", "tp"]].tolist() == [2, 2, 0]


def test_three_thousand_items_match_brute_force() -> None:
    """At FSDD's size (3000 items, 6 groups) the chunked leave-one-group-out search gives the
    brute-force nearest neighbour of every item (its speed is in scripts/bench_baseline.py)."""
    rng = np.random.default_rng(0)
    n = 3000
    v = rng.normal(size=(n, 64)).astype(np.float32)
    labels = rng.integers(0, 10, n).astype(str)
    groups = rng.integers(0, 6, n)
    r = evaluate(v, labels, np.arange(n), groups, ks=(1, 5, 10))
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    sim = unit @ unit.T
    sim[groups[:, None] == groups[None, :]] = -np.inf  # same group (and self) never seen
    nearest = sim.argmax(axis=1)
    assert r.metrics["n_queries"] == n
    assert r.metrics["knn_accuracy@1"] == pytest.approx(float((labels[nearest] == labels).mean()), abs=1e-12)


def test_bad_inputs_raise_typed_errors() -> None:
    with pytest.raises(InputError, match="labels has 2 entries but there are 6 vectors"):
        evaluate(VECTORS, ["A", "B"], FILES)
    with pytest.raises(InputError, match="need at least 2 labelled items"):
        evaluate(VECTORS, ["A"] + [None] * 5, FILES)
    with pytest.raises(InputError, match="ks must be positive integers"):
        evaluate(VECTORS, LABELS, FILES, ks=(0, 1))
    bad = VECTORS.copy()
    bad[0, 0] = np.inf
    with pytest.raises(InputError, match="NaN or Inf"):
        evaluate(bad, LABELS, FILES)
