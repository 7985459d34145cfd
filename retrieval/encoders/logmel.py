"""The spectral baseline: log-mel, MFCC or PCEN frames, no weights needed.

Rung 1 of the ladder (baseline, then a frozen encoder, then fine-tuning). Frames are
25 ms Hann windows every 10 ms at 16 kHz. The mel filterbank, DCT and PCEN filter are
written in numpy (here and in :mod:`retrieval.encoders.dsp`) because the library that
ships them (librosa) would pull numba and llvmlite into every install for twenty lines of
arithmetic, torchaudio is not installable on CPU-only machines we target, and importing
scipy's would cost a cold ``retrieve query`` more than the query itself.

Each window is computed on its own, row by row, so a clip gives bit-identical frames
alone or inside any batch.

Defaults (measured in ``docs/bench_baseline.md``): 20 MFCCs without deltas, gain
normalisation (the window's mean level is removed, its spectral shape kept), leading
and trailing frames more than 40 dB below the window's loudest frame masked out, and
``pyramid`` pooling, so the pooled vector describes the sound's spectral shape at the
start, middle and end of the sound rather than of the window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Literal

import numpy as np

from retrieval.encoders.base import EncoderOptions, FrameEmbeddings, check_batch, text_unsupported
from retrieval.encoders.dsp import BandMatrix, dct2_ortho_basis, one_pole_smooth, periodic_hann
from retrieval.errors import InputError

Feature = Literal["logmel", "mfcc", "pcen"]
Norm = Literal["none", "gain", "cmn", "cmvn"]
FEATURES: tuple[str, ...] = ("logmel", "mfcc", "pcen")
NORMS: tuple[str, ...] = ("none", "gain", "cmn", "cmvn")
#: Floor on the per-coefficient deviation in ``cmvn``, in feature units.
CMVN_FLOOR = 1e-3
#: Frames whose spectrum is computed at once, across the rows of a batch (1.3 s of audio; about
#: 0.5 MB of FFT output, which stays in cache: on a 2-core EPYC, 128-frame steps took 0.57 ms per
#: FSDD window and 4096-frame steps 1.3-1.7 ms; one row at a time took 0.8-0.9 ms).
MEL_FRAMES_PER_STEP = 128


@dataclass(frozen=True)
class LogMelConfig:
    """Front-end settings; every field is part of the index recipe.

    Attributes:
        feature: ``logmel`` (log mel energies), ``mfcc`` (DCT of log-mel) or ``pcen``
            (per-channel energy normalisation).
        n_mels: mel bands.
        n_mfcc: cepstral coefficients kept for ``mfcc`` (c0 included).
        deltas: append first and second time derivatives (x3 dims).
        norm: per-window normalisation, with statistics over the kept (unmasked) frames:
            ``gain`` removes the mean level only (mfcc: the mean of c0, which is where a
            gain change lands under the orthonormal DCT; logmel: the mean over time and
            bands; pcen is gain-normalised already and is left as is), keeping the
            spectral shape that tells a dog from rain; ``cmn`` subtracts each
            coefficient's mean over time (channel removal for speech, which also
            removes the spectral shape); ``cmvn`` also divides by its deviation;
            ``none`` leaves the features as computed.
        trim_db: frames before the first and after the last frame within ``trim_db``
            dB of the window's loudest frame (mel energy) are marked invalid in the
            mask, so pooling sees the sound and not the silence around it. Frames in
            between are always kept. None keeps every frame.
        fmin_hz, fmax_hz: mel band edges.
    """

    feature: Feature = "mfcc"
    n_mels: int = 64
    n_mfcc: int = 20
    deltas: bool = False
    norm: Norm = "gain"
    trim_db: float | None = 40.0
    fmin_hz: float = 50.0
    fmax_hz: float = 8000.0

    def __post_init__(self) -> None:
        if self.feature not in FEATURES:
            raise InputError(f"unknown logmel feature {self.feature!r}; choose one of: {', '.join(FEATURES)}")
        if self.norm not in NORMS:
            raise InputError(f"unknown logmel norm {self.norm!r}; choose one of: {', '.join(NORMS)}")
        if isinstance(self.trim_db, str) and self.trim_db.lower() in ("none", "null", "off"):
            object.__setattr__(self, "trim_db", None)
        if self.trim_db is not None and (
            isinstance(self.trim_db, bool) or not isinstance(self.trim_db, (int, float)) or not self.trim_db > 0
        ):
            raise InputError(f"trim_db must be a positive number of dB or none; got {self.trim_db!r}")
        for name in ("n_mels", "n_mfcc"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer; got {value!r}")
        if self.feature == "mfcc" and self.n_mfcc > self.n_mels:
            raise InputError(f"n_mfcc ({self.n_mfcc}) cannot exceed n_mels ({self.n_mels})")


class LogMelEncoder:
    """Spectral baseline encoder (see module docstring)."""

    name: ClassVar[str] = "logmel"
    default_model: ClassVar[str | None] = None
    default_window_s: ClassVar[float] = 4.0
    default_hop_s: ClassVar[float] = 2.0
    default_pooling: ClassVar[str] = "pyramid"
    precision_cosine: ClassVar[Mapping[str, float]] = {"fp32": 1.0}  # numpy float64, stored float32

    sample_rate: int = 16000
    win_samples: int = 400
    hop_samples: int = 160
    n_fft: int = 512
    has_text: bool = False

    def __init__(self, options: EncoderOptions | None = None) -> None:
        options = options or EncoderOptions()
        known = {f.name for f in fields(LogMelConfig)}
        unknown = set(options.extra) - known
        if unknown:
            raise InputError(f"unknown logmel settings {sorted(unknown)}; valid: {sorted(known)}")
        if options.precision != "fp32":
            raise InputError(f"logmel computes in numpy float64 and stores float32; precision {options.precision!r} "
                             "does not apply to it: choose one of: fp32 (drop --precision)")
        self.config = LogMelConfig(**options.extra)
        self._window = periodic_hann(self.win_samples)
        self._mel = mel_filterbank(self.sample_rate, self.n_fft, self.config.n_mels,
                                   self.config.fmin_hz, self.config.fmax_hz)
        # Sparse (each FFT bin feeds at most two bands) and BLAS-free, as is the DCT (einsum's
        # own loops): a frame's features do not depend on how many frames are computed at once
        # (a BLAS product rounds rows differently with their number), and a busy machine's BLAS
        # threads cannot stall them.
        self._mel_bands = BandMatrix(self._mel)
        self._dct = dct2_ortho_basis(self.config.n_mels, self.config.n_mfcc)
        base = self.config.n_mfcc if self.config.feature == "mfcc" else self.config.n_mels
        self.dim = base * (3 if self.config.deltas else 1)

    def recipe(self) -> dict[str, Any]:
        return {"checkpoint": None, "frame_s": self.win_samples / self.sample_rate,
                "frame_hop_s": self.hop_samples / self.sample_rate, **asdict(self.config)}

    def frame_embeddings(self, audio: np.ndarray, lengths: np.ndarray) -> FrameEmbeddings:
        """Frames for each row: ``(n, T, dim)`` float32 with ``T`` the longest row's frame count.

        The mask is False for padding and for the leading and trailing frames that
        ``trim_db`` rules out as silence; those frames still hold their features.
        The spectra of every row's frames are computed together (one FFT call per
        :data:`MEL_FRAMES_PER_STEP` frames, not one per row); each frame is computed alone
        either way, so a row's features do not depend on the batch (tested).
        """
        audio, lengths = check_batch(audio, lengths)
        rows = self._features_rows(*self._mel_power_rows(audio, lengths))
        t_max = max((r.shape[0] for r, _ in rows), default=0)
        emb = np.zeros((len(rows), t_max, self.dim), np.float32)
        mask = np.zeros((len(rows), t_max), bool)
        for i, (r, keep) in enumerate(rows):
            emb[i, : len(r)] = r
            mask[i, : len(r)] = keep
        times = (np.arange(t_max) * self.hop_samples + self.win_samples / 2) / self.sample_rate
        return FrameEmbeddings(emb, np.broadcast_to(times, (len(rows), t_max)).copy(), mask)

    def text_embeddings(self, texts: list[str]) -> np.ndarray:
        from retrieval.encoders.registry import text_encoders

        raise text_unsupported(self.name, text_encoders())

    # -- internals -------------------------------------------------------------------------

    def _features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features of one mono clip: ``(T, dim)`` float32 and the ``(T,)`` bool kept-frame mask."""
        x = np.asarray(x, np.float32)
        return self._features_rows(*self._mel_power_rows(x[None], np.array([x.size])))[0]

    def _features_rows(self, mel: np.ndarray, bounds: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Features of each row from :meth:`_mel_power_rows`: ``(T_i, dim)`` float32 and ``(T_i,)`` kept-frame mask.

        What depends on one frame alone (level, log, DCT) is computed over all rows' frames at
        once; what depends on the row (trim, normalisation, PCEN's smoothing, deltas) row by row.
        """
        cfg = self.config
        level = frame_level_db(mel) if cfg.trim_db is not None else None
        whole = None
        if cfg.feature != "pcen":
            whole = np.log(np.maximum(mel, 1e-10))
            if cfg.feature == "mfcc":
                whole = np.einsum("tm,mk->tk", whole, self._dct)
        rows = []
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            keep = trim_mask_of_level(level[a:b], cfg.trim_db) if level is not None else np.ones(b - a, bool)
            feat = pcen(mel[a:b]) if whole is None else whole[a:b]
            feat = normalize(feat, keep, cfg.norm, cfg.feature)
            if cfg.deltas:
                d1 = deltas(feat)
                feat = np.concatenate([feat, d1, deltas(d1)], axis=1)
            rows.append((feat.astype(np.float32), keep))
        return rows

    def _mel_power(self, x: np.ndarray) -> np.ndarray:
        """``(T, n_mels)`` float64 mel power spectrogram of one clip; clips shorter than a frame are zero-padded."""
        x = np.asarray(x, np.float32)
        return self._mel_power_rows(x[None], np.array([x.size]))[0]

    def _mel_power_rows(self, audio: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mel power of every row of a padded batch, frames of all rows stacked.

        Args:
            audio: ``(n, samples)`` float32; row ``i`` holds ``lengths[i]`` samples (a row shorter
                than a frame is zero-padded to one frame, whatever follows it in ``audio``).
            lengths: ``(n,)`` int64.

        Returns:
            ``(F, n_mels)`` float64 mel power and ``(n + 1,)`` int64 bounds: row ``i``'s frames are
            ``bounds[i]:bounds[i + 1]``.
        """
        win, hop = self.win_samples, self.hop_samples
        lengths = np.asarray(lengths, np.int64)
        short = lengths < win
        if short.any() or audio.shape[1] < win:
            padded = np.zeros((audio.shape[0], max(audio.shape[1], win)), np.float32)
            padded[:, : audio.shape[1]] = audio
            for i in np.flatnonzero(short).tolist():
                padded[i, lengths[i]:] = 0.0
            audio = padded
        audio = np.ascontiguousarray(audio, np.float32)
        n_frames = 1 + (np.maximum(lengths, win) - win) // hop
        bounds = np.concatenate([[0], np.cumsum(n_frames)]).astype(np.int64)
        # every frame's first sample in the flattened batch; frames never cross into padding
        row_of = np.repeat(np.arange(audio.shape[0]), n_frames)
        starts = row_of * audio.shape[1] + (np.arange(bounds[-1]) - bounds[row_of]) * hop
        flat = audio.reshape(-1)
        frames = np.lib.stride_tricks.as_strided(flat, (max(flat.size - win + 1, 0), win),
                                                 (flat.strides[0], flat.strides[0]), writeable=False)
        # In slices of frames: the FFT of many frames at once takes ~9 KB per frame (a 20-minute
        # window: 1.1 GB), the mel output 0.5 KB. Each frame is computed alone either way, so the
        # slicing (and the batch) changes no bit.
        mel = np.empty((int(bounds[-1]), self._mel.shape[1]), np.float64)
        for a in range(0, mel.shape[0], MEL_FRAMES_PER_STEP):
            step = frames[starts[a:a + MEL_FRAMES_PER_STEP]].astype(np.float64)  # exact, slice by slice
            spec = np.fft.rfft(step * self._window, n=self.n_fft, axis=1)
            power = spec.real**2 + spec.imag**2
            mel[a:a + MEL_FRAMES_PER_STEP] = self._mel_bands.apply(power)
        return mel, bounds


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin_hz: float, fmax_hz: float) -> np.ndarray:
    """``(n_fft // 2 + 1, n_mels)`` float64 Slaney-normalised triangular filters on the HTK mel scale."""
    fmax_hz = min(fmax_hz, sample_rate / 2)
    if not 0 <= fmin_hz < fmax_hz:
        raise InputError(f"need 0 <= fmin < fmax; got {fmin_hz} and {fmax_hz} Hz")
    mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(fmin_hz), mel(fmax_hz), n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    tri = np.maximum(0.0, np.minimum((bins - lower) / (centre - lower), (upper - bins) / (upper - centre)))
    tri *= (2.0 / (upper - lower))  # equal area per band
    return tri.T


def trim_mask(mel: np.ndarray, trim_db: float | None) -> np.ndarray:
    """``(T,)`` bool: True from the first to the last frame within ``trim_db`` dB of the loudest.

    Args:
        mel: ``(T, n_mels)`` mel power.
        trim_db: level range in dB below the loudest frame; None keeps every frame.

    Frame level is ``10 log10(sum of mel power)``, floored at -200 dB, so digital
    silence (every frame at the floor) keeps every frame.
    """
    if trim_db is None or mel.shape[0] == 0:
        return np.ones(mel.shape[0], bool)
    return trim_mask_of_level(frame_level_db(mel), trim_db)


def frame_level_db(mel: np.ndarray) -> np.ndarray:
    """``(T,)`` float64 level of each frame of ``(T, n_mels)`` mel power, dB, floored at -200 dB."""
    return 10.0 * np.log10(np.maximum(mel.sum(axis=1), 1e-20))


def trim_mask_of_level(level: np.ndarray, trim_db: float | None) -> np.ndarray:
    """:func:`trim_mask` from the frames' levels (:func:`frame_level_db`)."""
    keep = np.ones(level.shape[0], bool)
    if trim_db is None or level.shape[0] == 0:
        return keep
    loud = np.flatnonzero(level >= level.max() - trim_db)
    keep[: loud[0]] = False
    keep[loud[-1] + 1 :] = False
    return keep


def normalize(feat: np.ndarray, keep: np.ndarray, norm: str, feature: str) -> np.ndarray:
    """Per-window normalisation of ``(T, D)`` features, statistics over ``keep`` frames.

    See :class:`LogMelConfig` ``norm``. Returns a new ``(T, D)`` float64 array.
    """
    feat = np.array(feat, np.float64)
    kept = feat[keep]
    if norm == "gain":
        if feature == "mfcc":
            feat[:, 0] -= kept[:, 0].mean()
        elif feature == "logmel":
            feat -= kept.mean()
    elif norm in ("cmn", "cmvn"):
        feat -= kept.mean(axis=0, keepdims=True)
        if norm == "cmvn":
            feat /= np.maximum(kept.std(axis=0, keepdims=True), CMVN_FLOOR)
    return feat


def deltas(feat: np.ndarray, width: int = 2) -> np.ndarray:
    """Regression deltas over ``±width`` frames, edges repeated: ``(T, D) -> (T, D)``."""
    t = feat.shape[0]
    padded = np.pad(feat, ((width, width), (0, 0)), mode="edge")
    num = sum(k * (padded[width + k : width + k + t] - padded[width - k : width - k + t]) for k in range(1, width + 1))
    return num / (2.0 * sum(k * k for k in range(1, width + 1)))


def pcen(mel: np.ndarray, s: float = 0.025, alpha: float = 0.98, delta: float = 2.0,
         r: float = 0.5, eps: float = 1e-6) -> np.ndarray:
    """Per-channel energy normalisation (Wang et al., 2017) of ``(T, n_mels)`` mel power."""
    scaled = mel * (2.0**31)  # PCEN constants assume int32-scaled magnitudes
    smooth = one_pole_smooth(scaled, s, scaled[:1] * (1 - s))
    return (scaled / (eps + smooth) ** alpha + delta) ** r - delta**r
