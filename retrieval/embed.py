"""Windows -> encoder batches -> pooled window vectors. Shared by ingest and queries.

Windows are sorted by length and batched, so similar durations share a batch and
padding stays small; results come back in the caller's order. Batch invariance is
part of each encoder's contract, so the batching never changes a vector.

Out of memory. When an encoder call runs out of memory (``torch.cuda.OutOfMemoryError``,
a ``RuntimeError`` saying "out of memory", or ``MemoryError``), the batch size is halved
and the same windows are tried again, down to one window per call; only a single window
that does not fit is an error. Pass a :class:`Batching` to keep the smaller size for the
calls that follow (ingest does, for the whole run).

Model calls run under ``torch.inference_mode()`` whenever torch is loaded (the encoders
also enter it themselves; entering it here covers any code of theirs that does not).

numpy's BLAS is held to one thread while encoders run: the numpy work here is many
small matrix products, which OpenBLAS's thread hand-offs slow down by 10-50x on a
busy 2-core machine (measured: 0.3 ms vs 8-30 ms per window). torch keeps its own pool.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from retrieval.encoders.base import Encoder
from retrieval.errors import RetrievalError
from retrieval.pooling import pool_windows, pooled_dim

log = logging.getLogger(__name__)


@dataclass
class Batching:
    """Windows per encoder call, shrunk by halving whenever a call runs out of memory.

    Attributes:
        size: windows per call now (>= 1).
        halvings: how many times ``size`` was halved.
    """

    size: int
    halvings: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"batch size must be a positive integer; got {self.size!r}")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` means an allocation failed (host or accelerator)."""
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def embed_windows(
    encoder: Encoder, windows: Sequence[np.ndarray], pooling: str, batch_size: int | Batching = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Embed mono windows at the encoder's rate and pool each over its frames.

    Args:
        encoder: a loaded encoder.
        windows: 1-D float32 arrays of any lengths >= 1.
        pooling: pooling mode for frames -> window.
        batch_size: windows per encoder call, or a :class:`Batching` that is halved in
            place when a call runs out of memory.

    Returns:
        ``(vectors (w, P) float32, frame counts (w,) int64)`` in the order of ``windows``.

    Raises:
        MemoryError: one window alone does not fit in memory.
    """
    out, counts, _ = _embed(encoder, windows, pooling, _batching(batch_size), isolate=False)
    return out, counts


def embed_each(
    encoder: Encoder, windows: Sequence[np.ndarray], pooling: str, batch_size: int | Batching = 16
) -> list[tuple[np.ndarray | None, int, str | None]]:
    """Like :func:`embed_windows`, but a failure costs only the windows that fail.

    A batch that raises (other than running out of memory, which halves the batch) is
    retried one window at a time, and a window that fails alone gets an error instead of
    a vector.

    Returns:
        one ``(vector (P,) float32 or None, frame count, error or None)`` per window, in order.
    """
    out, counts, errors = _embed(encoder, windows, pooling, _batching(batch_size), isolate=True)
    return [(None, 0, err) if err is not None else (v, int(c), None) for v, c, err in zip(out, counts, errors)]


def embed_arrays(
    encoder: Encoder, windows: Sequence[np.ndarray], pooling: str, batch_size: int | Batching = 16
) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """:func:`embed_each` as arrays: ``(w, P)`` float32 vectors, ``(w,)`` int64 frame counts and one
    error or None per window; a window that failed has a zero vector and count 0 (the same
    values, without a tuple per window)."""
    return _embed(encoder, windows, pooling, _batching(batch_size), isolate=True)


#: What a failing encoder call may raise without stopping ingest (anything else is a bug).
ENCODER_FAILURES = (RetrievalError, RuntimeError, ValueError, MemoryError)


def _batching(batch_size: int | Batching) -> Batching:
    return batch_size if isinstance(batch_size, Batching) else Batching(int(batch_size))


def _embed(encoder: Encoder, windows: Sequence[np.ndarray], pooling: str, batching: Batching,
           isolate: bool) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """The batching loop behind :func:`embed_windows` (``isolate=False``: raise) and :func:`embed_each`."""
    n = len(windows)
    out = np.zeros((n, pooled_dim(pooling, encoder.dim)), np.float32)
    counts = np.zeros(n, np.int64)
    errors: list[str | None] = [None] * n
    order = sorted(range(n), key=lambda i: (len(windows[i]), i))
    with single_threaded_blas(), inference_mode():
        lo = 0
        while lo < n:
            idx = order[lo:lo + batching.size]
            try:
                _run(encoder, windows, pooling, idx, out, counts)
            except ENCODER_FAILURES as exc:
                oom = is_out_of_memory(exc)
                if oom:
                    _release_cached_memory()
                if oom and len(idx) > 1:
                    batching.size = max(1, len(idx) // 2)
                    batching.halvings += 1
                    log.warning("encoder ran out of memory on %d windows; batch size halved to %d",
                                len(idx), batching.size)
                    continue
                if not isolate:
                    if oom:
                        raise MemoryError(f"out of memory embedding one window of {len(windows[idx[0]])} "
                                          f"samples ({exc})") from exc
                    raise
                log.debug("batch of %d windows failed (%s); retrying them one by one", len(idx), exc)
                for i in idx:
                    errors[i] = _alone(encoder, windows, pooling, i, out, counts)
            lo += len(idx)
    return out, counts, errors


def _alone(encoder: Encoder, windows: Sequence[np.ndarray], pooling: str, i: int,
           out: np.ndarray, counts: np.ndarray) -> str | None:
    """Embed window ``i`` by itself; the error text if it fails."""
    try:
        _run(encoder, windows, pooling, [i], out, counts)
        return None
    except ENCODER_FAILURES as exc:
        if is_out_of_memory(exc):
            _release_cached_memory()
            return f"encoder failed: out of memory embedding one window of {len(windows[i])} samples ({exc})"
        return f"encoder failed: {exc}"


def _run(encoder: Encoder, windows: Sequence[np.ndarray], pooling: str, idx: list[int],
         out: np.ndarray, counts: np.ndarray) -> None:
    """Embed the windows ``idx`` as one zero-padded batch into ``out`` and ``counts``."""
    lengths = np.array([len(windows[i]) for i in idx], np.int64)
    batch = np.zeros((len(idx), int(lengths.max())), np.float32)
    for row, i in enumerate(idx):
        batch[row, : lengths[row]] = windows[i]
    frames = encoder.frame_embeddings(batch, lengths)
    vecs, cnt = pool_windows(frames.embeddings, frames.mask, pooling)
    out[idx] = vecs
    counts[idx] = cnt


def inference_mode() -> AbstractContextManager:
    """``torch.inference_mode()`` when torch is already imported, else nothing (never imports torch)."""
    torch = sys.modules.get("torch")
    return torch.inference_mode() if torch is not None else contextlib.nullcontext()


def _release_cached_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


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
