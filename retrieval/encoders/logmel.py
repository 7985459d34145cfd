"""The spectral baseline: log-mel, MFCC or PCEN frames, no weights needed.

Rung 1 of the ladder (baseline, then a frozen encoder, then fine-tuning). Frames are
25 ms Hann windows every 10 ms at 16 kHz. The mel filterbank and DCT are written
here in numpy because the library that ships them (librosa) would pull numba and
llvmlite into every install for twenty lines of arithmetic, and torchaudio is not
installable on CPU-only machines we target.

Each window is computed on its own, row by row, so a clip gives bit-identical frames
alone or inside any batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.fft
import scipy.signal

from retrieval.encoders.base import EncoderOptions, FrameEmbeddings, check_batch, text_unsupported
from retrieval.errors import InputError

Feature = Literal["logmel", "mfcc", "pcen"]


@dataclass(frozen=True)
class LogMelConfig:
    """Front-end settings; every field is part of the index recipe.

    Attributes:
        feature: ``logmel`` (log mel energies), ``mfcc`` (DCT of log-mel) or ``pcen``
            (per-channel energy normalisation).
        n_mels: mel bands.
        n_mfcc: cepstral coefficients kept for ``mfcc`` (c0 included).
        deltas: append first and second time derivatives (x3 dims).
        cmn: subtract each window's mean over time (cepstral mean normalisation),
            which removes channel and loudness offsets.
        fmin_hz, fmax_hz: mel band edges.
    """

    feature: Feature = "mfcc"
    n_mels: int = 64
    n_mfcc: int = 20
    deltas: bool = True
    cmn: bool = True
    fmin_hz: float = 50.0
    fmax_hz: float = 8000.0


class LogMelEncoder:
    """Spectral baseline encoder (see module docstring)."""

    name: ClassVar[str] = "logmel"
    default_model: ClassVar[str | None] = None
    default_window_s: ClassVar[float] = 4.0
    default_hop_s: ClassVar[float] = 2.0
    default_pooling: ClassVar[str] = "meanstd"

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
        self.config = LogMelConfig(**options.extra)
        if self.config.feature not in ("logmel", "mfcc", "pcen"):
            raise InputError(f"unknown logmel feature {self.config.feature!r}; choose logmel, mfcc or pcen")
        self._window = scipy.signal.get_window("hann", self.win_samples, fftbins=True).astype(np.float64)
        self._mel = mel_filterbank(self.sample_rate, self.n_fft, self.config.n_mels,
                                   self.config.fmin_hz, self.config.fmax_hz)
        base = self.config.n_mfcc if self.config.feature == "mfcc" else self.config.n_mels
        self.dim = base * (3 if self.config.deltas else 1)

    def recipe(self) -> dict[str, Any]:
        return {"checkpoint": None, "frame_s": self.win_samples / self.sample_rate,
                "frame_hop_s": self.hop_samples / self.sample_rate, **asdict(self.config)}

    def frame_embeddings(self, audio: np.ndarray, lengths: np.ndarray) -> FrameEmbeddings:
        """Frames for each row: ``(n, T, dim)`` with ``T`` the longest row's frame count."""
        audio, lengths = check_batch(audio, lengths)
        rows = [self._features(audio[i, : lengths[i]]) for i in range(audio.shape[0])]
        t_max = max((r.shape[0] for r in rows), default=0)
        emb = np.zeros((len(rows), t_max, self.dim), np.float32)
        mask = np.zeros((len(rows), t_max), bool)
        for i, r in enumerate(rows):
            emb[i, : len(r)] = r
            mask[i, : len(r)] = True
        times = (np.arange(t_max) * self.hop_samples + self.win_samples / 2) / self.sample_rate
        return FrameEmbeddings(emb, np.broadcast_to(times, (len(rows), t_max)).copy(), mask)

    def text_embeddings(self, texts: list[str]) -> np.ndarray:
        from retrieval.encoders.registry import text_encoders

        raise text_unsupported(self.name, text_encoders())

    # -- internals -------------------------------------------------------------------------

    def _features(self, x: np.ndarray) -> np.ndarray:
        """``(T, dim)`` float32 features of one mono clip."""
        mel = self._mel_power(x)
        cfg = self.config
        if cfg.feature == "pcen":
            feat = pcen(mel)
        else:
            feat = np.log(np.maximum(mel, 1e-10))
            if cfg.feature == "mfcc":
                feat = scipy.fft.dct(feat, type=2, norm="ortho", axis=1)[:, : cfg.n_mfcc]
        if cfg.cmn:
            feat = feat - feat.mean(axis=0, keepdims=True)
        if cfg.deltas:
            d1 = deltas(feat)
            feat = np.concatenate([feat, d1, deltas(d1)], axis=1)
        return feat.astype(np.float32)

    def _mel_power(self, x: np.ndarray) -> np.ndarray:
        """``(T, n_mels)`` float64 mel power spectrogram; clips shorter than a frame are zero-padded."""
        x = x.astype(np.float64)
        if x.size < self.win_samples:
            x = np.pad(x, (0, self.win_samples - x.size))
        n_frames = 1 + (x.size - self.win_samples) // self.hop_samples
        frames = np.lib.stride_tricks.sliding_window_view(x, self.win_samples)[:: self.hop_samples][:n_frames]
        spec = np.fft.rfft(frames * self._window, n=self.n_fft, axis=1)
        power = spec.real**2 + spec.imag**2
        return power @ self._mel


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
    smooth = scipy.signal.lfilter([s], [1.0, s - 1.0], scaled, axis=0, zi=scaled[:1] * (1 - s))[0]
    return (scaled / (eps + smooth) ** alpha + delta) ** r - delta**r
