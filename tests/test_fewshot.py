"""Few-shot curves: replicate counts, group exclusion that would catch a leak, metrics from sklearn, the verdict."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.metrics import average_precision_score, roc_auc_score

from retrieval.cli import cli
from retrieval.configure import Choices
from retrieval.errors import InputError
from retrieval.fewshot import FewShotResult, class_scores, few_shot, metrics
from retrieval.ingest import IngestOptions, ingest


def _leaky(n_groups: int = 4, n_classes: int = 4, pairs: int = 10, d: int = 32, seed: int = 0):
    """No class signal across groups; inside a group every item has an exact twin with its label."""
    rng = np.random.default_rng(seed)
    x, y, g = [], [], []
    for group in range(n_groups):
        for c in range(n_classes):
            for _ in range(pairs):
                v = rng.standard_normal(d)
                v /= np.linalg.norm(v)
                x += [v, v]
                y += [f"c{c}", f"c{c}"]
                g += [f"g{group}", f"g{group}"]
    return np.array(x, np.float32), y, g


def test_group_exclusion_keeps_twins_out_of_the_support():
    x, y, g = _leaky()
    grouped = few_shot(x, y, g, [60], draws=1, methods=("knn",))
    top1 = grouped.table.query("metric == 'top1'")["mean"].iloc[0]
    assert top1 < 0.4  # chance is 0.25: nothing from the test group's twins leaked in
    leaky = few_shot(x, y, None, [60], draws=1, methods=("knn",))
    assert leaky.table.query("metric == 'top1'")["mean"].iloc[0] > 0.6  # without groups the twins decide
    assert grouped.settings["folds"] == 4 and grouped.settings["grouped"]


def test_replicates_and_ci_shape():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 40)
    x = rng.standard_normal((120, 8)).astype(np.float32) + 2.0 * np.eye(8)[y]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    g = np.tile(np.arange(4), 30)
    r = few_shot(x, [str(v) for v in y], g.tolist(), [1, 4], draws=3)
    assert len(r.replicates) == 4 * 3 * 2 * 4  # folds x draws x shot counts x methods
    assert set(r.table["method"]) == {"head", "head_weak", "prototype", "knn"}
    assert (r.table["ci_low"] <= r.table["mean"]).all() and (r.table["mean"] <= r.table["ci_high"]).all()
    assert (r.table["replicates"] == 12).all()
    four = r.table.query("shots == 4 and metric == 'macro_roc_auc'").set_index("method")["mean"]
    assert (four > 0.85).all()  # well separated classes: every method finds them
    assert set(r.diffs["other"]) == {"head_weak", "prototype", "knn"}


def test_metrics_are_sklearns_over_present_classes():
    rng = np.random.default_rng(2)
    y = np.array([0, 0, 1, 1, 1, 0])
    s = np.round(rng.random((6, 3)), 1).astype(np.float32)  # ties on purpose; class 2 absent
    m = metrics(s, y, 3)
    onehot = np.eye(3, dtype=bool)[y][:, :2]
    assert m["macro_roc_auc"] == pytest.approx(roc_auc_score(onehot, s[:, :2], average="macro"))
    assert m["cmap"] == pytest.approx(average_precision_score(onehot, s[:, :2], average="macro"))
    assert m["top1"] == pytest.approx(float((s.argmax(1) == y).mean()))


def test_prototype_and_knn_scores_are_exact():
    xs = np.eye(3, dtype=np.float32)
    ys = np.array([0, 1, 1])
    xt = np.array([[1, 0, 0], [0, 0.6, 0.8]], np.float32)
    np.testing.assert_allclose(class_scores("prototype", xs, ys, xt, 2),
                               [[1, 0], [0, (0.6 + 0.8) / np.sqrt(2)]], atol=1e-6)
    np.testing.assert_allclose(class_scores("knn", xs, ys, xt, 2, k=2), [[1, 0], [0, 1.4]], atol=1e-6)
    with pytest.raises(InputError, match="unknown few-shot method"):
        class_scores("svm", xs, ys, xt, 2)


def test_verdict_names_the_crossover_or_says_there_is_none():
    diffs = pd.DataFrame([{"shots": n, "other": o, "metric": "macro_roc_auc", "mean": m, "ci_low": m - 0.01,
                           "ci_high": m + 0.01} for o in ("knn", "prototype")
                          for n, m in ((1, -0.05), (8, 0.03), (32, 0.05))])
    diffs.loc[(diffs.other == "prototype") & (diffs.shots == 32), ["mean", "ci_low"]] = [-0.02, -0.03]
    text = FewShotResult(pd.DataFrame(), diffs, pd.DataFrame()).verdict()
    assert "beats knn on macro_roc_auc from n=8" in text
    assert "does not beat prototype" in text


def test_few_shot_refuses_bad_input():
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(InputError, match="two labelled classes"):
        few_shot(x, ["a", "a", None, "a"], None, [1])
    with pytest.raises(InputError, match="1 or more"):
        few_shot(x, ["a", "b", "a", "b"], None, [0])
    with pytest.raises(InputError, match="two groups"):
        few_shot(x, ["a", "b", "a", "b"], ["g"] * 4, [1])


def test_cli_eval_few_shot(corpus, tmp_path):
    ix = tmp_path / "ix"
    ingest([corpus], ix, Choices(), IngestOptions())
    r = CliRunner().invoke(cli, ["eval", "--index", str(ix), "--label-column", "label", "--few-shot", "1,2",
                                 "--draws", "2", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert {row["shots"] for row in doc["curve"]} == {1, 2} and "verdict" in doc
    assert doc["settings"]["folds"] >= 2 and not doc["settings"]["grouped"]
