"""Kaldi-compatible log-mel filterbank in torch, and BEATs' normalised version of it.

Written from the Kaldi recipe (``compute-fbank-feats`` defaults with ``snip_edges``):
frames of 25 ms every 10 ms, each frame has its mean removed, is pre-emphasised
(``y[j] = x[j] - 0.97 x[j-1]``, ``y[0] = x[0] - 0.97 x[0]``), multiplied by the "povey"
window (a symmetric Hann window to the power 0.85), zero-padded to the next power of
two, turned into a power spectrum, weighted by triangular filters on the mel scale
``1127 ln(1 + f / 700)`` (peak 1, no area normalisation, Nyquist bin unused) and
logged with a floor at float32 epsilon. There is no dither.

BEATs multiplies float audio by 2**15 first (the int16 scale) and normalises the
128-bin result as ``(fbank - 15.41663) / (2 * 6.55582)``. With 128 bins at 16 kHz,
mel filter 3 catches no FFT bin, so that column is the constant ``ln(eps)``; the
official front end (torchaudio) produces it too, while Kaldi itself refuses the setting.
"""

from __future__ import annotations

import math

import torch

from retrieval.errors import InputError

#: BEATs front-end constants.
SAMPLE_RATE = 16000
NUM_MEL_BINS = 128
FRAME_LENGTH_SAMPLES = 400  # 25 ms at 16 kHz
FRAME_SHIFT_SAMPLES = 160  # 10 ms at 16 kHz
INT16_SCALE = 32768.0
FBANK_MEAN = 15.41663
FBANK_STD = 6.55582

_EPSILON = float(torch.finfo(torch.float32).eps)


def num_frames(n_samples: int, frame_length: int = FRAME_LENGTH_SAMPLES, frame_shift: int = FRAME_SHIFT_SAMPLES) -> int:
    """Frames Kaldi makes from ``n_samples`` with ``snip_edges``: ``1 + (n - length) // shift``, 0 if too short."""
    if n_samples < frame_length:
        return 0
    return 1 + (n_samples - frame_length) // frame_shift


def povey_window(frame_length: int) -> torch.Tensor:
    """``(frame_length,)`` float32: ``(0.5 - 0.5 cos(2 pi n / (N - 1))) ** 0.85``, computed in float64."""
    n = torch.arange(frame_length, dtype=torch.float64)
    hann = 0.5 - 0.5 * torch.cos(2.0 * math.pi * n / (frame_length - 1))
    return hann.pow(0.85).to(torch.float32)


def _mel(hz: torch.Tensor | float) -> torch.Tensor | float:
    """Kaldi's mel scale ``1127 ln(1 + f / 700)``."""
    if isinstance(hz, torch.Tensor):
        return 1127.0 * torch.log1p(hz / 700.0)
    return 1127.0 * math.log1p(hz / 700.0)


def mel_filterbank(
    num_mel_bins: int, n_fft: int, sample_rate: int, low_hz: float = 20.0, high_hz: float = 0.0
) -> torch.Tensor:
    """Kaldi triangular mel filters as a ``(n_fft // 2 + 1, num_mel_bins)`` float32 matrix.

    Args:
        num_mel_bins: filters; their edges are ``num_mel_bins + 2`` points equally spaced in mel.
        n_fft: FFT size (power of two).
        sample_rate: Hz.
        low_hz: lowest edge in Hz.
        high_hz: highest edge in Hz; ``<= 0`` counts back from Nyquist (Kaldi's convention).

    The filters are computed in float32, as the reference front end does, so that bins
    sitting on a filter edge get the same weight. The Nyquist row is zero.
    """
    nyquist = 0.5 * sample_rate
    if high_hz <= 0.0:
        high_hz = nyquist + high_hz
    if not 0.0 <= low_hz < high_hz <= nyquist:
        raise InputError(f"need 0 <= low_hz < high_hz <= {nyquist}; got {low_hz} and {high_hz} Hz")
    mel_low, mel_high = _mel(low_hz), _mel(high_hz)
    delta = (mel_high - mel_low) / (num_mel_bins + 1)
    m = torch.arange(num_mel_bins, dtype=torch.float32).unsqueeze(0)  # (1, M)
    left = mel_low + m * delta
    centre = mel_low + (m + 1.0) * delta
    right = mel_low + (m + 2.0) * delta
    n_bins = n_fft // 2
    bin_hz = sample_rate / n_fft * torch.arange(n_bins, dtype=torch.float32)
    bin_mel = _mel(bin_hz).unsqueeze(1)  # (K, 1)
    rising = (bin_mel - left) / (centre - left)
    falling = (right - bin_mel) / (right - centre)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)  # (K, M)
    return torch.cat([weights, torch.zeros(1, num_mel_bins)], dim=0)


