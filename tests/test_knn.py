"""kNN label transfer against hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.errors import InputError, UnknownNameError
from retrieval.knn import classify, nearest, rank_top_k, split_label, vote_weights

# Unit vectors whose similarities to Q = [1, 0] are exact: 1.0, 0.8, 0.6, 0.0, -1.0.
Q = np.array([[1.0, 0.0]])
G = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]])
LABELS = ["a", "b", "b", "a", "a"]


def test_split_label_handles_missing_and_multi() -> None:
    assert split_label(None) == ()
    assert split_label(float("nan")) == ()
    assert split_label("") == ()
    assert split_label(" dog ; bark;;dog") == ("dog", "bark")
    assert split_label(3) == ("3",)


def test_similarity_weighted_vote_by_hand() -> None:
    # k=3: neighbours 1.0 (a), 0.8 (b), 0.6 (b) -> a = 1.0, b = 1.4 -> b with 1.4 / 2.4.
    (p,) = classify(Q, G, LABELS, k=3)
    assert p.label == "b"
    assert p.confidence == pytest.approx(1.4 / 2.4)
    assert p.votes == pytest.approx({"b": 1.4, "a": 1.0})
    assert list(p.votes) == ["b", "a"]
    assert [i for i, _ in p.neighbours] == [0, 1, 2]
    assert [s for _, s in p.neighbours] == pytest.approx([1.0, 0.8, 0.6])
    # k=1: the single nearest neighbour decides with full confidence.
    (p1,) = classify(Q, G, LABELS, k=1)
    assert (p1.label, p1.confidence) == ("a", 1.0)


def test_uniform_vote_and_negative_similarities_by_hand() -> None:
    # k=5 uniform: a has 3 votes, b 2 -> a with 3/5.
    (u,) = classify(Q, G, LABELS, k=5, weighting="uniform")
    assert (u.label, u.confidence) == ("a", pytest.approx(0.6))
    # k=5 similarity: weights max(s, 0) = 1, .8, .6, 0, 0 -> b (1.4) beats a (1.0).
    (s,) = classify(Q, G, LABELS, k=5)
    assert s.label == "b" and s.confidence == pytest.approx(1.4 / 2.4)


def test_no_positive_similarity_falls_back_to_uniform() -> None:
    w = vote_weights(np.array([[-0.2, -0.5, np.nan]]))
    assert w.tolist() == [[1.0, 1.0, 0.0]]
    assert vote_weights(np.array([[0.5, -0.5]])).tolist() == [[0.5, 0.0]]


def test_tie_goes_to_the_best_ranked_neighbours_label() -> None:
    # Two identical gallery vectors: equal similarity, so gallery index 0 ranks first.
    g = np.array([[1.0, 0.0], [1.0, 0.0]])
    (p,) = classify(Q, g, ["zebra", "ant"], k=2)
    assert p.label == "zebra"  # not the alphabetically first: the best-ranked neighbour's
    assert p.confidence == pytest.approx(0.5)
    assert [i for i, _ in p.neighbours] == [0, 1]
    # One neighbour with two labels ties them at the same rank: smallest label wins.
    (m,) = classify(Q, g[:1], ["y;x"], k=1)
    assert (m.label, m.confidence) == ("x", 1.0)
    assert m.scores == {"x": 1.0, "y": 1.0}


def test_multi_label_scores_by_hand() -> None:
    # Neighbours with similarity 1.0 ("a;b") and 0.6 ("b"): a = 1/1.6, b = 1.6/1.6.
    g = np.array([[1.0, 0.0], [0.6, 0.8]])
    (p,) = classify(Q, g, ["a;b", "b"], k=2)
    assert p.scores == pytest.approx({"b": 1.0, "a": 1.0 / 1.6})
    assert (p.label, p.confidence) == ("b", pytest.approx(1.0))


def test_k_larger_than_gallery_uses_all() -> None:
    (p,) = classify(Q, G, LABELS, k=100, weighting="uniform")
    assert len(p.neighbours) == 5
    nb = nearest(Q, G, 100)
    assert nb.indices.shape == (1, 5) and nb.n_eligible.tolist() == [5]


def test_unlabelled_gallery_items_never_vote() -> None:
    # The nearest item (index 0) has no label; the next one (index 1, "b") decides.
    (p,) = classify(Q, G, [None, "b", "", float("nan"), "a"], k=1)
    assert p.label == "b"
    assert p.neighbours == [(1, pytest.approx(0.8))]


def test_exclusion_by_ids_groups_and_mask() -> None:
    ids = ["v", "x", "y", "z", "w"]
    (p,) = classify(Q, G, LABELS, k=1, query_ids=["q"], gallery_ids=ids)
    assert p.neighbours[0][0] == 0  # no gallery item has the id "q"
    (p,) = classify(Q, G, LABELS, k=1, query_ids=["q"], gallery_ids=["q", "q", "y", "z", "w"])
    assert p.neighbours[0][0] == 2
    # Including the query's own group would give "a" (index 0); excluding it gives "b".
    groups = ["s1", "s2", "s2", "s3", "s3"]
    (with_group,) = classify(Q, G, LABELS, k=1)
    (without,) = classify(Q, G, LABELS, k=1, query_groups=["s1"], gallery_groups=groups)
    assert (with_group.label, without.label) == ("a", "b")
    mask = np.array([[True, True, False, False, False]])
    (p,) = classify(Q, G, LABELS, k=1, exclude=mask)
    assert p.neighbours[0][0] == 2
    # Missing groups exclude nothing.
    (p,) = classify(Q, G, LABELS, k=1, query_groups=[None], gallery_groups=[None] * 5)
    assert p.neighbours[0][0] == 0


def test_everything_excluded_gives_no_label() -> None:
    (p,) = classify(Q, G, LABELS, k=3, exclude=np.ones((1, 5), bool))
    assert (p.label, p.confidence, p.neighbours, p.votes) == (None, 0.0, [], {})
    nb = nearest(Q, G, 3, exclude=np.ones((1, 5), bool))
    assert nb.indices.tolist() == [[-1, -1, -1]] and np.isnan(nb.similarities).all()


def test_rank_top_k_matches_stable_sort_with_many_ties() -> None:
    rng = np.random.default_rng(0)
    sims = rng.integers(0, 4, size=(50, 40)).astype(np.float32)  # heavy ties
    for k in (1, 3, 10, 40, 60):
        expected = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(rank_top_k(sims, k), expected)


def test_gaussian_mixture_gives_known_labels() -> None:
    rng = np.random.default_rng(1)
    centres = np.eye(8)[:3] * 10.0
    truth = np.repeat([0, 1, 2], 30)
    gallery = centres[truth] + rng.normal(0, 0.5, (90, 8))
    queries = centres[[2, 0, 1]] + rng.normal(0, 0.5, (3, 8))
    preds = classify(queries, gallery, [f"c{t}" for t in truth], k=7)
    assert [p.label for p in preds] == ["c2", "c0", "c1"]
    assert all(p.confidence == pytest.approx(1.0) for p in preds)


def test_bad_inputs_raise_typed_errors() -> None:
    with pytest.raises(InputError, match="dim 3 but the gallery has dim 2"):
        nearest(np.ones((1, 3)), G, 1)
    with pytest.raises(InputError, match="k must be a positive integer"):
        nearest(Q, G, 0)
    with pytest.raises(InputError, match="NaN or Inf in 1 rows"):
        nearest(np.array([[np.nan, 0.0]]), G, 1)
    with pytest.raises(InputError, match="5 vectors but 2 labels"):
        classify(Q, G, ["a", "b"])
    with pytest.raises(InputError, match="no gallery item has a label"):
        classify(Q, G, [None] * 5)
    with pytest.raises(InputError, match="pass both query_groups and gallery_groups"):
        nearest(Q, G, 1, query_groups=["a"])
    with pytest.raises(UnknownNameError, match="similarity, uniform"):
        classify(Q, G, LABELS, weighting="softmax")
