"""Content-identity frames: what makes two files the *same recording*, not just similar sound.

A file becomes a ``(T, BANDS)`` uint8 matrix of band levels: the audio is taken at
:data:`COPY_RATE` (8 kHz; the band of telephone speech and of every source the benchmark
mixes in), cut into 64 ms Hann frames every 8 ms (:data:`HOP_SAMPLES`), and the power in
:data:`BANDS` log-spaced bands from 300 to 3800 Hz is kept in dB, quantised to 0.5 dB
(:func:`quantise`). 125 frames of 16 bytes per second: 2 kB per second of audio.

Why these choices:

* **300-3800 Hz** survives an 8 kHz source inside a 44.1 kHz file, mp3/ogg coding (which
  removes the top and keeps this band), and phone-like bandwidths.
* **levels, not embeddings**: verification (:mod:`retrieval.copies.match`) correlates the
  second differences of these levels across bands and time, which a gain change cancels
  and the fine timing of one particular take decides.
* **channels summed in power**, not mixed to mono first: a stereo file whose second
  channel is the first phase-inverted mixes to silence, yet is a copy of the first channel.

The frames are computed from the blocks ingest decodes anyway (:class:`CopyStream`, fed
through the decoder's tap), so turning copies on costs no second decode.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import soxr

#: Rate (Hz) the copy frames are computed at.
COPY_RATE = 8000
#: Frame length and hop, in samples at :data:`COPY_RATE` (64 ms and 8 ms; a hop of 16 ms lost up to
#: 0.2 of the match score to a copy trimmed by half a hop, measured on FSDD).
FRAME_SAMPLES = 512
HOP_SAMPLES = 64
#: Band edges (Hz) and the number of log-spaced bands between them.
F_LOW, F_HIGH = 300.0, 3800.0
BANDS = 16
#: dB quantisation: ``q = round((dB - DB_FLOOR) / DB_STEP)`` clipped to 0..255.
DB_FLOOR = -100.0
DB_STEP = 0.5
#: Version of this recipe, stored with the frames; frames of another version are recomputed.
FEATURE_VERSION = 1

HOP_S = HOP_SAMPLES / COPY_RATE


def _band_matrix() -> np.ndarray:
    """``(FRAME_SAMPLES // 2 + 1, BANDS)`` float64 0/1 matrix summing FFT bins into bands."""
    freqs = np.fft.rfftfreq(FRAME_SAMPLES, 1.0 / COPY_RATE)
    edges = np.geomspace(F_LOW, F_HIGH, BANDS + 1)
    m = np.zeros((freqs.size, BANDS))
    for b in range(BANDS):
        m[(freqs >= edges[b]) & (freqs < edges[b + 1]), b] = 1.0
    return m


_BANDS = _band_matrix()
#: FFT bins some band sums (bins outside 300-3800 Hz are never used).
_BIN_LO, _BIN_HI = int(np.flatnonzero(_BANDS.any(axis=1))[0]), int(np.flatnonzero(_BANDS.any(axis=1))[-1]) + 1
_BANDS_USED = _BANDS[_BIN_LO:_BIN_HI]
_WINDOW = np.hanning(FRAME_SAMPLES + 1)[:-1]
#: Power of a full-scale sine summed over its bins is about 0 dB after this scale.
_SCALE = 2.0 / float(np.sum(_WINDOW) ** 2) * 2.0


def quantise(db: np.ndarray) -> np.ndarray:
    """dB levels ``(T, BANDS)`` float -> uint8 steps of :data:`DB_STEP` above :data:`DB_FLOOR`."""
    return np.clip(np.rint((db - DB_FLOOR) / DB_STEP), 0, 255).astype(np.uint8)


def dequantise(q: np.ndarray) -> np.ndarray:
    """uint8 steps -> dB levels, float32."""
    return q.astype(np.float32) * np.float32(DB_STEP) + np.float32(DB_FLOOR)


def band_power(frames: np.ndarray) -> np.ndarray:
    """``(T, FRAME_SAMPLES)`` float32 frames -> ``(T, BANDS)`` float64 band power (linear).

    numpy's float64 FFT, and only the bins some band sums: scipy's float32 FFT ran about a
    quarter faster on FSDD words, but importing ``scipy.fft`` costs about 0.35 s, more than
    it saves below a few thousand files (a log-mel ingest imports no scipy otherwise).
    """
    spec = np.fft.rfft(frames * _WINDOW, axis=1)[:, _BIN_LO:_BIN_HI]
    return (spec.real ** 2 + spec.imag ** 2) @ _BANDS_USED * _SCALE


#: Samples at :data:`COPY_RATE` gathered before they are framed (4 s): a word-length file is framed
#: in one go at :meth:`CopyStream.finish`, a long one in pieces of this size (memory stays bounded).
FRAME_BATCH_SAMPLES = 32768


def _frame_view(x: np.ndarray, n: int) -> np.ndarray:
    """``(n, FRAME_SAMPLES)`` read-only view of the frames of C-contiguous 1-D ``x``, every :data:`HOP_SAMPLES`."""
    step = x.strides[0]
    return np.lib.stride_tricks.as_strided(x, (n, FRAME_SAMPLES), (HOP_SAMPLES * step, step), writeable=False)


class CopyStream:
    """Copy frames from a file's decoded blocks, streamed: memory stays a few seconds' worth.

    Feed :meth:`add` the blocks as the decoder reads them, ``(n, channels)`` at the file's own
    rate (any dtype; non-finite samples count as 0), then call :meth:`finish`.
    Blocks of any size give the same frames (the resampler and the framing carry state).
    ``lead_samples`` zeros (at :data:`COPY_RATE`) go first: a query framed at another phase
    of the hop (:mod:`retrieval.copies.locate`).
    """

    def __init__(self, sample_rate: int, channels: int, lead_samples: int = 0) -> None:
        if sample_rate <= 0 or channels <= 0:
            raise ValueError(f"CopyStream needs a positive rate and channel count; got {sample_rate} Hz, {channels}")
        self.channels = channels
        self._resampler = None if sample_rate == COPY_RATE else soxr.ResampleStream(
            sample_rate, COPY_RATE, channels, dtype="float32", quality="MQ")
        # samples at COPY_RATE not yet framed, oldest first; half a frame of silence leads, so the
        # first frame is centred on sample 0
        self._pending: list[np.ndarray] = [np.zeros((FRAME_SAMPLES // 2 + int(lead_samples), channels), np.float32)]
        self._n_pending = int(self._pending[0].shape[0])
        self._rows: list[np.ndarray] = []

    def add(self, block: np.ndarray) -> None:
        """One decoded block, ``(n, channels)`` (or ``(n,)`` for mono) at the file's rate."""
        x = np.asarray(block, np.float32)
        if x.ndim == 1:
            x = x[:, None]
        if x.shape[1] != self.channels:
            raise ValueError(f"block has {x.shape[1]} channels; the stream was opened for {self.channels}")
        if not np.isfinite(x).all():
            x = np.where(np.isfinite(x), x, np.float32(0))
        self._push(x if self._resampler is None else self._resampler.resample_chunk(x))

    def _push(self, x: np.ndarray, last: bool = False) -> None:
        if x.size:
            self._pending.append(x)
            self._n_pending += x.shape[0]
        if last:
            self._pending.append(np.zeros((FRAME_SAMPLES // 2, self.channels), np.float32))
            self._n_pending += FRAME_SAMPLES // 2
        elif self._n_pending < FRAME_BATCH_SAMPLES:
            return
        buf = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        n = 0 if buf.shape[0] < FRAME_SAMPLES else 1 + (buf.shape[0] - FRAME_SAMPLES) // HOP_SAMPLES
        if n:
            power = None
            for c in range(self.channels):
                p = band_power(_frame_view(np.ascontiguousarray(buf[:, c]), n))
                power = p if power is None else power + p
            self._rows.append(quantise(10.0 * np.log10(power + 1e-12)))
        rest = buf[n * HOP_SAMPLES:]
        self._pending, self._n_pending = [rest], int(rest.shape[0])

    def finish(self) -> np.ndarray:
        """``(T, BANDS)`` uint8 frames of everything added; frame ``t`` is centred at ``t * HOP_S`` s."""
        tail = np.zeros((0, self.channels), np.float32)
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros((0, self.channels), np.float32), last=True)
        self._push(tail, last=True)
        return np.concatenate(self._rows) if len(self._rows) != 1 else self._rows[0]


def copy_frames(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Copy frames of a whole signal: ``(n,)`` or ``(n, channels)`` float at ``sample_rate`` Hz
    -> ``(T, BANDS)`` uint8 (see the module docstring)."""
    x = np.asarray(audio, np.float32)
    s = CopyStream(sample_rate, 1 if x.ndim == 1 else x.shape[1])
    s.add(x)
    return s.finish()


def frames_of_blocks(blocks: Iterable[np.ndarray], sample_rate: int, channels: int) -> np.ndarray:
    """Copy frames of a sequence of ``(n, channels)`` blocks at ``sample_rate``."""
    s = CopyStream(sample_rate, channels)
    for b in blocks:
        s.add(b)
    return s.finish()
