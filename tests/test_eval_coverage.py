"""eval says, next to every metric, how many queries it averages and which were left out and why."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from retrieval import synth
from retrieval.cli import cli
from retrieval.configure import Choices
from retrieval.evaluate import evaluate
from retrieval.ingest import IngestOptions, ingest
from retrieval.report import write_report

# 12 items; groups g0/g1 split label "a" so its queries keep relevant items, while all of
# label "b" and the lone "c" sit in g2 / alone: group exclusion leaves them nothing relevant.
LABELS = ["a"] * 6 + ["b"] * 5 + ["c"]
GROUPS = ["g0"] * 3 + ["g1"] * 3 + ["g2"] * 6


@pytest.fixture
def grouped():
    v = np.random.default_rng(0).normal(size=(12, 4))
    return v, evaluate(v, LABELS, np.arange(12), GROUPS, ks=(1, 5))


def test_coverage_counts_the_queries_each_metric_averages(grouped):
    _, r = grouped
    cov = r.coverage
    assert r.metrics["n_no_relevant"] == 6
    for k in (1, 5):
        assert cov.loc[f"map@{k}", "averaged_over"] == 6 and cov.loc[f"map@{k}", "excluded"] == 6
        assert cov.loc[f"recall@{k}", "excluded"] == 6
        assert cov.loc[f"precision@{k}", "averaged_over"] == 12 and cov.loc[f"precision@{k}", "excluded"] == 0
        assert "count as misses" in cov.loc[f"precision@{k}", "why"]
        # the figure is the mean over exactly the queries counted
        col = r.predictions[f"map@{k}"]
        assert col.notna().sum() == cov.loc[f"map@{k}", "averaged_over"]
    assert cov.loc["map", "excluded"] == 6
    assert "no relevant item left after excluding their own file and group" in cov.loc["map@1", "why"]
    assert cov.loc["macro_f1@5", "unit"] == "labels" and cov.loc["macro_f1@5", "averaged_over"] == 3
    assert set(cov.index) == {k for k in r.metrics if not k.startswith("n_")}
    # the case from the issue: map@1 reads higher than precision@1 because half the queries are left out
    assert r.metrics["map@1"] > r.metrics["precision@1"]


def test_without_groups_nothing_is_left_out():
    v = np.random.default_rng(1).normal(size=(8, 3))
    r = evaluate(v, ["a", "b"] * 4, np.arange(8), ks=(1,))
    assert (r.coverage["excluded"] == 0).all() and (r.coverage["why"] == "").all()


def test_report_md_shows_coverage(grouped, tmp_path):
    v, r = grouped
    text = write_report(r, v, LABELS, tmp_path / "rep").read_text()
    assert "| k | knn_accuracy | precision | recall | map | queries (accuracy, precision) | queries (recall, map) |" in text
    assert "| 1 | 0.083 | 0.083 | 0.056 | 0.167 | 12 queries | 6 of 12 queries |" in text
    assert "| map@1 | 0.1667 | 6 of 12 queries | 6 | 6 queries have no relevant item left" in text


def test_cli_table_and_json(tmp_path):
    root = tmp_path / "corpus"
    synth.write_demo_corpus(root, per_class=2)
    # every clip of 'tone' and 'noise' in one group each: grouped eval leaves them no relevant item
    rows = ["file,take"] + [f"{c}/{c}_{i:02d}.wav,{c if c in ('tone', 'noise') else f'g{i}'}"
                            for c in synth.DEMO_CLASSES for i in range(2)]
    (tmp_path / "meta.csv").write_text("\n".join(rows) + "\n")
    ingest(root, tmp_path / "ix", Choices(), IngestOptions(labels_csv=tmp_path / "meta.csv"))
    run = CliRunner().invoke
    args = ["eval", "--index", str(tmp_path / "ix"), "--label-column", "label", "--group-column", "take", "-k", "1"]
    body = json.loads(run(cli, [*args, "--json"]).stdout)
    assert body["map@1"] is not None and body["n_no_relevant"] == 4
    assert body["coverage"]["map@1"] == {"averaged_over": 6, "unit": "queries", "excluded": 4,
                                         "why": body["coverage"]["map@1"]["why"]}
    assert body["coverage"]["map@1"]["why"].startswith("4 queries have no relevant item left")
    assert body["coverage"]["precision@1"]["excluded"] == 0
    table = run(cli, args)
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].split() == ["metric", "value", "over", "left", "out"]
    map_line = next(line for line in lines if line.startswith("map@1 "))
    assert map_line.split()[2:] == ["6", "queries", "4", "[2]"]
    assert any(line.startswith("[2] 4 queries have no relevant item left after excluding their own file and group")
               for line in lines)
