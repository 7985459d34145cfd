"""Query clips: a file or an in-memory array, as mono float32 at an encoder's rate.

Files go through :func:`retrieval.audio.decode.load` (the same decoding as ingest); arrays
are mixed to mono, cleaned of NaN/Inf, cropped and resampled with soxr.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from retrieval.audio.decode import load
from retrieval.errors import InputError

Clip = str | Path | np.ndarray


def clip_audio(clip: Clip, target_sr: int, *, sample_rate: int | None = None,
               start_s: float | None = None, end_s: float | None = None) -> np.ndarray:
    """A query clip as ``(S,)`` float32 mono at ``target_sr``, cropped to ``[start_s, end_s)``.

    Args:
        clip: an audio file, or a ``(samples,)`` / ``(samples, channels)`` array.
        target_sr: the encoder's rate in Hz.
        sample_rate: the array's rate in Hz (required for arrays, ignored for files).
        start_s, end_s: optional crop in seconds.

    Raises:
        InputError: an array without ``sample_rate``, of the wrong shape, or cropped to nothing.
        AudioError: a file that cannot be decoded.
    """
    if isinstance(clip, (str, Path)):
        return load(Path(clip), target_sr, start_s=start_s, end_s=end_s)
    if sample_rate is None:
        raise InputError(f"an audio array needs sample_rate=...; the encoder works at {target_sr} Hz")
    audio = np.asarray(clip, np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1 if audio.shape[0] > audio.shape[1] else 0)
    if audio.ndim != 1 or audio.size == 0:
        raise InputError(f"audio must be a non-empty (samples,) or (samples, channels) array; got {audio.shape}")
    a = 0 if start_s is None else int(round(start_s * sample_rate))
    b = None if end_s is None else int(round(end_s * sample_rate))
    audio = np.nan_to_num(audio[a:b], nan=0.0, posinf=0.0, neginf=0.0)
    if audio.size == 0:
        raise InputError(f"the cropped clip is empty (start_s={start_s}, end_s={end_s})")
    if sample_rate != target_sr:
        import soxr

        audio = soxr.resample(audio, sample_rate, target_sr).astype(np.float32)
    return audio
