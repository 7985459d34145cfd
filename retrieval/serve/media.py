"""What the page plays and shows: audio slices as WAV and spectrogram thumbnails as PNG.

Both read an indexed file through the same decoder as ingest (:mod:`retrieval.audio.decode`).
Thumbnails are cached in memory, keyed by the file's path, size and mtime, so a result
seen twice is rendered once.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import ContextManager

import numpy as np
import soundfile as sf

from retrieval.audio.decode import load, probe
from retrieval.errors import InputError

#: Rate thumbnails are analysed at, Hz (speech, effects and music read well at 16 kHz).
THUMB_SR = 16000
#: FFT size of thumbnails, samples at :data:`THUMB_SR`.
THUMB_NFFT = 512
#: A thumbnail shows at most this much audio, centred on the marked window.
THUMB_MAX_S = 30.0
#: Longest slice ``/audio?start_s=&end_s=`` returns, seconds.
MAX_SLICE_S = 600.0
#: Thumbnails kept in memory.
CACHE_SIZE = 2048
#: Dynamic range shown, dB below the loudest bin.
RANGE_DB = 80.0


def audio_slice_wav(path: Path, start_s: float, end_s: float | None) -> bytes:
    """``[start_s, end_s)`` of ``path`` as a 16-bit mono WAV at the file's own rate.

    Raises:
        InputError: a negative, empty or over-long span.
        AudioError: the file cannot be decoded.
    """
    info = probe(path)
    end = info.duration_s if end_s is None else min(float(end_s), info.duration_s)
    if start_s < 0 or end <= start_s:
        raise InputError(f"empty slice: start_s {start_s}, end_s {end_s} of a {info.duration_s:.2f} s file")
    if end - start_s > MAX_SLICE_S:
        raise InputError(f"slice of {end - start_s:.0f} s is longer than {MAX_SLICE_S:.0f} s; "
                         "ask for a shorter span or the whole file (no start_s/end_s)")
    audio = load(path, info.sample_rate, start_s=start_s, end_s=end)
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), info.sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


class Thumbnails:
    """Spectrogram PNGs with a marked window, rendered once and kept (LRU)."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.rendered = 0

    def png(self, path: Path, duration_s: float, mark: tuple[float, float] | None, *, width: int = 360,
            height: int = 72, rendering: ContextManager[object] | None = None,
            render: Callable[[Path, float, tuple[float, float] | None, int, int], bytes] | None = None) -> bytes:
        """A ``width`` x ``height`` PNG of ``path`` with ``mark = (start_s, end_s)`` highlighted.

        ``rendering`` is entered around the render only (not around a cache hit), e.g. a
        slot of the server's bulkhead. ``render`` renders a miss (default
        :func:`render_spectrogram` in this thread; the server passes its worker processes').
        """
        if not (16 <= width <= 2048 and 16 <= height <= 1024):
            raise InputError(f"thumbnail size {width}x{height} is outside 16x16..2048x1024")
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns, mark, width, height)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        with rendering if rendering is not None else contextlib.nullcontext():
            data = (render or render_spectrogram)(path, duration_s, mark, width, height)
        with self._lock:
            self.rendered += 1
            self._cache[key] = data
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return data


def view_span(duration_s: float, mark: tuple[float, float] | None, max_s: float = THUMB_MAX_S) -> tuple[float, float]:
    """The ``(start_s, end_s)`` a thumbnail shows: the whole file, or ``max_s`` around the mark."""
    if duration_s <= max_s:
        return 0.0, duration_s
    centre = duration_s / 2 if mark is None else (mark[0] + mark[1]) / 2
    a = min(max(centre - max_s / 2, 0.0), duration_s - max_s)
    return a, a + max_s


def render_spectrogram(path: Path, duration_s: float, mark: tuple[float, float] | None, width: int,
                       height: int) -> bytes:
    """PNG bytes: log-frequency power spectrogram (magma), the span outside ``mark`` dimmed."""
    from matplotlib import colormaps
    from PIL import Image

    a, b = view_span(duration_s, mark)
    audio = load(path, THUMB_SR, start_s=a, end_s=b) if b > a else np.zeros(0, np.float32)
    if audio.size < THUMB_NFFT:
        audio = np.pad(audio, (0, THUMB_NFFT - audio.size))
    starts = np.linspace(0, audio.size - THUMB_NFFT, width).round().astype(np.int64)
    frames = audio[starts[:, None] + np.arange(THUMB_NFFT)] * np.hanning(THUMB_NFFT).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (width, nfft/2+1)
    hz = np.fft.rfftfreq(THUMB_NFFT, 1 / THUMB_SR)
    edges = np.geomspace(60.0, THUMB_SR / 2, height + 1)
    bins = np.clip(np.searchsorted(hz, edges), 1, power.shape[1] - 1)
    rows = np.stack([power[:, lo:max(hi, lo + 1)].max(axis=1) for lo, hi in zip(bins[:-1], bins[1:])], axis=1)
    db = 10 * np.log10(rows + 1e-12)
    level = np.clip((db - (db.max() - RANGE_DB)) / RANGE_DB, 0, 1).T[::-1]  # (height, width), low at bottom
    rgb = (colormaps["magma"](level)[..., :3] * 255).astype(np.float32)
    if mark is not None and b > a:
        x0 = int(np.floor((mark[0] - a) / (b - a) * width))
        x1 = int(np.ceil((mark[1] - a) / (b - a) * width))
        x0, x1 = max(0, min(x0, width - 1)), max(1, min(x1, width))
        outside = np.ones(width, bool)
        outside[x0:x1] = False
        rgb[:, outside] *= 0.35
        for x in {x0, max(x1 - 1, 0)}:
            rgb[:, x] = (94, 234, 212)
        rgb[:3, x0:x1] = (94, 234, 212)
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8), "RGB").save(buf, format="PNG", optimize=False)
    return buf.getvalue()
