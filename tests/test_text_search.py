"""Text search and zero-shot through an index built with a tiny random CLAP checkpoint."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from retrieval import synth
from retrieval.cli import cli
from retrieval.configure import Choices
from retrieval.errors import EncoderError
from retrieval.index import Index
from retrieval.ingest import ingest
from tests.conftest import write
from tests.encoders._clap_models import build_tiny_clap


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory):
    return build_tiny_clap(tmp_path_factory.mktemp("clap") / "tiny")


@pytest.fixture(scope="module")
def clap_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("cc") / "corpus"
    for label in ("tone", "noise", "chirp"):
        for i in range(2):
            write(root / label / f"{label}{i}.wav", synth.demo_clip(label, i, 48000), 48000)
    return root


def _reference_cosine(model_dir, texts, clips):
    from transformers import ClapModel, ClapProcessor

    model = ClapModel.from_pretrained(model_dir).eval()
    proc = ClapProcessor.from_pretrained(model_dir)
    def unwrap(out):  # transformers 5 returns a model output, 4.x a tensor
        return getattr(out, "pooler_output", out)

    with torch.inference_mode():
        t = unwrap(model.get_text_features(**proc(text=texts, return_tensors="pt", padding=True)))
        a = torch.cat([unwrap(model.get_audio_features(**proc(audio=[c], sampling_rate=48000, return_tensors="pt")))
                       for c in clips])
    t = torch.nn.functional.normalize(t, dim=-1)
    a = torch.nn.functional.normalize(a, dim=-1)
    return (a @ t.T).numpy()


@pytest.mark.parametrize("postprocess", ["none", "whiten"])
def test_text_scores_equal_the_reference(clap_dir, clap_corpus, tmp_path, postprocess):
    ix = tmp_path / "ix"
    ingest(clap_corpus, ix, Choices(encoder="clap", model=str(clap_dir), postprocess=postprocess))
    paths = sorted(clap_corpus.rglob("*.wav"))
    import soundfile as sf

    clips = [sf.read(p, dtype="float32")[0] for p in paths]
    ref = _reference_cosine(clap_dir, ["the sound of a dog"], clips)[:, 0]
    with Index.open(ix) as idx:
        hits = idx.search_text("the sound of a dog", k=len(paths))
    got = dict(zip(hits.path, hits.score))
    for p, r in zip(paths, ref):
        assert got[p.relative_to(clap_corpus).as_posix()] == pytest.approx(float(r), abs=1e-3)


def test_zero_shot_and_cli(clap_dir, clap_corpus, tmp_path):
    ix = tmp_path / "ix"
    ingest(clap_corpus, ix, Choices(encoder="clap", model=str(clap_dir)))
    with Index.open(ix) as idx:
        preds, metrics = idx.zero_shot(evaluate=True)
    assert set(preds.predicted) <= {"tone", "noise", "chirp"} and len(preds) == 6
    np.testing.assert_allclose(preds.filter(like="p:").sum(axis=1), 1.0, atol=1e-5)
    assert 0 <= metrics["accuracy"] <= 1 and metrics["classes"] == 3
    out = CliRunner().invoke(cli, ["zeroshot", "--index", str(ix), "--labels", "dog,rain", "--json"])
    assert out.exit_code == 0, out.output
    assert {r["predicted"] for r in json.loads(out.stdout)["predictions"]} <= {"dog", "rain"}
    text = CliRunner().invoke(cli, ["text", "rain", "--index", str(ix), "-k", "2", "--json"])
    assert text.exit_code == 0 and len(json.loads(text.stdout)) == 2


def test_text_on_an_index_without_a_text_tower_names_the_ones_with(corpus, tmp_path):
    ingest(corpus, tmp_path / "ix")
    with Index.open(tmp_path / "ix") as idx, pytest.raises(EncoderError, match="clap"):
        idx.search_text("dog")
    out = CliRunner().invoke(cli, ["text", "dog", "--index", str(tmp_path / "ix")])
    assert out.exit_code == 1 and "no text tower" in out.output


def test_a_window_longer_than_clap_can_see_is_refused_up_front(clap_dir, clap_corpus, tmp_path):
    from retrieval.errors import InputError

    with pytest.raises(InputError, match="10"):
        ingest(clap_corpus, tmp_path / "ix", Choices(encoder="clap", model=str(clap_dir), window_s=12.0, hop_s=6.0))
