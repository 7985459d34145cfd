"""The numpy DSP of the spectral baseline against scipy, the reference it replaces at run time
(scipy comes with the dev extra)."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.encoders.base import EncoderOptions
from retrieval.encoders.dsp import BandMatrix, dct2_ortho_basis, one_pole_smooth, periodic_hann
from retrieval.encoders.logmel import LogMelEncoder, normalize, trim_mask

scipy_fft = pytest.importorskip("scipy.fft")
scipy_signal = pytest.importorskip("scipy.signal")
scipy_sparse = pytest.importorskip("scipy.sparse")


def test_periodic_hann_is_scipys_window_bit_for_bit() -> None:
    for n in (1, 2, 3, 255, 256, 400, 512, 1023, 1024, 2048):
        assert np.array_equal(periodic_hann(n), scipy_signal.get_window("hann", n, fftbins=True)), n


@pytest.mark.parametrize(("n", "n_out"), [(64, 20), (64, 64), (40, 13), (7, 1), (128, 33)])
def test_dct_basis_is_scipys_orthonormal_dct2(n: int, n_out: int) -> None:
    x = np.random.default_rng(n).normal(size=(37, n)) * 10
    ours = x @ dct2_ortho_basis(n, n_out)
    ref = scipy_fft.dct(x, type=2, norm="ortho", axis=1)[:, :n_out]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12 * np.abs(ref).max())


@pytest.mark.parametrize("s", [0.025, 0.2, 0.9])
def test_one_pole_smooth_is_scipys_lfilter(s: float) -> None:
    x = np.random.default_rng(1).random((301, 5)) * 2.0**31
    zi = x[:1] * (1 - s)
    ref = scipy_signal.lfilter([s], [1.0, s - 1.0], x, axis=0, zi=zi)[0]
    ours = one_pole_smooth(x, s, zi)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0)
    assert one_pole_smooth(x[:0], s, zi).shape == (0, 5)


def _scipy_features(enc: LogMelEncoder, x: np.ndarray) -> np.ndarray:
    """The encoder's frames computed the way it did with scipy: a CSR filterbank product,
    ``scipy.fft.dct`` and ``scipy.signal.lfilter``; ``(T, dim)`` float64."""
    cfg = enc.config
    n_frames = 1 + (x.size - enc.win_samples) // enc.hop_samples
    frames = np.lib.stride_tricks.sliding_window_view(x, enc.win_samples)[:: enc.hop_samples][:n_frames]
    window = scipy_signal.get_window("hann", enc.win_samples, fftbins=True)
    spec = np.fft.rfft(frames.astype(np.float64) * window, n=enc.n_fft, axis=1)
    mel = (scipy_sparse.csr_matrix(enc._mel.T) @ (spec.real**2 + spec.imag**2).T).T
    keep = trim_mask(mel, cfg.trim_db)
    if cfg.feature == "pcen":
        s, scaled = 0.025, mel * 2.0**31
        smooth = scipy_signal.lfilter([s], [1.0, s - 1.0], scaled, axis=0, zi=scaled[:1] * (1 - s))[0]
        feat = (scaled / (1e-6 + smooth) ** 0.98 + 2.0) ** 0.5 - 2.0**0.5
    else:
        feat = np.log(np.maximum(mel, 1e-10))
        if cfg.feature == "mfcc":
            feat = scipy_fft.dct(feat, type=2, norm="ortho", axis=1)[:, : cfg.n_mfcc]
    return normalize(feat, keep, cfg.norm, cfg.feature)


@pytest.mark.parametrize("feature", ["mfcc", "logmel", "pcen"])
def test_features_match_the_scipy_pipeline(feature: str) -> None:
    """Vectors of an index built with the scipy pipeline still match queries made now."""
    rng = np.random.default_rng(3)
    t = np.arange(37_123) / 16000
    x = (0.3 * np.sin(2 * np.pi * 330 * t) * np.exp(-2 * t) + rng.normal(0, 0.01, t.size)).astype(np.float32)
    enc = LogMelEncoder(EncoderOptions(extra={"feature": feature}))
    ours = enc.frame_embeddings(x[None], np.array([x.size])).embeddings[0].astype(np.float64)
    ref = _scipy_features(enc, x)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6 * np.abs(ref).max())  # float32 storage


def test_band_matrix_is_a_csr_product_row_by_row() -> None:
    from retrieval.encoders.logmel import mel_filterbank

    weights = mel_filterbank(16000, 512, 64, 50.0, 8000.0)
    weights[:, 5] = 0.0  # a band with no bins gives zeros
    x = np.random.default_rng(2).random((333, weights.shape[0]))
    ours = BandMatrix(weights).apply(x)
    ref = (scipy_sparse.csr_matrix(weights.T) @ x.T).T
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0)
    assert not ours[:, 5].any()
    assert np.array_equal(BandMatrix(weights).apply(x[100:101])[0], ours[100])  # a row alone: the same bits
