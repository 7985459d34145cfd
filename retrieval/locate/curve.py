"""Similarity over time: stream a long file window by window and score each window against a query.

The file is decoded in blocks (:func:`retrieval.audio.decode.stream`) and cut into
windows as it arrives (:func:`retrieval.audio.windows.cut_stream`), so its audio is
never in memory whole. What is kept is one pooled vector per window (``P`` float32
values: a 1-hour file at a 0.1 s hop with logmel's pyramid vectors is 23 MB), because
the per-file standardisation below needs the file's statistics before any score.

Score of window ``i`` = cosine between the query vector and the window's vector, both
passed through the same ``transform`` (an index's post-processing, or plain L2
normalisation), and then -- with ``standardize=True`` -- through a per-dimension
standardisation fitted on the file's own windows (mean 0, unit variance). The
standardisation lets the dimensions that *change* within the recording carry the
score; the ones shared by all of it (it is speech, this microphone) cancel. On the
logmel baseline it is what separates a planted word from other speech: the margin by
which the copies out-score everything else goes from +0.2 to +0.9 robust standard
deviations, and event F1 from 0.82 to 1.00 (``docs/bench_locate.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from retrieval import progress
from retrieval.audio.decode import probe, stream
from retrieval.audio.windows import cut_stream, plan_windows
from retrieval.embed import embed_windows
from retrieval.encoders.base import Encoder
from retrieval.errors import AudioError, InputError
from retrieval.postprocess import l2_normalize

#: Relative floor on a dimension's standard deviation (dimensions constant over the file are ignored).
STD_FLOOR = 1e-6
#: Fewer windows than this and the file is not standardised (statistics of one window are meaningless).
MIN_STANDARDIZE = 2


@dataclass(frozen=True)
class Scan:
    """How a long file is turned into window vectors.

    Attributes:
        encoder: a loaded encoder.
        window_samples, hop_samples: at ``encoder.sample_rate``.
        pooling: frames -> window vector (``retrieval.pooling`` mode).
        transform: ``(n, P)`` raw pooled -> ``(n, P')`` unit vectors (post-processing + L2).
        standardize: standardise each dimension over the file's windows before the cosine.
        batch_size: windows per encoder call.
    """

    encoder: Encoder
    window_samples: int
    hop_samples: int
    pooling: str
    transform: Callable[[np.ndarray], np.ndarray] = l2_normalize
    standardize: bool = True
    batch_size: int = 32

    @property
    def sample_rate(self) -> int:
        return int(self.encoder.sample_rate)


@dataclass(frozen=True)
class Curve:
    """One similarity score per analysis window of a file.

    Attributes:
        windows: ``(n, 2)`` int64 ``[start, end)`` samples at ``sample_rate``, sorted by start.
        scores: ``(n,)`` float32 cosine similarities.
        sample_rate: Hz.
        n_samples: the file's length in samples at ``sample_rate``.
    """

    windows: np.ndarray
    scores: np.ndarray
    sample_rate: int
    n_samples: int

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sample_rate

    def to_frame(self) -> pd.DataFrame:
        """One row per window: ``start_s``, ``end_s``, ``centre_s``, ``score``."""
        w = self.windows.astype(np.float64) / self.sample_rate
        return pd.DataFrame({"start_s": w[:, 0], "end_s": w[:, 1], "centre_s": w.mean(axis=1),
                             "score": self.scores.astype(float)})


def window_vectors(scan: Scan, path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Stream ``path`` through ``scan``: its windows, their transformed vectors and its length.

    Returns:
        ``(windows (n, 2) int64, vectors (n, P') float32, n_samples)``.

    Raises:
        AudioError: the file cannot be decoded or holds no samples.
    """
    windows: list[tuple[int, int]] = []
    vectors: list[np.ndarray] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        raw, _ = embed_windows(scan.encoder, batch, scan.pooling, scan.batch_size)
        vectors.append(np.asarray(scan.transform(raw), np.float32))
        batch.clear()

    info = probe(Path(path))
    total = plan_windows(round(info.duration_s * scan.sample_rate), scan.window_samples, scan.hop_samples).shape[0]
    cut = cut_stream(stream(Path(path), scan.sample_rate, info=info), scan.window_samples, scan.hop_samples)
    for w in progress.bar(cut, total=total, desc=f"scanning {Path(path).name}", unit="window"):
        windows.append((w.start, w.end))
        batch.append(w.audio)
        if len(batch) >= 4 * scan.batch_size:
            flush()
    if batch:
        flush()
    if not windows:
        raise AudioError(f"{Path(path).name} holds no audio samples")
    win = np.array(windows, np.int64)
    return win, np.concatenate(vectors), int(win[:, 1].max())


def cosine_scores(vectors: np.ndarray, query: np.ndarray, standardize: bool) -> np.ndarray:
    """``(n,)`` float32 cosines between ``(n, P)`` window vectors and a ``(P,)`` query vector.

    With ``standardize``, both are first centred and scaled per dimension by the mean and
    standard deviation of ``vectors`` (see the module docstring); with fewer than
    :data:`MIN_STANDARDIZE` windows they are compared as given.
    """
    v = np.asarray(vectors, np.float64)
    q = np.asarray(query, np.float64).reshape(-1)
    if v.ndim != 2 or v.shape[1] != q.shape[0]:
        raise InputError(f"query vector has dim {q.shape[0]}; window vectors are {v.shape}: "
                         "embed both with the same encoder, pooling and post-processing")
    if standardize and len(v) >= MIN_STANDARDIZE:
        mean = v.mean(axis=0)
        sd = v.std(axis=0)
        sd = np.maximum(sd, STD_FLOOR * max(float(sd.max()), 1e-12))
        v = (v - mean) / sd
        q = (q - mean) / sd
    return (l2_normalize(v) @ l2_normalize(q[None])[0]).astype(np.float32)


def similarity_curve(scan: Scan, query_vector: np.ndarray, path: Path) -> Curve:
    """Score every window of the file at ``path`` against ``query_vector`` (already through ``scan.transform``)."""
    windows, vectors, n_samples = window_vectors(scan, path)
    scores = cosine_scores(vectors, query_vector, scan.standardize)
    return Curve(windows, scores, scan.sample_rate, n_samples)
