"""How samples map to fbank frames, patches and tokens, and how BEATs shrinks padding masks.

All counts are integers (samples at 16 kHz, fbank frames, tokens). With patch size
``P`` (16) and 128 mel bins, a time patch is ``P`` fbank frames and holds ``128 / P``
(8) tokens, one per frequency patch; token ``n`` is time patch ``n // 8`` and frequency
patch ``n % 8``.

Time patch ``p`` covers fbank frames ``[P p, P p + P)``; frame ``t`` covers samples
``[160 t, 160 t + 400)``. So time patch ``p`` covers samples ``[2560 p, 2560 p + 2800)``
and its centre is sample ``2560 p + 1400`` (``0.16 p + 0.0875`` s).
"""

from __future__ import annotations

import numpy as np
import torch

from retrieval.encoders.beats.fbank import FRAME_LENGTH_SAMPLES, FRAME_SHIFT_SAMPLES, NUM_MEL_BINS, num_frames


def freq_patches(patch_size: int) -> int:
    """Tokens per time patch: ``128 // patch_size``."""
    return NUM_MEL_BINS // patch_size


def min_samples(patch_size: int) -> int:
    """Fewest samples that give one time patch: ``400 + (P - 1) * 160`` (2800 for ``P = 16``)."""
    return FRAME_LENGTH_SAMPLES + (patch_size - 1) * FRAME_SHIFT_SAMPLES


def time_patches(n_samples: int, patch_size: int) -> int:
    """Time patches the model makes from ``n_samples`` (the last ``T mod P`` frames are dropped)."""
    return num_frames(n_samples) // patch_size


def num_tokens(n_samples: int, patch_size: int) -> int:
    """Tokens ``N = (128 / P) * floor(T / P)`` for a (padded) batch ``n_samples`` long."""
    return freq_patches(patch_size) * time_patches(n_samples, patch_size)


def patch_centres_s(n_patches: int, patch_size: int, sample_rate: int) -> np.ndarray:
    """``(n_patches,)`` float64 centre of each time patch in seconds from the clip start."""
    span = FRAME_LENGTH_SAMPLES + (patch_size - 1) * FRAME_SHIFT_SAMPLES
    starts = np.arange(n_patches, dtype=np.int64) * (patch_size * FRAME_SHIFT_SAMPLES)
    return (starts + span / 2.0) / sample_rate


def shrink_padding_mask(mask: torch.Tensor, n_out: int) -> torch.Tensor:
    """BEATs' rule for carrying a padding mask to a shorter axis.

    Drop the last ``S mod n_out`` positions, cut the rest into ``n_out`` equal groups and
    mark an output position as padding only when its whole group is padding. The rule
    is applied twice, samples -> fbank frames and frames -> tokens; on the second step it
    ignores the (time, frequency) token layout, which is what the official code does.

    Args:
        mask: ``(B, S)`` bool, True = padding.
        n_out: output length, ``1 <= n_out <= S``.

    Returns:
        ``(B, n_out)`` bool, True = padding.
    """
    length = mask.shape[1]
    extra = length % n_out
    if extra:
        mask = mask[:, : length - extra]
    return mask.reshape(mask.shape[0], n_out, -1).all(dim=-1)
