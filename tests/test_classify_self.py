"""classify leaves a clip's own file (by content) out of its vote, unless --include-self."""

import json
import shutil

import pandas as pd
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
    synth.write_demo_corpus(root, per_class=4)
    ix = tmp_path / "ix"
    ingest(root, ix, Choices(), IngestOptions())
    return root, ix


def test_own_file_is_left_out_of_its_vote(labelled):
    root, ix = labelled
    clip = root / "clicks" / "clicks_02.wav"
    with Index.open(ix) as idx:
        (row,) = idx.classify(clip, k=3).to_dict(orient="records")
        (with_self,) = idx.classify(clip, k=3, include_self=True).to_dict(orient="records")
    assert all(p != "clicks/clicks_02.wav" for p, _, _ in row["neighbours"])
    assert row["excluded_self"] == 1
    assert max(sim for _, sim, _ in row["neighbours"]) < 0.9999
    first_path, first_sim, _ = with_self["neighbours"][0]
    assert first_path == "clicks/clicks_02.wav" and first_sim == pytest.approx(1.0, abs=1e-4)
    assert with_self["excluded_self"] == 0


def test_a_copy_at_another_path_is_left_out_too(labelled, tmp_path):
    root, ix = labelled
    copy = tmp_path / "elsewhere" / "renamed.wav"
    copy.parent.mkdir()
    shutil.copy(root / "tone" / "tone_01.wav", copy)
    with Index.open(ix) as idx:
        (row,) = idx.classify(copy, k=4).to_dict(orient="records")
    assert row["excluded_self"] == 1
    assert "tone/tone_01.wav" not in [p for p, _, _ in row["neighbours"]]


def test_folder_accuracy_matches_leave_one_out_eval(labelled):
    """Classifying the indexed corpus itself gives eval's leave-one-out accuracy, not an inflated one."""
    root, ix = labelled
    with Index.open(ix) as idx:
        preds = idx.classify(root, k=5)
        result = idx.evaluate("label", ks=(5,))
        inflated = idx.classify(root, k=5, include_self=True)
    truth = preds["clip"].map(lambda c: c.split("/")[-2])
    by_path = result.predictions["predicted"]
    rel = preds["clip"].map(lambda c: "/".join(c.split("/")[-2:]))
    assert (preds.predicted.to_numpy() == by_path.loc[rel].to_numpy()).all()
    assert (preds.predicted == truth).mean() == pytest.approx(result.metrics["knn_accuracy@5"])
    assert (preds.excluded_self == 1).all() and (inflated.excluded_self == 0).all()
    # with its own vote (similarity 1.0) every clip of this corpus wins its own label
    assert (inflated.predicted == truth).mean() == 1.0


def test_array_queries_exclude_nothing(labelled):
    _, ix = labelled
    with Index.open(ix) as idx:
        out = idx.classify(synth.demo_clip("noise", 99), k=3, sample_rate=16000)
    assert out.excluded_self[0] == 0 and len(out.neighbours[0]) == 3


def test_cli_says_what_was_excluded(labelled, tmp_path):
    root, ix = labelled
    run = CliRunner().invoke
    one = run(cli, ["classify", str(root / "vowel" / "vowel_01.wav"), "--index", str(ix), "-k", "3"])
    assert one.exit_code == 0, one.output
    assert "left out of its vote; --include-self counts it" in one.output
    body = json.loads(run(cli, ["classify", str(root / "vowel" / "vowel_01.wav"), "--index", str(ix), "--json"]).stdout)
    assert body[0]["excluded_self"] == 1
    body = json.loads(run(cli, ["classify", str(root / "vowel" / "vowel_01.wav"), "--index", str(ix), "--json",
                                "--include-self"]).stdout)
    assert body[0]["excluded_self"] == 0 and body[0]["neighbours"][0][0] == "vowel/vowel_01.wav"
    folder = run(cli, ["classify", str(root / "chirp"), "--index", str(ix), "--out", str(tmp_path / "p.csv")])
    assert folder.exit_code == 0, folder.output
    assert "4 of 4 clip(s) are in the index" in folder.output
    assert (pd.read_csv(tmp_path / "p.csv")["excluded_self"] == 1).all()
