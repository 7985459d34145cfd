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
    pyramid  ``8D``  temporal pyramid: [mean, standard deviation] of the whole window, then
                     the means of its two halves and of its four quarters (in time order)
    none     ``D``   window vectors are means; no file vector is kept

The pyramid splits a window's *valid* frames, by their rank in time, into ``p`` equal
parts (``p`` = 2, then 4): part ``j`` holds the valid frames of rank
``floor(j*n/p) <= r < max(floor((j+1)*n/p), floor(j*n/p) + 1)`` for ``n`` valid frames.
With ``n >= p`` this is a partition; a window with fewer than ``p`` valid frames lends
its nearest frame to each part that would be empty. An encoder that masks leading and
trailing silence (logmel's ``trim_db``) thus gets parts aligned to the sound itself.

File stage for the pyramid: the ``[mean, std]`` block is pooled exactly as ``meanstd``
(the mean and deviation of every valid frame of the file), and each part mean is the
frame-count-weighted average of that part over the file's windows, i.e. the file's
average window shape. A file of one window gets exactly its window vector.
"""

from __future__ import annotations

import numpy as np

from retrieval.errors import InputError
from retrieval.options import POOLING_MODES, PoolingMode, check_choice
#: Parts per pyramid level below the whole window (the whole window is level 0).
PYRAMID_PARTS: tuple[int, ...] = (2, 4)
#: Blocks of size ``D`` in a pyramid vector: mean, std, then one per part.
PYRAMID_BLOCKS = 2 + sum(PYRAMID_PARTS)


def check_mode(mode: str) -> PoolingMode:
    """Return ``mode`` if valid; an unknown mode lists the valid ones (:class:`~retrieval.errors.ChoiceError`)."""
    return check_choice("pooling", mode, POOLING_MODES)


def pooled_dim(mode: str, dim: int) -> int:
    """Size of a pooled vector for frame size ``dim``."""
    mode = check_mode(mode)
    if mode == "pyramid":
        return PYRAMID_BLOCKS * dim
    return 2 * dim if mode in ("meanmax", "meanstd") else dim


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
    if mode in ("mean", "none", "meanmax", "meanstd", "pyramid"):
        parts.append(mean)
    if mode in ("max", "meanmax"):
        mx = np.where(m, x, -np.inf).max(axis=1) if x.shape[1] else np.zeros_like(mean)
        parts.append(np.where(counts[:, None] > 0, mx, 0.0))
    if mode in ("meanstd", "pyramid"):
        var = np.where(m, (x - mean[:, None, :]) ** 2, 0.0).sum(axis=1) / divisor
        parts.append(np.sqrt(var))
    if mode == "pyramid":
        parts.extend(_part_means(x, m[..., 0], counts, p) for p in PYRAMID_PARTS)
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
    elif mode == "pyramid":
        d = v.shape[1] // PYRAMID_BLOCKS
        parts = (v[:, 2 * d :] * w).sum(0) / total
        out = np.concatenate([_meanstd_file(v[:, : 2 * d], w), parts])
    else:
        d = v.shape[1] // 2
        if mode == "meanmax":
            out = np.concatenate([(v[:, :d] * w).sum(0) / total, v[:, d:].max(0)])
        else:
            out = _meanstd_file(v, w)
    return out.astype(np.float32)


def lift(vectors: np.ndarray, mode: str) -> np.ndarray:
    """Map ``(n, D)`` single vectors (e.g. text embeddings) into the pooled space ``(n, P)``.

    ``meanmax`` repeats the vector (a constant signal has mean = max); ``meanstd``
    pairs it with a zero deviation; ``pyramid`` gives zero deviation and every part the
    vector itself.
    """
    mode = check_mode(mode)
    if mode == "pyramid":
        parts = [vectors] * sum(PYRAMID_PARTS)
        return np.concatenate([vectors, np.zeros_like(vectors), *parts], axis=1)
    if mode == "meanmax":
        return np.concatenate([vectors, vectors], axis=1)
    if mode == "meanstd":
        return np.concatenate([vectors, np.zeros_like(vectors)], axis=1)
    return vectors


def group_means(vectors: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean direction of each group's rows: the mean of its L2-normalised rows, L2-normalised.

    What a file's vector is when the pooling keeps none (``none``): the mean of its
    window vectors. Groups come in the order of their first row.

    Args:
        vectors: ``(n, D)`` float vectors.
        groups: ``(n,)`` group key of each row (a file id).

    Returns:
        ``(first, means)``: ``(g,)`` int64 index of each group's first row and ``(g, D)``
        float32 unit vectors.
    """
    from retrieval.postprocess import l2_normalize

    vectors = np.asarray(vectors)
    _, first, inverse = np.unique(np.asarray(groups), return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # np.unique sorts by key; keep the order of appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    sums = np.zeros((len(first), vectors.shape[1]), np.float64)
    np.add.at(sums, rank[inverse.ravel()], l2_normalize(vectors))
    return first[order].astype(np.int64), l2_normalize(sums)


def _meanstd_file(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Exact file ``[mean, std]`` ``(2D,)`` from window ``[mean, std]`` rows ``(w, 2D)`` and counts ``(w, 1)``.

    The pooled variance is ``E[x^2] - mean^2`` with ``E[x^2] = sum_w c_w (std_w^2 + mean_w^2) / sum_w c_w``.
    """
    d = v.shape[1] // 2
    total = w.sum()
    mean = (v[:, :d] * w).sum(0) / total
    second = ((v[:, d:] ** 2 + v[:, :d] ** 2) * w).sum(0) / total
    return np.concatenate([mean, np.sqrt(np.maximum(second - mean**2, 0.0))])


def _part_means(x: np.ndarray, mask: np.ndarray, counts: np.ndarray, p: int) -> np.ndarray:
    """Means of ``p`` equal parts (by rank in time) of each window's valid frames.

    Args:
        x: ``(n, T, D)`` float64 frames.
        mask: ``(n, T)`` bool, True for valid frames.
        counts: ``(n,)`` valid frames per window.
        p: number of parts.

    Returns:
        ``(n, p * D)`` float64, part ``j`` in columns ``j*D:(j+1)*D``; zeros for a window
        without valid frames. The part boundaries are in the module docstring.
    """
    n, _, d = x.shape
    rank = np.cumsum(mask, axis=1) - 1  # (n, T) rank of each valid frame among the valid ones
    j = np.arange(p + 1)
    bounds = (j[None, :] * counts[:, None]) // p  # (n, p + 1) floor(j * n / p)
    lo = bounds[:, :-1]
    hi = np.maximum(bounds[:, 1:], lo + 1)
    member = mask[:, :, None] & (rank[:, :, None] >= lo[:, None, :]) & (rank[:, :, None] < hi[:, None, :])
    sizes = member.sum(axis=1)  # (n, p)
    sums = np.einsum("ntd,ntp->npd", x, member.astype(np.float64))
    means = sums / np.maximum(sizes, 1)[:, :, None]
    return means.reshape(n, p * d)
