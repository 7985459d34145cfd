"""Linear probe on synthetic embeddings with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.errors import InputError
from retrieval.probe import linear_probe


def mixture(n_per: int = 20, seed: int = 0, spread: float = 0.3) -> tuple[np.ndarray, list[str], list[str]]:
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(3), n_per)
    x = np.eye(12)[truth] * 5 + rng.normal(0, spread, (truth.size, 12))
    groups = [f"g{i % 4}" for i in range(truth.size)]
    return x, [f"c{t}" for t in truth], groups


def test_separable_mixture_is_perfect_with_stratified_folds() -> None:
    x, y, _ = mixture()
    r = linear_probe(x, y)
    assert (r.accuracy_mean, r.accuracy_std, r.macro_f1_mean) == (1.0, 0.0, 1.0)
    assert (r.splitter, r.n_splits, r.n_items, r.n_classes) == ("StratifiedKFold", 5, 60, 3)
    assert r.metrics()["probe_accuracy"] == 1.0


def test_groups_use_group_folds_and_clamp_the_fold_count() -> None:
    x, y, g = mixture()
    r = linear_probe(x, y, g, n_splits=10)
    assert (r.splitter, r.n_splits) == ("GroupKFold", 4)  # only 4 groups
    assert r.accuracy_mean == 1.0 and len(r.fold_accuracy) == 4


def test_noise_labels_sit_near_chance() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 20))
    y = list(rng.integers(0, 2, 300).astype(str))
    r = linear_probe(x, y)
    assert 0.35 < r.accuracy_mean < 0.65


def test_unlabelled_rows_are_dropped() -> None:
    x, y, _ = mixture()
    y = [None if i % 10 == 0 else v for i, v in enumerate(y)]
    assert linear_probe(x, y).n_items == 54


def test_bad_inputs_raise_typed_errors() -> None:
    x, y, g = mixture()
    with pytest.raises(InputError, match="one label per item"):
        linear_probe(x, ["a;b"] + y[1:])
    with pytest.raises(InputError, match="at least 2 labels"):
        linear_probe(x, ["a"] * len(y))
    with pytest.raises(InputError, match="at least 2 groups; got 1"):
        linear_probe(x, y, ["s"] * len(y))
    with pytest.raises(InputError, match="label 'z' has 1"):
        linear_probe(x, y[:-1] + ["z"])
    with pytest.raises(InputError, match="labels has 3 entries"):
        linear_probe(x, y[:3])