def kaldi_fbank(
    waveform: torch.Tensor,
    *,
    num_mel_bins: int = NUM_MEL_BINS,
    sample_rate: int = SAMPLE_RATE,
    frame_length: int = FRAME_LENGTH_SAMPLES,
    frame_shift: int = FRAME_SHIFT_SAMPLES,
    preemphasis: float = 0.97,
    low_hz: float = 20.0,
    high_hz: float = 0.0,
) -> torch.Tensor:
    """Kaldi log-mel filterbank of each row, with no dither and ``snip_edges``.

    Args:
        waveform: ``(B, S)`` float32 samples in whatever scale Kaldi should see
            (Kaldi tools read int16 values, so float audio in [-1, 1] is usually scaled by 2**15).
        num_mel_bins, sample_rate, frame_length, frame_shift, preemphasis, low_hz, high_hz:
            Kaldi options (frame length and shift in samples, frequencies in Hz).

    Returns:
        ``(B, T, num_mel_bins)`` float32 natural-log energies, ``T = 1 + (S - frame_length) // frame_shift``.
        Rows are independent: a row's frames depend only on its own samples.

    Raises:
        InputError: wrong rank, or fewer samples than one frame.
    """
    if waveform.ndim != 2:
        raise InputError(f"waveform must be (batch, samples); got shape {tuple(waveform.shape)}")
    if waveform.shape[1] < frame_length:
        raise InputError(
            f"fbank needs at least {frame_length} samples (one {frame_length / sample_rate * 1000:g} ms frame); "
            f"got {waveform.shape[1]}: pad the clip"
        )
    x = waveform.to(torch.float32)
    frames = x.unfold(1, frame_length, frame_shift)  # (B, T, frame_length)
    frames = frames - frames.mean(dim=-1, keepdim=True)
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    frames = frames - preemphasis * previous
    frames = frames * povey_window(frame_length).to(frames.device)
    n_fft = 1 << (frame_length - 1).bit_length()
    spectrum = torch.fft.rfft(frames, n=n_fft, dim=-1)
    power = spectrum.real.square() + spectrum.imag.square()  # (B, T, n_fft // 2 + 1)
    filters = mel_filterbank(num_mel_bins, n_fft, sample_rate, low_hz, high_hz).to(power.device)
    energies = torch.matmul(power, filters)
    return torch.clamp(energies, min=_EPSILON).log()


def beats_fbank(waveform: torch.Tensor) -> torch.Tensor:
    """BEATs' input features: normalised 128-bin Kaldi fbank of 16 kHz float audio.

    Args:
        waveform: ``(B, S)`` float32 in [-1, 1] at 16 kHz, ``S >= 400``.

    Returns:
        ``(B, T, 128)`` float32, ``(fbank(waveform * 2**15) - 15.41663) / (2 * 6.55582)``
        (the divisor is twice the std constant, as in the official code).
    """
    fbank = kaldi_fbank(waveform * INT16_SCALE)
    return (fbank - FBANK_MEAN) / (2.0 * FBANK_STD)
