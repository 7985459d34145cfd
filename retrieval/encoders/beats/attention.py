"""Multi-head self-attention with BEATs' gated, bucketed relative-position bias.

Bucketing (T5-style, bidirectional): for ``r = key - query``, half the buckets serve
each sign (offset ``num_buckets / 2`` when ``r > 0``); distances below
``num_buckets / 4`` get their own bucket, larger ones share log-spaced buckets up to
``max_distance`` and saturate after it. The bias table is ``(num_buckets, H)`` and is
shared by every layer; the bias is computed once per forward pass and each layer gates
it per head and per query with its own ``grep_linear`` / ``grep_a``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from retrieval.encoders.beats.config import BeatsConfig


def relative_position_bucket(relative: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Bucket index of each relative position ``r = key_index - query_index``.

    Args:
        relative: int64 tensor of any shape.
        num_buckets: total buckets over both directions (320 for BEATs).
        max_distance: distance where the log-spaced buckets saturate (800 for BEATs).

    Returns:
        int64 tensor of the same shape, values in ``[0, num_buckets)``. The log term is
        computed in float32, as the official code does.
    """
    half = num_buckets // 2
    exact = half // 2
    offset = (relative > 0).to(torch.long) * half
    distance = relative.abs()
    scaled = torch.log(distance.to(torch.float32) / exact) / math.log(max_distance / exact) * (half - exact)
    far = torch.clamp(exact + scaled.to(torch.long), max=half - 1)
    return offset + torch.where(distance < exact, distance, far)


class RelativePositionBias(nn.Module):
    """The shared ``(num_buckets, H)`` table and the ``(H, N, N)`` bias it gives.

    The parameter is named ``weight`` so that checkpoint keys read ``...relative_attention_bias.weight``.
    """

    def __init__(self, num_buckets: int, max_distance: int, heads: int) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.weight = nn.Parameter(torch.zeros(num_buckets, heads))

    def forward(self, length: int) -> torch.Tensor:
        """``(H, length, length)`` float32 bias; entry ``[h, i, j]`` is the table at ``bucket(j - i)``."""
        positions = torch.arange(length, device=self.weight.device)
        buckets = relative_position_bucket(positions[None, :] - positions[:, None], self.num_buckets, self.max_distance)
        return F.embedding(buckets, self.weight).permute(2, 0, 1)


class GatedSelfAttention(nn.Module):
    """Multi-head self-attention with an optional gated relative-position bias.

    Parameter names follow the official checkpoints: ``q_proj``, ``k_proj``, ``v_proj``,
    ``out_proj``, and with ``gru_rel_pos`` also ``grep_linear`` (``d -> 8``) and ``grep_a``
    ``(1, H, 1, 1)``. Layer 0 owns ``relative_attention_bias``; later layers hold the same
    module (one table, as in the official code).
    """

    def __init__(self, config: BeatsConfig, relative_bias: RelativePositionBias | None) -> None:
        super().__init__()
        dim, heads = config.encoder_embed_dim, config.encoder_attention_heads
        self.heads = heads
        self.head_dim = dim // heads
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.gated = config.gru_rel_pos
        if self.gated:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))
        if relative_bias is not None:
            self.relative_attention_bias = relative_bias

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, D) -> (B, H, N, d)``."""
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def gate(self, q: torch.Tensor) -> torch.Tensor:
        """``(B, H, N, 1)`` float32 per-head, per-query gate for the relative-position bias.

        Args:
            q: ``(B, H, N, d)`` projected queries before the ``d ** -0.5`` scaling.

        ``a, b = sigmoid(sum of grep_linear(q) outputs 0-3, 4-7)``; gate ``= a (b grep_a[h] - 1) + 2``.
        """
        batch, heads, length, _ = q.shape
        scores = self.grep_linear(q).view(batch, heads, length, 2, 4).sum(dim=-1)
        gate_a, gate_b = torch.sigmoid(scores).chunk(2, dim=-1)
        return gate_a * (gate_b * self.grep_a - 1.0) + 2.0

    def forward(
        self, x: torch.Tensor, position_bias: torch.Tensor | None, key_padding_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Attend.

        Args:
            x: ``(B, N, D)`` float32 hidden states.
            position_bias: ``(H, N, N)`` ungated relative-position bias, or None.
            key_padding_mask: ``(B, N)`` bool, True = padded token (excluded as a key;
                its own output is still computed), or None.

        Returns:
            ``(B, N, D)`` float32.
        """
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
        bias: torch.Tensor | None = None
        if position_bias is not None:
            bias = position_bias.unsqueeze(0)
            if self.gated:
                bias = self.gate(q) * bias  # (B, H, N, N)
        if key_padding_mask is not None:
            blocked = torch.zeros(key_padding_mask.shape, dtype=x.dtype, device=x.device)
            blocked = blocked.masked_fill(key_padding_mask, float("-inf"))[:, None, None, :]
            bias = blocked if bias is None else bias + blocked
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # scale d ** -0.5
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))
