"""Precision modes across every encoder family, on tiny random models built here.

Each family claims the precisions it runs on the CPU (``CLAIMS``, which must equal its
``precision_cosine``); it must accept each of them and record it in the recipe (refusals of
the others are in ``test_contract.py``). Tolerances, on mean-pooled clip vectors of tiny
random models:

* cosine to fp32 >= ``TOL_COSINE`` (0.999) and >= the encoder's stated ``precision_cosine``
  for bf16 and int8 (measured 0.99977-0.99999);
* a clip alone vs inside a batch of other lengths, within one fast precision (fp32 is in
  ``test_contract.py``): max abs difference <= ``TOL_BATCH[precision]``: float32 rounding for
  int8, one bfloat16 rounding step of values of order 0.5 for bf16 (measured 0 for both).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval import encoders
from retrieval.cli import cli
from retrieval.configure import Choices, resolve
from retrieval.encoders.precision import (
    PRECISIONS,
    autocast,
    check_precision,
    full_precision,
    prepare,
)
from retrieval.errors import InputError, UnknownNameError
from retrieval.pooling import pool_windows

#: What each family runs on the CPU (fp16 is CUDA only for all of them).
CLAIMS: dict[str, tuple[str, ...]] = {
    "logmel": ("fp32",),
    "wav2vec2": ("fp32", "bf16", "int8"),
    "beats": ("fp32", "bf16", "int8"),
    "clap": ("fp32", "bf16", "int8"),
}
TOL_COSINE = 0.999
TOL_BATCH = {"bf16": 2e-3, "int8": 1e-5}
FAST = [(name, p) for name, claims in CLAIMS.items() for p in claims if p != "fp32"]
CLAIMED = [(name, p) for name, claims in CLAIMS.items() for p in claims]


pytestmark = pytest.mark.usefixtures("offline_one_thread")


@pytest.fixture(scope="module")
def models(tiny_models: dict[str, str | None]) -> dict[str, str | None]:
    """Family -> ``--model`` of a tiny random checkpoint (None for logmel, which has none)."""
    return tiny_models


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


def test_claims_are_what_the_encoders_state() -> None:
    stated = {n: tuple(p for p in encoders.entry(n).load_class().precision_cosine if p != "fp16")
              for n in encoders.names()}
    assert stated == CLAIMS


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


@pytest.mark.parametrize(("name", "precision"), FAST)
def test_fast_precision_stays_close_to_fp32(models: dict, name: str, precision: str) -> None:
    fast, _ = resolve(Choices(encoder=name, model=models[name], precision=precision), None)
    reference, _ = resolve(Choices(encoder=name, model=models[name]), None)
    clips = batch_of_clips(fast.sample_rate)
    cos = cosine(clip_vectors(fast, *clips), clip_vectors(reference, *clips))
    assert cos.min() >= TOL_COSINE, f"{name} {precision}: cosine to fp32 {cos}"
    stated = type(fast).precision_cosine[precision]  # what --precision auto relies on
    assert cos.min() >= stated, f"{name} {precision}: cosine to fp32 {cos} below the stated {stated}"


@pytest.mark.parametrize(("name", "precision"), FAST)
def test_batch_invariance_within_a_precision(models: dict, name: str, precision: str) -> None:
    encoder, _ = resolve(Choices(encoder=name, model=models[name], precision=precision), None)
    audio, lengths = batch_of_clips(encoder.sample_rate)
    together = clip_vectors(encoder, audio, lengths)
    for i, n in enumerate(lengths):
        alone = clip_vectors(encoder, audio[i : i + 1, :n], lengths[i : i + 1])[0]
        np.testing.assert_allclose(together[i], alone, rtol=0, atol=TOL_BATCH[precision],
                                   err_msg=f"{name} {precision}: clip {i} alone vs in the batch")
