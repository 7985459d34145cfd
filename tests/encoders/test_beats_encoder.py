"""BeatsEncoder against the retrieval encoder contract, with a tiny random checkpoint.

These tests need no golden files: the checkpoint is built here in the official format
(``conftest.tiny_beats_checkpoint``) and loaded through the public path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from retrieval.encoders import build
from retrieval.encoders.base import Encoder, EncoderOptions
from retrieval.encoders.beats import BeatsEncoder
from retrieval.encoders.beats.checkpoint import file_sha256
from retrieval.encoders.precision import autocast
from retrieval.errors import InputError, UnknownNameError

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def clips(seed: int, lengths: list[int]) -> list[np.ndarray]:
    """Seeded test audio at odd lengths: chirp + noise, float32 in [-0.9, 0.9]."""
    rng = np.random.RandomState(seed)
    out = []
    for n in lengths:
        t = np.arange(n) / 16000.0
        x = 0.5 * np.sin(2 * np.pi * (300 + 2000 * t) * t) + 0.1 * rng.randn(n)
        out.append((0.9 * x / max(np.abs(x).max(), 1e-9)).astype(np.float32))
    return out


def pad(rows: list[np.ndarray], width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    width = width or max(len(r) for r in rows)
    audio = np.zeros((len(rows), width), np.float32)
    for i, r in enumerate(rows):
        audio[i, : len(r)] = r
    return audio, np.array([len(r) for r in rows], np.int64)


@pytest.fixture(scope="module")
def tiny_path(tiny_beats_checkpoint) -> Path:
    return tiny_beats_checkpoint(seed=1)


@pytest.fixture(scope="module")
def tiny(tiny_path: Path) -> BeatsEncoder:
    return BeatsEncoder(EncoderOptions(model=str(tiny_path)))


def test_class_attributes_and_protocol(tiny: BeatsEncoder) -> None:
    assert isinstance(tiny, Encoder)
    assert (BeatsEncoder.name, BeatsEncoder.default_model) == ("beats", "BEATs_iter3_plus_AS2M.pt")
    assert (BeatsEncoder.default_window_s, BeatsEncoder.default_hop_s, BeatsEncoder.default_pooling) == (10.0, 5.0, "mean")
    assert tiny.sample_rate == 16000 and tiny.dim == 32 and tiny.has_text is False
    assert not tiny.model.training


def test_registry_builds_it(tiny_path: Path) -> None:
    encoder = build("beats", model=str(tiny_path))
    assert type(encoder).__name__ == "BeatsEncoder"


def test_shapes_times_and_mask(tiny: BeatsEncoder) -> None:
    audio, lengths = pad(clips(0, [160000, 40001, 2800, 2799]))
    frames = tiny.frame_embeddings(audio, lengths)
    # patches: floor(T / 16) with T = 1 + (len - 400) // 160; short clips are raised to 2800 samples
    assert frames.embeddings.shape == (4, 62, 32) and frames.embeddings.dtype == np.float32
    np.testing.assert_array_equal(frames.mask.sum(1), [62, 15, 1, 1])
    assert frames.mask[1, :15].all() and not frames.mask[1, 15:].any()
    np.testing.assert_allclose(frames.times_s[0, :3], [0.0875, 0.2475, 0.4075])
    assert frames.times_s.shape == (4, 62) and frames.times_s.dtype == np.float64
    assert np.isfinite(frames.embeddings).all()
    assert not frames.embeddings[1, 15:].any()  # padding frames are zeros


def test_frame_is_the_mean_of_the_frequency_tokens_of_a_time_patch(tiny: BeatsEncoder) -> None:
    (clip,) = clips(1, [12345])
    frames = tiny.frame_embeddings(clip[None], np.array([len(clip)]))
    tokens, _ = tiny.official_features(clip[None])  # (1, N, D), token n = patch n // 8, freq n % 8
    folded = tokens[0].reshape(-1, 8, 32).mean(axis=1)
    np.testing.assert_allclose(frames.embeddings[0, frames.mask[0]], folded, rtol=0, atol=1e-6)


def test_short_clips_are_zero_padded_to_one_patch(tiny: BeatsEncoder) -> None:
    for n in (1, 399, 400, 2799):
        (clip,) = clips(4, [n])
        frames = tiny.frame_embeddings(clip[None], np.array([n]))
        explicit = np.zeros((1, 2800), np.float32)
        explicit[0, :n] = clip
        reference = tiny.frame_embeddings(explicit, np.array([2800]))
        assert frames.embeddings.shape == (1, 1, 32) and frames.mask.tolist() == [[True]]
        np.testing.assert_array_equal(frames.embeddings, reference.embeddings)


def test_empty_batch(tiny: BeatsEncoder) -> None:
    frames = tiny.frame_embeddings(np.zeros((0, 100), np.float32), np.zeros(0, np.int64))
    assert frames.embeddings.shape == (0, 0, 32)


def test_layer_option(tiny_path: Path) -> None:
    (clip,) = clips(5, [20000])
    wave = torch.from_numpy(clip)[None]
    by_layer = {}
    for layer in (None, "last", "0", "1", "2", "mean"):
        encoder = BeatsEncoder(EncoderOptions(model=str(tiny_path), layer=layer))
        by_layer[layer] = encoder.frame_embeddings(clip[None], np.array([len(clip)])).embeddings
    with torch.inference_mode():
        states = encoder.model.extract_features(wave).hidden_states  # [encoder_in, layer 1, layer 2]
    fold = lambda t: t.reshape(1, -1, 8, 32).mean(2).numpy()  # noqa: E731
    np.testing.assert_array_equal(by_layer[None], by_layer["last"])
    np.testing.assert_array_equal(by_layer["last"], by_layer["2"])
    for i in range(3):
        np.testing.assert_allclose(by_layer[str(i)], fold(states[i]), rtol=0, atol=1e-6)
    np.testing.assert_allclose(by_layer["mean"], fold(torch.stack(states).mean(0)), rtol=0, atol=1e-6)
    assert not np.allclose(by_layer["0"], by_layer["2"])


@pytest.mark.parametrize("layer", ["3", "-1", "first", "1.5"])
def test_unknown_layer_lists_the_choices(tiny_path: Path, layer: str) -> None:
    with pytest.raises(InputError, match=r"'last', 'mean' or an integer 0\.\.2"):
        BeatsEncoder(EncoderOptions(model=str(tiny_path), layer=layer))


def test_recipe(tiny_path: Path, tiny: BeatsEncoder) -> None:
    recipe = tiny.recipe()
    json.dumps(recipe)  # must be serialisable to be hashed
    assert recipe["checkpoint_name"] == tiny_path.name
    assert recipe["checkpoint_sha256"] == file_sha256(tiny_path)
    assert recipe["layer"] == "2"
    arch = recipe["architecture"]
    assert (arch["encoder_layers"], arch["encoder_embed_dim"], arch["max_distance"], arch["deep_norm"]) == (2, 32, 800, True)
    mean = BeatsEncoder(EncoderOptions(model=str(tiny_path), layer="mean")).recipe()
    assert mean["layer"] == "mean" and mean != recipe
    assert recipe["precision"] == "fp32"
    for precision in ("bf16", "int8"):
        fast = BeatsEncoder(EncoderOptions(model=str(tiny_path), precision=precision)).recipe()
        assert fast["precision"] == precision and {k: v for k, v in fast.items() if k != "precision"} == {
            k: v for k, v in recipe.items() if k != "precision"}


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_fast_precisions(tiny_path: Path, tiny: BeatsEncoder, precision: str) -> None:
    """The front end stays float32 at parity; frames are float32 and close to fp32 (cosine >= 0.999)."""
    fast = BeatsEncoder(EncoderOptions(model=str(tiny_path), precision=precision))
    audio, lengths = pad(clips(6, [48000, 17120, 5000]))
    wave = torch.from_numpy(audio[:1])
    traces: list[dict] = [{}, {}]
    with torch.inference_mode():
        tiny.model.extract_features(wave, trace=traces[0])
        with autocast(precision, "cpu"):
            fast.model.extract_features(wave, trace=traces[1])
    assert traces[1]["fbank"].dtype == torch.float32
    torch.testing.assert_close(traces[1]["fbank"], traces[0]["fbank"], rtol=0, atol=0)
    ours, ref = fast.frame_embeddings(audio, lengths), tiny.frame_embeddings(audio, lengths)
    assert ours.embeddings.dtype == np.float32
    np.testing.assert_array_equal(ours.mask, ref.mask)
    a, b = ours.embeddings[ours.mask].astype(np.float64), ref.embeddings[ref.mask].astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() >= 0.999, f"{precision}: frame cosine to fp32 {cos.min():.6f}"
    official, _ = fast.official_features(audio[:1, : lengths[0]])
    assert official.dtype == np.float32


def test_int8_runs_each_clip_alone(tiny_path: Path) -> None:
    """int8's activation scale spans a forward pass: a loud clip must not move a quiet one's frames."""
    int8 = BeatsEncoder(EncoderOptions(model=str(tiny_path), precision="int8"))
    loud, quiet = clips(7, [32000, 32000])
    quiet = (0.01 * quiet).astype(np.float32)
    alone = int8.frame_embeddings(*pad([quiet]))
    together = int8.frame_embeddings(*pad([loud, quiet]))
    np.testing.assert_array_equal(together.embeddings[1], alone.embeddings[0])


def test_options_are_checked(tiny_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="fp32, fp16, bf16, int8"):
        BeatsEncoder(EncoderOptions(model=str(tiny_path), precision="fp8"))
    with pytest.raises(InputError, match="--precision bf16"):
        BeatsEncoder(EncoderOptions(model=str(tiny_path), precision="fp16"))  # CUDA only
    with pytest.raises(InputError, match="CPU only"):
        BeatsEncoder(EncoderOptions(model=str(tiny_path), precision="int8", device="cuda"))
    with pytest.raises(InputError, match="no extra settings"):
        BeatsEncoder(EncoderOptions(model=str(tiny_path), extra={"foo": 1}))
