"""The torch Kaldi fbank against kaldi-native-fbank, and BEATs' normalisation.

kaldi-native-fbank refuses BEATs' own setting (128 bins leave mel filter 3 empty), so
it is compared on settings it accepts (80 and 126 bins, dither 0) with the same
algorithm; the 128-bin BEATs output is checked against the golden files in
``test_beats_parity.py``.

Tolerance: 1e-3 in natural-log mel units (about 8e-5 after BEATs' normalisation).
Both implementations work in float32; against a float64 reference each is off by
1e-4 to 3e-4 on random audio, so 1e-3 leaves room for FFT rounding, not for bugs
(a wrong window, pre-emphasis or mel edge moves the values by 1e-2 or more).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from retrieval.encoders.beats.fbank import (
    FBANK_MEAN, FBANK_STD, beats_fbank, kaldi_fbank, mel_filterbank, num_frames,
)
from retrieval.errors import InputError

knf = pytest.importorskip("kaldi_native_fbank")

pytestmark = pytest.mark.usefixtures("torch_single_thread")

TOL_LOGMEL = 1e-3


def knf_fbank(samples: np.ndarray, num_bins: int) -> np.ndarray:
    """``(T, num_bins)`` from kaldi-native-fbank with dither 0 and otherwise Kaldi defaults."""
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.samp_freq = 16000
    opts.mel_opts.num_bins = num_bins
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(16000, samples.tolist())
    fbank.input_finished()
    return np.stack([np.asarray(fbank.get_frame(i)) for i in range(fbank.num_frames_ready)])


@pytest.mark.parametrize(("n_samples", "num_bins", "seed"), [
    (400, 80, 0), (16003, 80, 1), (24011, 126, 2), (9999, 100, 3),
])
def test_matches_kaldi_native_fbank_on_random_audio(n_samples: int, num_bins: int, seed: int) -> None:
    rng = np.random.RandomState(seed)
    # int16-scaled noise at two levels, as Kaldi tools see audio
    samples = (rng.uniform(-1, 1, n_samples) * 0.5 * 32768).astype(np.float32)
    samples[n_samples // 2 :] *= 0.01
    reference = knf_fbank(samples, num_bins)
    ours = kaldi_fbank(torch.from_numpy(samples)[None], num_mel_bins=num_bins)[0].numpy()
    assert ours.shape == reference.shape == (num_frames(n_samples), num_bins)
    assert float(np.abs(ours - reference).max()) <= TOL_LOGMEL


@pytest.mark.parametrize(("n_samples", "frames"), [(399, 0), (400, 1), (559, 1), (560, 2), (160000, 998), (68800, 428)])
def test_frame_count(n_samples: int, frames: int) -> None:
    assert num_frames(n_samples) == frames


def test_too_short_is_a_typed_error() -> None:
    with pytest.raises(InputError, match="at least 400 samples"):
        kaldi_fbank(torch.zeros(1, 399))


def test_filter_3_is_empty_at_128_bins_and_gives_a_constant_column() -> None:
    filters = mel_filterbank(128, 512, 16000)
    assert filters.shape == (257, 128)
    assert torch.nonzero(filters.sum(0) == 0).flatten().tolist() == [3]
    assert float(filters[-1].abs().max()) == 0.0  # Nyquist bin unused
    noise = torch.from_numpy(np.random.RandomState(5).uniform(-0.5, 0.5, (2, 8000)).astype(np.float32))
    features = beats_fbank(noise)
    expected = (math.log(float(torch.finfo(torch.float32).eps)) - FBANK_MEAN) / (2 * FBANK_STD)
    assert expected == pytest.approx(-2.391693, abs=1e-6)
    torch.testing.assert_close(features[..., 3], torch.full_like(features[..., 3], expected), rtol=0, atol=1e-6)


def test_rows_are_independent() -> None:
    rng = np.random.RandomState(9)
    batch = torch.from_numpy(rng.uniform(-0.9, 0.9, (3, 5000)).astype(np.float32))
    together = beats_fbank(batch)
    for i in range(3):
        torch.testing.assert_close(beats_fbank(batch[i : i + 1])[0], together[i], rtol=0, atol=1e-5)
