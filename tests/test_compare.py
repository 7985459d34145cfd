"""Side-by-side comparison and the paired bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.compare import compare, paired_bootstrap
from retrieval.errors import InputError
from retrieval.evaluate import evaluate


def test_winner_margin_and_table_from_per_query_values() -> None:
    # Per-query correctness: a 3/4, b 1/4, c 2/4 -> a wins, c is runner-up by 1/4.
    c = compare({"b": [1, 0, 0, 0], "a": [1, 1, 1, 0], "c": [0, 1, 1, 0]}, "knn_accuracy@1")
    assert (c.winner, c.runner_up) == ("a", "c")
    assert c.margin == pytest.approx(0.25)
    assert c.table["knn_accuracy@1"].tolist() == pytest.approx([0.25, 0.75, 0.5])
    assert list(c.table.index) == ["b", "a", "c"]
    assert c.ci_low <= c.margin <= c.ci_high
    assert "a beats c on knn_accuracy@1 by +0.2500" in c.summary()


def test_bootstrap_is_seeded_and_exact_on_a_constant_difference() -> None:
    d = np.ones(50)
    assert paired_bootstrap(d, None, 200, 0.95, 0)[:4] == (1.0, 1.0, 1.0, 0.0)
    rng = np.random.default_rng(0)
    noisy = rng.normal(0.1, 1.0, 400)
    assert paired_bootstrap(noisy, None, 300, 0.9, 7) == paired_bootstrap(noisy, None, 300, 0.9, 7)
    # Group resampling: two groups with mean differences 0 (3 queries) and 1 (1 query).
    # Resamples are {0,0}: 0, {1,1}: 1, {0,1}: 1/4, so every bootstrap margin is one of those.
    margin, lo, hi, p, unit, n = paired_bootstrap(np.array([0, 0, 0, 1.0]), np.array(["s", "s", "s", "t"]),
                                                  500, 0.95, 0)
    assert (margin, unit, n) == (0.25, "group", 2)
    assert lo == 0.0 and hi == 1.0 and 0 < p < 1


def test_equal_entries_tie_to_the_first_named() -> None:
    c = compare({"x": [1, 0], "y": [1, 0]})
    assert (c.winner, c.runner_up, c.margin, c.ci_low, c.ci_high) == ("x", "y", 0.0, 0.0, 0.0)
    assert c.p_value == 1.0


def test_eval_results_are_aligned_by_item_id() -> None:
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1], 20)
    good = np.eye(4)[truth] * 3 + rng.normal(0, 0.5, (40, 4))
    bad = rng.normal(size=(40, 4))
    labels = [f"c{t}" for t in truth]
    files = [f"f{i}" for i in range(40)]
    r_good = evaluate(good, labels, files, ks=(1,), item_ids=files)
    order = np.arange(40)[::-1]  # the same items, listed backwards
    r_bad = evaluate(bad[order], [labels[i] for i in order], [files[i] for i in order], ks=(1,),
                     item_ids=[files[i] for i in order])
    c = compare({"bad": r_bad, "good": r_good}, groups=None)
    assert c.winner == "good"
    expected = r_good.metrics["knn_accuracy@1"] - r_bad.metrics["knn_accuracy@1"]
    assert c.margin == pytest.approx(expected)
    assert c.table.loc["good", "map"] == pytest.approx(r_good.metrics["map"])
    with pytest.raises(InputError, match="different items"):
        compare({"a": r_good, "b": evaluate(good[:30], labels[:30], files[:30], ks=(1,), item_ids=files[:30])})
    with pytest.raises(InputError, match="no per-query values"):
        compare({"a": r_good}, "chance_accuracy")


def test_single_entry_and_bad_settings() -> None:
    c = compare({"only": [1, 0, 1]})
    assert c.runner_up is None and "only entry" in c.summary()
    with pytest.raises(InputError, match="nothing to compare"):
        compare({})
    with pytest.raises(InputError, match="confidence must lie in"):
        compare({"a": [1], "b": [0]}, confidence=1.5)
    with pytest.raises(InputError, match="groups has 1 entries but there are 2"):
        compare({"a": [1, 0], "b": [0, 0]}, groups=["s"])
