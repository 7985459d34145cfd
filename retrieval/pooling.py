"""Mask-aware pooling over time, in two stages: frames -> window, windows -> file.

Padded (masked) frames never enter a mean, a max or a standard deviation. The file
stage is exact: pooling the window vectors with their frame counts gives the same
result as pooling every valid frame of the file at once (frames inside overlapping
windows count once per window).

Modes:
    mean     ``D``   average of valid frames
    max      ``D``   element-wise maximum of valid frames
    meanmax  ``2D``  [mean, max]
    meanstd  ``2D``  [mean, standard deviation]
    none     ``D``   window vectors are means; no file vector is kept
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

from retrieval.errors import InputError, UnknownNameError

PoolingMode = Literal["mean", "max", "meanmax", "meanstd", "none"]
POOLING_MODES: tuple[str, ...] = get_args(PoolingMode)


def check_mode(mode: str) -> PoolingMode:
    """Return ``mode`` if valid; an unknown mode lists the valid ones."""
    if mode not in POOLING_MODES:
        raise UnknownNameError(f"unknown pooling {mode!r}; choose one of: {', '.join(POOLING_MODES)}")
    return mode  # type: ignore[return-value]


def pooled_dim(mode: str, dim: int) -> int:
    """Size of a pooled vector for frame size ``dim``."""
    return 2 * dim if check_mode(mode) in ("meanmax", "meanstd") else dim


def keeps_file_vectors(mode: str) -> bool:
    """Whether the mode stores one vector per file beside the window vectors."""
    return check_mode(mode) != "none"


def pool_windows(embeddings: np.ndarray, mask: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Pool frames into one vector per window.

    Args:
        embeddings: ``(n, T, D)`` float32 frame vectors.
        mask: ``(n, T)`` bool, True for valid frames.
        mode: a pooling mode.

    Returns:
        ``(vectors, counts)``: ``(n, P)`` float32 pooled vectors and ``(n,)`` int64 valid
        frame counts. A window with no valid frame gets a zero vector and count 0.
    """
    mode = check_mode(mode)
    if embeddings.ndim != 3 or mask.shape != embeddings.shape[:2]:
        raise InputError(f"need embeddings (n, T, D) and mask (n, T); got {embeddings.shape} and {mask.shape}")
    x = embeddings.astype(np.float64)
    m = mask.astype(bool)[..., None]
    counts = m[..., 0].sum(axis=1)
    divisor = np.maximum(counts, 1)[:, None]
    mean = np.where(m, x, 0.0).sum(axis=1) / divisor
    parts: list[np.ndarray] = []
    if mode in ("mean", "none", "meanmax", "meanstd"):
        parts.append(mean)
    if mode in ("max", "meanmax"):
        mx = np.where(m, x, -np.inf).max(axis=1) if x.shape[1] else np.zeros_like(mean)
        parts.append(np.where(counts[:, None] > 0, mx, 0.0))
    if mode == "meanstd":
        var = np.where(m, (x - mean[:, None, :]) ** 2, 0.0).sum(axis=1) / divisor
        parts.append(np.sqrt(var))
    return np.concatenate(parts, axis=1).astype(np.float32), counts.astype(np.int64)


def pool_file(window_vectors: np.ndarray, counts: np.ndarray, mode: str) -> np.ndarray | None:
    """Pool a file's window vectors into its file vector.

    Args:
        window_vectors: ``(w, P)`` float32 outputs of :func:`pool_windows` for one file.
        counts: ``(w,)`` valid frames behind each window vector (the weights of the mean).
        mode: the mode the windows were pooled with.

    Returns:
        ``(P,)`` float32, or None when the mode keeps no file vector or no window counts.
    """
    mode = check_mode(mode)
    valid = counts > 0
    if mode == "none" or not valid.any():
        return None
    v = window_vectors[valid].astype(np.float64)
    w = counts[valid].astype(np.float64)[:, None]
    total = w.sum()
    if mode == "mean":
        out = (v * w).sum(0) / total
    elif mode == "max":
        out = v.max(0)
    else:
        d = v.shape[1] // 2
        mean = (v[:, :d] * w).sum(0) / total
        if mode == "meanmax":
            out = np.concatenate([mean, v[:, d:].max(0)])
        else:  # meanstd: pooled variance from per-window mean and variance
            second = ((v[:, d:] ** 2 + v[:, :d] ** 2) * w).sum(0) / total
            out = np.concatenate([mean, np.sqrt(np.maximum(second - mean**2, 0.0))])
    return out.astype(np.float32)


def lift(vectors: np.ndarray, mode: str) -> np.ndarray:
    """Map ``(n, D)`` single vectors (e.g. text embeddings) into the pooled space ``(n, P)``.

    ``meanmax`` repeats the vector (a constant signal has mean = max); ``meanstd``
    pairs it with a zero deviation.
    """
    mode = check_mode(mode)
    if mode == "meanmax":
        return np.concatenate([vectors, vectors], axis=1)
    if mode == "meanstd":
        return np.concatenate([vectors, np.zeros_like(vectors)], axis=1)
    return vectors
