"""The query side of ``locate``: a clip (file or array) or a text, as one vector.

A clip is embedded as :meth:`retrieval.index.Index.embed` embeds it: cut into the scan's
windows, pooled per window, then pooled over its windows (frame-count weighted, so it
equals pooling every frame of the clip; ``none`` pools by the mean). A clip no longer
than the window is therefore one window, and a longer clip is compared by the mean of
its window vectors -- one vector per query, so the long file is scanned once at the
scan's window length whatever the clip's length. (Without an index, the default window
*is* the clip's length; see :mod:`retrieval.locate.api`.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from retrieval.audio.decode import load
from retrieval.embed import embed_clip
from retrieval.encoders.registry import text_encoders
from retrieval.errors import EncoderError, InputError
from retrieval.pooling import lift
from retrieval.locate.curve import Scan

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


def clip_vector(scan: Scan, audio: np.ndarray) -> np.ndarray:
    """``(P',)`` float32: the clip's pooled vector through ``scan.transform`` (see the module docstring)."""
    raw, _, _ = embed_clip(scan.encoder, audio, scan.window_samples, scan.hop_samples, scan.pooling,
                           scan.batch_size)
    return np.asarray(scan.transform(raw[None]), np.float32)[0]


def text_vector(scan: Scan, text: str) -> np.ndarray:
    """``(P',)`` float32: a text embedding lifted into the pooled space and through ``scan.transform``.

    Raises:
        EncoderError: the encoder has no text tower.
    """
    if not getattr(scan.encoder, "has_text", False):
        names = text_encoders()
        raise EncoderError(f"encoder {scan.encoder.name!r} has no text tower; locating a text needs one of: "
                           f"{', '.join(names)} (pass --encoder {names[0]}, or --index of an index built with it)")
    if not text.strip():
        raise InputError("the text query is empty")
    raw = lift(np.asarray(scan.encoder.text_embeddings([text]), np.float32), scan.pooling)
    return np.asarray(scan.transform(raw), np.float32)[0]
