"""Precision modes across every encoder family, on tiny random models built here.

Each family claims the precisions it runs on the CPU (``CLAIMS``); it must accept each of
them, record it in the recipe, and refuse every other one with an error that names the
valid ones. Tolerances, on mean-pooled clip vectors of tiny random models:

* cosine to fp32 >= ``TOL_COSINE`` (0.999) for bf16 and int8 (measured 0.99977-0.99999);
* a clip alone vs inside a batch of other lengths, within one precision: max abs difference
  <= ``TOL_BATCH[precision]``: float32 rounding for fp32 and int8, one bfloat16 rounding
  step of values of order 0.5 for bf16 (measured 0 for bf16 and int8, 1.2e-7 for fp32).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from retrieval.cli import cli
from retrieval.configure import Choices, resolve
from retrieval.encoders.precision import (
    PRECISIONS,
    autocast,
    check_precision,
    full_precision,
    prepare,
)
from retrieval.errors import InputError, RetrievalError, UnknownNameError
from retrieval.pooling import pool_windows

try:
    from tests.encoders._clap_models import set_offline, tiny_clap
except ImportError:  # pytest run without the repository root on sys.path
    from _clap_models import set_offline, tiny_clap  # type: ignore[no-redef]

#: What each family runs on the CPU (fp16 is CUDA only for all of them).
CLAIMS: dict[str, tuple[str, ...]] = {
    "logmel": ("fp32",),
    "wav2vec2": ("fp32", "bf16", "int8"),
    "beats": ("fp32", "bf16", "int8"),
    "clap": ("fp32", "bf16", "int8"),
}
TOL_COSINE = 0.999
TOL_BATCH = {"fp32": 1e-5, "bf16": 2e-3, "int8": 1e-5}
FAST = [(name, p) for name, claims in CLAIMS.items() for p in claims if p != "fp32"]
CLAIMED = [(name, p) for name, claims in CLAIMS.items() for p in claims]
REFUSED = [(name, p) for name, claims in CLAIMS.items() for p in (*PRECISIONS, "fp8") if p not in claims]


@pytest.fixture(scope="module", autouse=True)
def _offline_one_thread() -> Iterator[None]:
    """No hub, and one torch thread (tiny models are fastest so on a shared machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        set_offline(mp)
        for name in ("WAV2VEC2", "BEATS"):
            mp.delenv(f"RETRIEVE_{name}_MODEL", raising=False)
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models(
    tmp_path_factory: pytest.TempPathFactory, tiny_beats_checkpoint: Callable[..., Path]
) -> dict[str, str | None]:
    """Family -> ``--model`` of a tiny random checkpoint (None for logmel, which has none)."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    w2v = tmp_path_factory.mktemp("w2v")
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, feat_extract_norm="group",
    )).eval().save_pretrained(w2v)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=False).save_pretrained(w2v)
    return {"logmel": None, "wav2vec2": str(w2v), "beats": str(tiny_beats_checkpoint(seed=1)),
            "clap": str(tiny_clap(tmp_path_factory))}


def batch_of_clips(sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Four seeded chirp + noise clips (0.7-2.01 s, two of one length, one quiet), zero-padded."""
    rng = np.random.default_rng(0)
    lengths = np.array([round(s * sample_rate) for s in (1.3, 2.01, 0.7, 2.01)], np.int64)
    audio = np.zeros((4, int(lengths.max())), np.float32)
    for i, n in enumerate(lengths):
        t = np.arange(n) / sample_rate
        noise = 0.2 * rng.standard_normal(n) * (0.05 if i == 3 else 1.0)
        audio[i, :n] = 0.3 * np.sin(2 * np.pi * (200 + 300 * i) * t * (1 + t)) + noise
    return audio, lengths


def clip_vectors(encoder, audio: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``(n, D)`` float64 mean-pooled frames."""
    frames = encoder.frame_embeddings(audio, lengths)
    assert frames.embeddings.dtype == np.float32 and np.isfinite(frames.embeddings).all()
    return pool_windows(frames.embeddings, frames.mask, "mean")[0].astype(np.float64)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# -- the helpers -------------------------------------------------------------------------------


def test_one_list_of_precisions_feeds_the_cli() -> None:
    assert PRECISIONS == ("fp32", "fp16", "bf16", "int8")
    option = next(p for p in cli.commands["index"].params if p.name == "precision")
    assert list(option.type.choices) == [*PRECISIONS, "auto"]


def test_check_precision() -> None:
    with pytest.raises(UnknownNameError, match="choose one of: fp32, fp16, bf16, int8"):
        check_precision("fp8", "cpu")
    with pytest.raises(InputError, match=r"use --precision bf16 on the CPU \(or fp32, or int8\)"):
        check_precision("fp16", "cpu")
    with pytest.raises(InputError, match="CPU only"):
        check_precision("int8", "cuda")
    assert check_precision("fp16", "cuda") == "fp16"  # only checked, nothing is placed on the device
    assert [check_precision(p, "cpu") for p in ("fp32", "bf16", "int8")] == ["fp32", "bf16", "int8"]


def test_autocast_contexts() -> None:
    linear = torch.nn.Linear(8, 8)
    x = torch.randn(2, 8)
    with autocast("bf16", "cpu"):
        assert linear(x).dtype == torch.bfloat16
        with full_precision("cpu"):
            assert linear(x).dtype == torch.float32
    for p in ("fp32", "int8"):
        with autocast(p, "cpu"):
            assert not torch.is_autocast_enabled("cpu")
    assert prepare(linear, "bf16") is linear


# -- every family --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "precision"), CLAIMED)
def test_claimed_precision_is_accepted_and_recorded(models: dict, name: str, precision: str) -> None:
    encoder, recipe = resolve(Choices(encoder=name, model=models[name], precision=precision), None)
    assert recipe.precision == precision
    if "precision" in recipe.encoder_params:  # BEATs and CLAP also record it in their own part
        assert recipe.encoder_params["precision"] == precision
    if precision != "fp32":
        _, reference = resolve(Choices(encoder=name, model=models[name]), None)
        assert recipe.hash() != reference.hash()
        assert any("precision" in d for d in recipe.differences(reference))
    vectors = clip_vectors(encoder, *batch_of_clips(encoder.sample_rate))
    assert vectors.shape == (4, recipe.frame_dim)


@pytest.mark.parametrize(("name", "precision"), REFUSED)
def test_other_precisions_are_refused_with_the_valid_ones(models: dict, name: str, precision: str) -> None:
    with pytest.raises(RetrievalError) as info:
        resolve(Choices(encoder=name, model=models[name], precision=precision), None)
    message = str(info.value)
    assert all(valid in message for valid in CLAIMS[name]), message


@pytest.mark.parametrize(("name", "precision"), FAST)
def test_fast_precision_stays_close_to_fp32(models: dict, name: str, precision: str) -> None:
    fast, _ = resolve(Choices(encoder=name, model=models[name], precision=precision), None)
    reference, _ = resolve(Choices(encoder=name, model=models[name]), None)
    clips = batch_of_clips(fast.sample_rate)
    cos = cosine(clip_vectors(fast, *clips), clip_vectors(reference, *clips))
    assert cos.min() >= TOL_COSINE, f"{name} {precision}: cosine to fp32 {cos}"


@pytest.mark.parametrize(("name", "precision"), [(name, p) for name, p in CLAIMED if name != "logmel"])
def test_batch_invariance_within_a_precision(models: dict, name: str, precision: str) -> None:
    encoder, _ = resolve(Choices(encoder=name, model=models[name], precision=precision), None)
    audio, lengths = batch_of_clips(encoder.sample_rate)
    together = clip_vectors(encoder, audio, lengths)
    for i, n in enumerate(lengths):
        alone = clip_vectors(encoder, audio[i : i + 1, :n], lengths[i : i + 1])[0]
        np.testing.assert_allclose(together[i], alone, rtol=0, atol=TOL_BATCH[precision],
                                   err_msg=f"{name} {precision}: clip {i} alone vs in the batch")
