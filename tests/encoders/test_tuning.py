"""Every tunable family (``retrieval.encoders.tuning``) on its tiny random checkpoint.

* the trained representation is the one the index stores: ``window_vectors`` equals the
  encoder's own frames, mean-pooled (CLAP: its one frame), at float32 rounding;
* gradients reach the last block's parameters;
* ``save`` writes the family's own format, which loads through the normal encoder path, and
  only the tensors handed to it differ from the base checkpoint (everything else bit-identical);
* logmel has no Tunable, with a one-line message naming the families that have one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from retrieval import encoders
from retrieval.encoders.base import EncoderOptions
from retrieval.encoders.tuning import TUNABLE_FAMILIES, tunable
from retrieval.errors import InputError
from retrieval.finetune import trainable_parameters

pytestmark = pytest.mark.usefixtures("offline_one_thread")

#: window_vectors against the encoder's pooled frames: float32 rounding of the same graph.
TOL = 1e-5


def _clips(rate: int, seconds: tuple[float, ...] = (0.61, 0.61)) -> np.ndarray:
    rng = np.random.default_rng(3)
    n = int(round(seconds[0] * rate))
    t = np.arange(n) / rate
    return np.stack([(0.3 * np.sin(2 * np.pi * (220 + 90 * i) * t) + 0.05 * rng.standard_normal(n))
                     for i in range(len(seconds))]).astype(np.float32)


@pytest.mark.parametrize("name", TUNABLE_FAMILIES)
def test_window_vectors_are_the_encoders_pooled_frames_and_train_the_last_block(name, tiny_models):
    enc = encoders.build(name, EncoderOptions(model=tiny_models[name]))
    tun = tunable(enc)
    audio = _clips(enc.sample_rate)
    frames = enc.frame_embeddings(audio, np.full(len(audio), audio.shape[1], np.int64))
    expected = (frames.embeddings * frames.mask[..., None]).sum(1) / frames.mask.sum(1, keepdims=True)
    got = tun.window_vectors(torch.from_numpy(audio))
    np.testing.assert_allclose(got.detach().numpy(), expected, atol=TOL, rtol=TOL)

    params = trainable_parameters(tun.model, list(tun.blocks())[-1:])
    assert params
    for p in tun.model.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    tun.window_vectors(torch.from_numpy(audio)).square().sum().backward()
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params.values())


@pytest.mark.parametrize("name", TUNABLE_FAMILIES)
def test_save_writes_a_loadable_checkpoint_that_differs_only_where_trained(name, tiny_models, tmp_path):
    enc = encoders.build(name, EncoderOptions(model=tiny_models[name]))
    tun = tunable(enc)
    params = trainable_parameters(tun.model, list(tun.blocks())[-1:])
    with torch.no_grad():
        trained = {k: v.detach() + 0.01 for k, v in params.items()}
    out = tmp_path / "adapted"
    out.mkdir()
    model = tun.save(trained, out)

    again = encoders.build(name, EncoderOptions(model=str(model)))  # the normal loading path
    before, after = enc.model.state_dict(), again.model.state_dict()
    assert set(before) == set(after)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == set(trained)
    for k in trained:
        torch.testing.assert_close(after[k], trained[k], rtol=0, atol=0)
    audio = _clips(enc.sample_rate)
    lengths = np.full(len(audio), audio.shape[1], np.int64)
    assert not np.allclose(enc.frame_embeddings(audio, lengths).embeddings,
                           again.frame_embeddings(audio, lengths).embeddings)


def test_beats_trains_its_shared_position_table_only_with_every_block(tiny_models, tmp_path):
    enc = encoders.build("beats", EncoderOptions(model=tiny_models["beats"]))
    tun = tunable(enc)
    blocks = list(tun.blocks())
    last = trainable_parameters(tun.model, blocks[-1:])
    assert not any("relative_attention_bias" in k for k in last)  # layer 0 uses it too: frozen
    every = trainable_parameters(tun.model, blocks)
    table = [k for k in every if "relative_attention_bias" in k]
    assert len(table) == 1
    with torch.no_grad():
        trained = {table[0]: every[table[0]].detach() + 0.01}
    again = encoders.build("beats", EncoderOptions(model=str(tun.save(trained, tmp_path))))  # copies agree: it loads
    for i in range(len(blocks)):
        key = f"encoder.layers.{i}.self_attn.relative_attention_bias.weight"
        torch.testing.assert_close(again.model.state_dict()[key], trained[table[0]], rtol=0, atol=0)


def test_logmel_has_nothing_to_tune():
    enc = encoders.build("logmel")
    with pytest.raises(InputError, match="logmel") as err:
        tunable(enc)
    assert "\n" not in str(err.value) and "wav2vec2" in str(err.value)


def test_every_family_with_weights_is_tunable():
    assert set(TUNABLE_FAMILIES) == {n for n in encoders.names() if encoders.entry(n).default_model is not None}


def test_a_beats_index_fine_tunes_into_a_pt_file_that_a_new_index_loads(tiny_models, tmp_path):
    import pandas as pd

    from retrieval import synth
    from retrieval.encoders.weights import weights_digest
    from retrieval.index import Index

    corpus = tmp_path / "corpus"
    synth.write_demo_corpus(corpus, per_class=1)
    Index.build(corpus, tmp_path / "ix", encoder="beats", model=tiny_models["beats"], postprocess="none",
                window_s=0.5, hop_s=0.5).close()
    with Index.open(tmp_path / "ix", writable=True) as idx:
        paths = sorted(idx.files()["path"].tolist())
        idx.adapter().add_labels(pd.DataFrame({"path": paths, "target": "a",
                                               "label": ["positive", "positive"] + ["negative"] * (len(paths) - 2)}))
    with Index.open(tmp_path / "ix") as idx:
        summary = idx.finetune("a", 1, epochs=1, val_folds=2)
    model = Path(summary["model"])
    assert model.is_file() and model.suffix == ".pt" and model.parent.parent == tmp_path / "ix" / "finetuned"
    assert summary["trained_tensors"] and all(k.startswith("encoder.layers.1.") for k in summary["trained_tensors"])
    with Index.build(corpus, tmp_path / "new", encoder="beats", model=str(model), postprocess="none",
                     window_s=0.5, hop_s=0.5) as new:
        assert new.recipe.encoder_params["checkpoint_sha256"] == weights_digest(model)
        assert len(new.files()) == len(paths)
