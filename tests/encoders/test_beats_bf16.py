"""BEATs' positional conv under bf16 autocast gives the float32 answer on every CPU.

On Intel CPUs with AMX, oneDNN's bf16 grouped conv (torch 2.13) is wrong for narrow groups
(2 channels per group, as in the tiny test models: cosine to float32 about 0.2), and right for
the 48 channels per group of the released checkpoints. ``PositionalConv`` falls back to float32
only where the reduced conv is wrong. On CPUs without that kernel both cases pass trivially.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from retrieval.encoders.beats.model import PositionalConv
from retrieval.encoders.precision import autocast


def positional_conv(dim: int, groups: int, seed: int = 0) -> PositionalConv:
    """A random ``PositionalConv`` with BEATs' kernel of 128."""
    torch.manual_seed(seed)
    conv = PositionalConv(dim, 128, groups).eval()
    with torch.no_grad():
        conv.weight_v.normal_()
        conv.bias.normal_(0.0, 0.1)
    return conv


@pytest.mark.parametrize(("dim", "groups"), [(32, 16), (64, 16), (768, 16)])
def test_positional_conv_under_bf16_matches_float32(dim: int, groups: int) -> None:
    conv = positional_conv(dim, groups)
    x = torch.randn(2, 40, dim, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        exact = conv(x)
        with autocast("bf16", "cpu"):
            fast = conv(x).float()
    cos = F.cosine_similarity(fast.flatten(1), exact.flatten(1), dim=1)
    assert cos.min() >= 0.999, f"{dim // groups} channels per group: cosine to float32 {cos.tolist()}"


def test_positional_conv_checks_its_reduced_kernel_once_per_dtype() -> None:
    conv = positional_conv(32, 16)
    with torch.inference_mode(), autocast("bf16", "cpu"):
        conv(torch.randn(1, 20, 32))
        conv(torch.randn(1, 30, 32))
    assert list(conv._sound) == [("cpu", torch.bfloat16)]
    assert "_sound" not in "".join(conv.state_dict())
