"""The torch CLAP front end against transformers' ClapFeatureExtractor (tolerance 1e-4 dB)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
from transformers import ClapFeatureExtractor  # noqa: E402

from retrieval.encoders.clap.features import ClapFeatureConfig, ClapFeatures  # noqa: E402
from retrieval.errors import InputError  # noqa: E402

SR = 48000
MAX = 480000
TOL_DB = 1e-4
#: Odd lengths around every boundary: shorter than a frame, than the reflect pad, a whole
#: divisor of 10 s, one sample short, exact, and (for truncation) just over.
SHORT = [1, 7, 100, 511, 513, 1000, 4801, 48000, 96001, MAX // 3, MAX // 2 + 1, MAX - 1, MAX]
LONG = [MAX + 1, MAX + 479, MAX + 480, MAX + 481, MAX + 5000, 700001]


def clips(lengths: list[int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(lengths):
        kind = i % 3
        if kind == 0:
            x = rng.standard_normal(n) * rng.uniform(1e-3, 0.8)
        elif kind == 1:
            t = np.arange(n) / SR
            x = 0.5 * np.sin(2 * np.pi * 440 * t * (1 + 2 * t))
        else:
            x = np.zeros(n)
            x[: n // 2] = rng.uniform(-1, 1, n // 2)  # half silence
        out.append(x.astype(np.float32))
    return out


def batch(xs: list[np.ndarray], extra: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = np.array([len(x) for x in xs])
    a = np.zeros((len(xs), lengths.max() + extra), np.float32)
    for i, x in enumerate(xs):
        a[i, : len(x)] = x
    return torch.from_numpy(a), torch.from_numpy(lengths)


@pytest.fixture
def deterministic_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the reference pick the offsets ours picks: middle of each third, centre crop."""
    monkeypatch.setattr(np.random, "choice", lambda r: r[len(r) // 2])
    monkeypatch.setattr(np.random, "randint", lambda lo, hi: (hi - 1) // 2)


def reference(fe: ClapFeatureExtractor, xs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    out = fe(xs, sampling_rate=SR, return_tensors="np")
    return out["input_features"], np.asarray(out["is_longer"])


@pytest.mark.parametrize(("truncation", "padding", "lengths"), [
    ("rand_trunc", "repeatpad", SHORT),
    ("fusion", "repeatpad", SHORT),
    ("rand_trunc", "repeat", [7, 513, 96001, MAX - 1]),
    ("fusion", "pad", [1, 511, MAX // 3]),
])
def test_short_clips_match_reference(truncation: str, padding: str, lengths: list[int]) -> None:
    fe = ClapFeatureExtractor(truncation=truncation, padding=padding, frequency_min=50)
    ours = ClapFeatures.from_extractor(fe)
    xs = clips(lengths, seed=len(padding))
    feats, is_longer = ours(*batch(xs, extra=123))
    ref, _ = reference(fe, xs)
    assert feats.shape == (len(xs), 4 if truncation == "fusion" else 1, 1001, 64)
    assert feats.dtype == torch.float32
    np.testing.assert_allclose(feats.numpy(), ref, rtol=0, atol=TOL_DB)
    assert not is_longer.any()  # never flipped at random


def test_ten_second_clip_is_identical_input(deterministic_reference: None) -> None:
    fe = ClapFeatureExtractor(truncation="rand_trunc", frequency_min=50)
    ours = ClapFeatures.from_extractor(fe)
    x = clips([MAX])
    feats, _ = ours(*batch(x))
    np.testing.assert_allclose(feats.numpy(), reference(fe, x)[0], rtol=0, atol=TOL_DB)
    # a 10 s clip is its own padded input: the mel equals the plain spectrogram of the clip
    np.testing.assert_array_equal(feats[0, 0].numpy(), ours.log_mel(torch.from_numpy(x[0])[None])[0].numpy())


@pytest.mark.parametrize("truncation", ["rand_trunc", "fusion"])
def test_long_clips_match_reference_with_its_rng_fixed(truncation: str, deterministic_reference: None) -> None:
    fe = ClapFeatureExtractor(truncation=truncation, frequency_min=50)
    ours = ClapFeatures.from_extractor(fe)
    xs = clips(LONG, seed=3)
    feats, is_longer = ours(*batch(xs))
    ref, ref_longer = reference(fe, xs)
    np.testing.assert_allclose(feats.numpy(), ref, rtol=0, atol=TOL_DB)
    np.testing.assert_array_equal(is_longer.numpy(), ref_longer)
    if truncation == "fusion":  # one hop or less over 10 s: the whole clip, not longer
        assert is_longer[:2, 0].tolist() == [False, False] and is_longer[2:, 0].all()


def test_fusion_never_flips_is_longer_at_random(deterministic_reference: None) -> None:
    fe = ClapFeatureExtractor(truncation="fusion", frequency_min=50)
    xs = clips([4800, 96000, 200000])
    _, ref_longer = reference(fe, xs)
    assert ref_longer.sum() == 1  # the reference marks one short clip "longer" at random
    _, is_longer = ClapFeatures.from_extractor(fe)(*batch(xs))
    assert not is_longer.any()


def test_batch_invariant_and_deterministic() -> None:
    fe = ClapFeatureExtractor(truncation="fusion", frequency_min=50)
    ours = ClapFeatures.from_extractor(fe)
    xs = clips([300, 48000, MAX, MAX + 9000], seed=5)
    together, longer = ours(*batch(xs, extra=777))
    again, _ = ours(*batch(xs))
    np.testing.assert_array_equal(together.numpy(), again.numpy())
    for i, x in enumerate(xs):
        alone, alone_longer = ours(*batch([x]))
        np.testing.assert_array_equal(alone[0].numpy(), together[i].numpy())
        assert bool(alone_longer[0, 0]) == bool(longer[i, 0])


def test_bad_inputs_raise_typed_errors() -> None:
    fe = ClapFeatureExtractor(truncation="rand_trunc")
    ours = ClapFeatures.from_extractor(fe)
    with pytest.raises(InputError, match="need audio"):
        ours(torch.zeros(10), torch.tensor([10]))
    with pytest.raises(InputError, match="truncation"):
        ClapFeatureConfig(truncation="random")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="mel filters"):
        ClapFeatures(ClapFeatureConfig(), np.zeros((10, 64)), np.zeros(1024))
