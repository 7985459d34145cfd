"""Windows -> encoder batches -> pooled window vectors. Shared by ingest and queries.

Windows are sorted by length and batched, so similar durations share a batch and
padding stays small; results come back in the caller's order. Batch invariance is
part of each encoder's contract, so the batching never changes a vector.

numpy's BLAS is held to one thread while encoders run: the numpy work here is many
small matrix products, which OpenBLAS's thread hand-offs slow down by 10-50x on a
busy 2-core machine (measured: 0.3 ms vs 8-30 ms per window). torch keeps its own pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from functools import lru_cache

import numpy as np

from retrieval.encoders.base import Encoder
from retrieval.pooling import pool_windows, pooled_dim


def embed_windows(
    encoder: Encoder, windows: Sequence[np.ndarray], pooling: str, batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Embed mono windows at the encoder's rate and pool each over its frames.

    Args:
        encoder: a loaded encoder.
        windows: 1-D float32 arrays of any lengths >= 1.
        pooling: pooling mode for frames -> window.
        batch_size: windows per encoder call.

    Returns:
        ``(vectors (w, P) float32, frame counts (w,) int64)`` in the order of ``windows``.
    """
    n = len(windows)
    out = np.zeros((n, pooled_dim(pooling, encoder.dim)), np.float32)
    counts = np.zeros(n, np.int64)
    order = sorted(range(n), key=lambda i: (len(windows[i]), i))
    with single_threaded_blas():
        _run(encoder, windows, pooling, batch_size, order, out, counts)
    return out, counts


def _run(encoder: Encoder, windows: Sequence[np.ndarray], pooling: str, batch_size: int,
         order: list[int], out: np.ndarray, counts: np.ndarray) -> None:
    for lo in range(0, len(order), batch_size):
        idx = order[lo:lo + batch_size]
        lengths = np.array([len(windows[i]) for i in idx], np.int64)
        batch = np.zeros((len(idx), int(lengths.max())), np.float32)
        for row, i in enumerate(idx):
            batch[row, : lengths[row]] = windows[i]
        frames = encoder.frame_embeddings(batch, lengths)
        vecs, cnt = pool_windows(frames.embeddings, frames.mask, pooling)
        out[idx] = vecs
        counts[idx] = cnt


@lru_cache(maxsize=1)
def _controller():  # threadpoolctl inspects loaded libraries once; later calls reuse it
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def single_threaded_blas() -> AbstractContextManager:
    """Context in which numpy's BLAS uses one thread."""
    return _controller().limit(limits=1, user_api="blas")


def embed_clip(
    encoder: Encoder, audio: np.ndarray, window_samples: int, hop_samples: int, pooling: str, batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embed one mono clip the way ingest embeds a file.

    Args:
        audio: ``(S,)`` float32 at the encoder's rate, ``S >= 1``.

    Returns:
        ``(clip_vector (P,), window_vectors (w, P), windows (w, 2) int64 [start, end))``.
        The clip vector pools the windows (mean pooling when the mode keeps no file vector).
    """
    from retrieval.audio.windows import plan_windows
    from retrieval.pooling import pool_file

    windows = plan_windows(len(audio), window_samples, hop_samples)
    vecs, counts = embed_windows(encoder, [audio[a:b] for a, b in windows], pooling, batch_size)
    clip = pool_file(vecs, counts, pooling if pooling != "none" else "mean")
    if clip is None:  # no frame at all: cannot happen for S >= 1 with a conforming encoder
        clip = vecs.mean(axis=0)
    return clip, vecs, windows
