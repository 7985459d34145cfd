"""Index.classify / Index.evaluate and the classify, eval and compare commands, on a labelled corpus."""

import json

import pytest
from click.testing import CliRunner

from retrieval import synth
from retrieval.cli import cli
from retrieval.configure import Choices
from retrieval.index import Index
from retrieval.ingest import IngestOptions, ingest


@pytest.fixture
def labelled(tmp_path):
    root = tmp_path / "corpus"
    synth.write_demo_corpus(root, per_class=6)
    # a group per take index: group g holds clip g of every class
    lines = ["file,take"] + [f"{c}/{c}_{i:02d}.wav,g{i % 3}" for c in synth.DEMO_CLASSES for i in range(6)]
    (tmp_path / "meta.csv").write_text("\n".join(lines) + "\n")
    ix = tmp_path / "ix"
    ingest(root, ix, Choices(), IngestOptions(labels_csv=tmp_path / "meta.csv"))
    return root, ix


def test_evaluate_is_leakage_aware_and_beats_chance(labelled):
    _, ix = labelled
    with Index.open(ix) as idx:
        plain = idx.evaluate("label", ks=(1, 5))
        grouped = idx.evaluate("label", "take", ks=(1, 5), probe=True)
    assert plain.metrics["n_queries"] == 30 and plain.metrics["chance_accuracy"] == pytest.approx(0.2)
    assert plain.metrics["knn_accuracy@1"] > 0.5
    # with groups, no query's neighbours share its group
    preds = grouped.predictions
    nearest_group = preds["nearest"].map(preds["group"])
    assert (nearest_group != preds["group"]).all()
    assert "probe_accuracy" in grouped.metrics


def test_classify_a_file_a_folder_and_an_array(labelled, tmp_path):
    root, ix = labelled
    with Index.open(ix) as idx:
        one = idx.classify(root / "clicks" / "clicks_03.wav", k=3, where="path != 'clicks/clicks_03.wav'")
        assert one.predicted[0] == "clicks" and 0 < one.confidence[0] <= 1
        assert len(one.neighbours[0]) == 3 and all(p != "clicks/clicks_03.wav" for p, _, _ in one.neighbours[0])
        folder = idx.classify(root / "tone", k=5)
        assert len(folder) == 6 and (folder.predicted == "tone").mean() >= 0.5
        arr = idx.classify(synth.demo_clip("noise", 99), k=5, sample_rate=16000)
        assert arr.predicted[0] == "noise"


def test_classify_eval_compare_commands(labelled, tmp_path):
    root, ix = labelled
    run = CliRunner().invoke
    out = run(cli, ["classify", str(root / "vowel" / "vowel_01.wav"), "--index", str(ix), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)[0]["predicted"] == "vowel"
    csv = tmp_path / "p.csv"
    out = run(cli, ["classify", str(root / "chirp"), "--index", str(ix), "--out", str(csv)])
    assert out.exit_code == 0 and csv.read_text().count("\n") == 7
    ev = run(cli, ["eval", "--index", str(ix), "--label-column", "label", "--group-column", "take", "-k", "1,3",
                   "--json", "--report", str(tmp_path / "rep")])
    metrics = json.loads(ev.stdout)
    assert {"knn_accuracy@1", "precision@3", "map@3", "map", "chance_accuracy"} <= set(metrics)
    assert (tmp_path / "rep" / "report.md").is_file() and list((tmp_path / "rep").glob("*.png"))
    ingest(root, tmp_path / "ix2", Choices(pooling="mean"))
    cmp = run(cli, ["compare", "--index", str(ix), "--index", str(tmp_path / "ix2"), "--label-column", "label",
                    "--json", "--resamples", "200"])
    assert cmp.exit_code == 0, cmp.output
    body = json.loads(cmp.stdout)
    assert body["winner"] in body["table"] and body["ci"][0] <= body["margin"] <= body["ci"][1]
    bad = run(cli, ["eval", "--index", str(ix), "--label-column", "nope"])
    assert bad.exit_code == 1 and "no metadata column 'nope'" in bad.output
