"""Query clips: a file or an in-memory array, as mono float32 at an encoder's rate.

Files go through :func:`retrieval.audio.decode.load` (the same decoding as ingest); arrays
are mixed to mono, cleaned of NaN/Inf, cropped and resampled with soxr.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from retrieval.audio.decode import load, probe
from retrieval.audio.windows import DB_FLOOR, plan_windows, rms_db
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
        InputError: an array without ``sample_rate``, of the wrong shape, or a crop that is not
            finite or falls outside the clip (the message gives its duration and the valid range).
        AudioError: a file that cannot be decoded.
    """
    if isinstance(clip, (str, Path)):
        if start_s is not None or end_s is not None:
            check_crop(start_s, end_s, probe(Path(clip)).duration_s, Path(clip).name)
        return load(Path(clip), target_sr, start_s=start_s, end_s=end_s)
    if sample_rate is None:
        raise InputError(f"an audio array needs sample_rate=...; the encoder works at {target_sr} Hz")
    audio = np.asarray(clip, np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1 if audio.shape[0] > audio.shape[1] else 0)
    if audio.ndim != 1 or audio.size == 0:
        raise InputError(f"audio must be a non-empty (samples,) or (samples, channels) array; got {audio.shape}")
    check_crop(start_s, end_s, audio.size / sample_rate, "the audio array")
    a = 0 if start_s is None else int(round(start_s * sample_rate))
    b = None if end_s is None else int(round(end_s * sample_rate))
    audio = np.nan_to_num(audio[a:b], nan=0.0, posinf=0.0, neginf=0.0)
    if audio.size == 0:
        raise InputError(f"the cropped clip is empty (start_s={start_s}, end_s={end_s})")
    if sample_rate != target_sr:
        import soxr

        audio = soxr.resample(audio, sample_rate, target_sr).astype(np.float32)
    return audio


def check_crop(start_s: float | None, end_s: float | None, duration_s: float, name: str) -> None:
    """Refuse a crop ``[start_s, end_s)`` (seconds) that is not finite or leaves nothing of a clip.

    Raises:
        InputError: naming the clip's duration and the valid range, in seconds.
    """
    length = f"{name} is {duration_s:.3f} s long"
    for label, value in (("start_s", start_s), ("end_s", end_s)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise InputError(f"{label} must be a finite number of seconds; got {value!r} ({length})")
    start = 0.0 if start_s is None else float(start_s)
    if start < 0 or start >= duration_s:
        raise InputError(f"start_s={start_s:g} is outside the clip: {length}; "
                         f"give a start from 0 to below {duration_s:.3f} s")
    if end_s is not None and end_s <= start:
        raise InputError(f"end_s={end_s:g} is not after the start ({start:g} s); {length}, "
                         f"so give an end in ({start:g}, {duration_s:.3f}] s")


def silence_warning(audio: np.ndarray, window_samples: int, hop_samples: int, silence_db: float | None) -> str | None:
    """A warning when a ``(S,)`` query clip is silent, else None.

    The clip is silent when its loudest window (the index's ``window_samples`` and
    ``hop_samples``) is below ``silence_db`` dBFS, the level under which the index keeps a
    window out of search; with no level (``--keep-silent``), when it is digital silence.
    Hits for such a clip rank the index's quietest files, whatever they hold.
    """
    loudest = max(rms_db(audio[a:b]) for a, b in plan_windows(audio.size, window_samples, hop_samples))
    floor = DB_FLOOR if silence_db is None else silence_db
    if (loudest > DB_FLOOR) if silence_db is None else (loudest >= silence_db):
        return None
    return (f"the query clip is silent (loudest window {loudest:.1f} dBFS, below the index's silence level "
            f"{floor:g} dBFS): its hits say nothing about what it sounds like; check the clip or --start-s/--end-s")
