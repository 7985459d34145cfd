"""Cut audio into analysis windows, in integer samples.

Seconds are converted to samples once, here, with round-half-to-even (numpy's
``round``). Windows start every ``hop`` samples; when the last regular window stops
short of the end, one more window is aligned to the end of the file so every sample
is covered by a full-length window. A file shorter than one window is one window.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from retrieval.errors import InputError

#: Level floor in dB, used for digital silence.
DB_FLOOR = -120.0


def to_samples(seconds: float, sample_rate: int) -> int:
    """Seconds to a whole number of samples (nearest, ties to even)."""
    return int(np.round(float(seconds) * sample_rate))


def check_window(window_samples: int, hop_samples: int) -> None:
    """Raise :class:`InputError` unless ``0 < hop <= window``."""
    if window_samples <= 0 or hop_samples <= 0:
        raise InputError(f"window and hop must be positive; got {window_samples} and {hop_samples} samples")
    if hop_samples > window_samples:
        raise InputError(f"hop ({hop_samples} samples) must not exceed the window ({window_samples} samples)")


def plan_windows(n_samples: int, window_samples: int, hop_samples: int) -> np.ndarray:
    """``(w, 2)`` int64 ``[start, end)`` sample ranges covering ``n_samples``."""
    check_window(window_samples, hop_samples)
    if n_samples <= 0:
        return np.zeros((0, 2), np.int64)
    if n_samples <= window_samples:
        return np.array([[0, n_samples]], np.int64)
    starts = list(range(0, n_samples - window_samples + 1, hop_samples))
    if starts[-1] + window_samples < n_samples:
        starts.append(n_samples - window_samples)
    s = np.array(starts, np.int64)
    return np.stack([s, s + window_samples], axis=1)


def rms_db(x: np.ndarray) -> float:
    """RMS level of ``x`` in dB relative to full scale (1.0), floored at ``DB_FLOOR``."""
    if x.size == 0:
        return DB_FLOOR
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return max(20.0 * np.log10(rms), DB_FLOOR) if rms > 0 else DB_FLOOR


@dataclass(frozen=True)
class Window:
    """One analysis window of a file.

    Attributes:
        start: first sample, at the encoder's rate.
        end: one past the last sample.
        audio: ``(end - start,)`` float32 mono.
    """

    start: int
    end: int
    audio: np.ndarray


def cut_stream(blocks: Iterable[np.ndarray], window_samples: int, hop_samples: int) -> Iterator[Window]:
    """Cut a stream of mono blocks into windows, as :func:`plan_windows` would.

    Holds at most one window plus one block in memory, so a long file streams through.
    """
    check_window(window_samples, hop_samples)
    buf = np.zeros(0, np.float32)
    buf_start = 0  # sample index of buf[0]
    next_start = 0
    last_end = 0
    total = 0
    for block in blocks:
        buf = np.concatenate([buf, block]) if buf.size else block
        total += block.size
        while next_start + window_samples <= total:
            a = next_start - buf_start
            yield Window(next_start, next_start + window_samples, buf[a:a + window_samples].copy())
            last_end = next_start + window_samples
            next_start += hop_samples
        # Keep what the next regular window or an end-aligned final window may still need.
        keep_from = max(min(next_start, total - window_samples), 0)
        if keep_from > buf_start:
            buf = buf[keep_from - buf_start:]
            buf_start = keep_from
    if total == 0:
        return
    if last_end == 0:  # shorter than one window
        yield Window(0, total, buf[-total:].copy())
    elif last_end < total:
        s = total - window_samples
        yield Window(s, total, buf[s - buf_start:].copy())
