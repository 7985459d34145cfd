"""The BEATs network: fbank -> 16x16 patches -> post-LN transformer with DeepNorm.

Module and parameter names mirror the official checkpoints, so their state dicts load
strictly. In eval mode every dropout, LayerDrop and gradient-scaling step of the
official code is an identity and is therefore absent here.

Forward pass (B batch, T fbank frames, N tokens, E patch channels, D hidden size):

1. normalised fbank ``(B, T, 128)`` -> Conv2d(1, E, 16, stride 16) -> ``(B, E, T // 16, 8)``
   -> tokens ``(B, N, E)`` in (time patch, frequency patch) row-major order -> LayerNorm(E);
2. Linear E -> D (only when E != D);
3. padded tokens set to 0; ``x + GELU(Conv1d(x))`` with a weight-normed, grouped, even-sized
   positional kernel whose last output is dropped; LayerNorm(D);
4. L layers of ``x = LN(alpha x + Attn(x)); x = LN(alpha x + FFN(x))``, alpha = (2L)^(1/4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from retrieval.encoders.beats.attention import GatedSelfAttention, RelativePositionBias
from retrieval.encoders.beats.config import BeatsConfig
from retrieval.encoders.beats.fbank import beats_fbank, num_frames
from retrieval.encoders.beats.layout import min_samples, shrink_padding_mask
from retrieval.encoders.precision import full_precision
from retrieval.errors import InputError

#: LayerNorm epsilon used throughout BEATs.
LN_EPS = 1e-5


@dataclass
class BeatsOutput:
    """What a forward pass returns.

    Attributes:
        hidden_states: ``[encoder_in, layer_1, ..., layer_k]``, each ``(B, N, D)`` float32;
            ``encoder_in`` is the state after the pre-layer LayerNorm, ``k`` the layers run.
        padding_mask: ``(B, N)`` bool token mask (True = padding), or None when no mask was given.
    """

    hidden_states: list[torch.Tensor]
    padding_mask: torch.Tensor | None

    @property
    def output(self) -> torch.Tensor:
        """``(B, N, D)`` the last hidden state computed (the model output when every layer ran)."""
        return self.hidden_states[-1]


class PositionalConv(nn.Module):
    """Weight-normed grouped Conv1d over tokens, trimmed to "same" length, then GELU.

    Parameters (official names): ``weight_g`` ``(1, 1, K)``, ``weight_v`` ``(D, D / G, K)``,
    ``bias`` ``(D,)``. The kernel is ``w[:, :, k] = g[k] v[:, :, k] / ||v[:, :, k]||`` (norm over
    the first two axes, i.e. weight norm with ``dim=2``).

    Under bf16/fp16 autocast the conv runs in the reduced dtype only if that gives the float32
    answer on this machine: oneDNN's AMX bf16 grouped conv (``brg_conv_fwd:avx10_1_512_amx``,
    torch 2.13) returns wrong values for narrow groups (2-12 channels per group with kernels of
    32-128: cosine to float32 0.0-0.5), while the released checkpoints' 48 channels per group are
    right. The first reduced-precision call compares the two on a seeded input
    (:meth:`reduced_is_sound`) and falls back to float32 (about 6x this conv's bf16 time) when
    they disagree.
    """

    #: Cosine to float32 below which the reduced-precision conv counts as broken (bf16 rounding
    #: alone gives >= 0.9999 on random inputs).
    SOUND_COSINE = 0.999

    def __init__(self, dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.kernel, self.groups = kernel, groups
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.zeros(dim, dim // groups, kernel))
        self.bias = nn.Parameter(torch.zeros(dim))
        self._sound: dict[tuple[str, torch.dtype], bool] = {}

    def weight(self) -> torch.Tensor:
        """``(D, D / G, K)`` float32 effective kernel."""
        return self.weight_g * self.weight_v / torch.linalg.vector_norm(self.weight_v, dim=(0, 1), keepdim=True)

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D, N) -> (B, D, N)`` the trimmed grouped conv, in the dtype autocast picks for it."""
        y = F.conv1d(x, self.weight(), self.bias, padding=self.kernel // 2, groups=self.groups)
        return y[:, :, :-1] if self.kernel % 2 == 0 else y

    def reduced_is_sound(self, device_type: str, dtype: torch.dtype) -> bool:
        """Whether :meth:`conv` under ``dtype`` autocast matches float32 (cosine >= SOUND_COSINE).

        Checked once per device type and dtype, on a seeded ``(1, D, 2K)`` normal input.
        """
        key = (device_type, dtype)
        if key not in self._sound:
            x = torch.randn(1, self.weight_v.shape[0], 2 * self.kernel, generator=torch.Generator().manual_seed(0))
            x = x.to(self.weight_v.device)
            with torch.autocast(device_type=device_type, dtype=dtype):
                reduced = self.conv(x).float().flatten()
            with full_precision(device_type):
                exact = self.conv(x).flatten()
            self._sound[key] = float(F.cosine_similarity(reduced, exact, dim=0)) >= self.SOUND_COSINE
        return self._sound[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, D) -> (B, N, D)`` positional branch (without the residual)."""
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type) and not self.reduced_is_sound(
                device_type, torch.get_autocast_dtype(device_type)):
            with full_precision(device_type):
                return F.gelu(self.conv(x.float().transpose(1, 2))).transpose(1, 2)
        return F.gelu(self.conv(x.transpose(1, 2))).transpose(1, 2)


class EncoderLayer(nn.Module):
    """One post-LN transformer layer with DeepNorm residual scaling."""

    def __init__(self, config: BeatsConfig, relative_bias: RelativePositionBias | None) -> None:
        super().__init__()
        dim = config.encoder_embed_dim
        self.alpha = config.deep_norm_alpha
        self.self_attn = GatedSelfAttention(config, relative_bias)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.fc1 = nn.Linear(dim, config.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(
        self, x: torch.Tensor, position_bias: torch.Tensor | None, key_padding_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """``(B, N, D) -> (B, N, D)``; see :meth:`GatedSelfAttention.forward` for the other arguments."""
        x = self.self_attn_layer_norm(self.alpha * x + self.self_attn(x, position_bias, key_padding_mask))
        return self.final_layer_norm(self.alpha * x + self.fc2(F.gelu(self.fc1(x))))


class TransformerEncoder(nn.Module):
    """Positional conv, pre-layer LayerNorm and the layer stack (official name: ``encoder``)."""

    def __init__(self, config: BeatsConfig) -> None:
        super().__init__()
        dim = config.encoder_embed_dim
        # A one-element list so that keys read "encoder.pos_conv.0.*" as in the checkpoints.
        self.pos_conv = nn.ModuleList([PositionalConv(dim, config.conv_pos, config.conv_pos_groups)])
        relative_bias = (
            RelativePositionBias(config.num_buckets, config.max_distance, config.encoder_attention_heads)
            if config.relative_position_embedding else None
        )
        self.layers = nn.ModuleList([EncoderLayer(config, relative_bias) for _ in range(config.encoder_layers)])
        self.layer_norm = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(
        self,
        x: torch.Tensor,
        padding_mask: torch.Tensor | None,
        num_layers: int | None = None,
        trace: dict[str, Any] | None = None,
    ) -> list[torch.Tensor]:
        """Run the encoder.

        Args:
            x: ``(B, N, D)`` float32 projected tokens.
            padding_mask: ``(B, N)`` bool, True = padding, or None.
            num_layers: stop after this many layers (all when None).
            trace: when a dict, ``pos_conv_out`` is stored in it.

        Returns:
            ``[encoder_in, layer_1, ..., layer_k]``, each ``(B, N, D)`` float32.
        """
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        positional = self.pos_conv[0](x)
        if trace is not None:
            trace["pos_conv_out"] = positional
        x = self.layer_norm(x + positional)
        states = [x]
        shared_table = getattr(self.layers[0].self_attn, "relative_attention_bias", None)
        position_bias = shared_table(x.shape[1]) if shared_table is not None else None
        layers = self.layers if num_layers is None else self.layers[:num_layers]
        for layer in layers:
            x = layer(x, position_bias, padding_mask)
            states.append(x)
        return states


class BeatsModel(nn.Module):
    """BEATs, built from a :class:`BeatsConfig`; load weights with ``load_state_dict(strict=True)``."""

    def __init__(self, config: BeatsConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        size = config.input_patch_size
        self.patch_embedding = nn.Conv2d(1, config.embed_dim, kernel_size=size, stride=size, bias=config.conv_bias)
        self.layer_norm = nn.LayerNorm(config.embed_dim, eps=LN_EPS)
        self.post_extract_proj = (
            nn.Linear(config.embed_dim, config.encoder_embed_dim)
            if config.embed_dim != config.encoder_embed_dim else None
        )
        self.encoder = TransformerEncoder(config)
        self.predictor = (
            nn.Linear(config.encoder_embed_dim, config.predictor_class) if config.finetuned_model else None
        )

    @property
    def min_samples(self) -> int:
        """Fewest samples that make one token row (2800 at 16 kHz for 16x16 patches)."""
        return min_samples(self.config.input_patch_size)

    def extract_features(
        self,
        waveform: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        *,
        num_layers: int | None = None,
        trace: dict[str, Any] | None = None,
    ) -> BeatsOutput:
        """The official ``extract_features`` (features only), with the official padded-batch semantics.

        Args:
            waveform: ``(B, S)`` float32 16 kHz audio in [-1, 1], ``S >= min_samples``.
            padding_mask: ``(B, S)`` bool, True = padding sample, or None. It zeroes padded tokens
                before the positional conv and hides them as attention keys; padded samples still
                enter the fbank, and every row keeps all N tokens.
            num_layers: run only the first ``num_layers`` layers.
            trace: when a dict, intermediates are stored in it: ``fbank``, ``frame_padding_mask``,
                ``patch_embed_out``, ``patch_ln_out``, ``post_proj_out``, ``pos_conv_out``.

        Returns:
            :class:`BeatsOutput` with ``N = (128 / P) * floor(T / P)`` tokens per row.

        Raises:
            InputError: wrong rank or mask shape, or fewer than :attr:`min_samples` samples.
        """
        if waveform.ndim != 2:
            raise InputError(f"waveform must be (batch, samples); got shape {tuple(waveform.shape)}")
        if waveform.shape[1] < self.min_samples:
            raise InputError(
                f"BEATs needs at least {self.min_samples} samples ({self.min_samples / 16000:g} s at 16 kHz) "
                f"for one {self.config.input_patch_size}-frame patch; got {waveform.shape[1]}: pad the clip with zeros"
            )
        if padding_mask is not None and padding_mask.shape != waveform.shape:
            raise InputError(
                f"padding_mask must match the waveform shape {tuple(waveform.shape)}; got {tuple(padding_mask.shape)}"
            )
        with full_precision(waveform.device.type):  # under fp16/bf16 autocast the front end stays float32
            fbank = beats_fbank(waveform.float())
        frame_mask = token_mask = None
        if padding_mask is not None:
            frame_mask = shrink_padding_mask(padding_mask.to(torch.bool), num_frames(waveform.shape[1]))
        patches = self.patch_embedding(fbank.unsqueeze(1))  # (B, E, T // P, F // P)
        tokens = self.layer_norm(patches.flatten(2).transpose(1, 2))  # (B, N, E)
        if frame_mask is not None:
            token_mask = shrink_padding_mask(frame_mask, tokens.shape[1])
        projected = self.post_extract_proj(tokens) if self.post_extract_proj is not None else tokens
        if trace is not None:
            trace.update(fbank=fbank, frame_padding_mask=frame_mask, patch_embed_out=patches,
                         patch_ln_out=tokens, post_proj_out=projected)
        states = self.encoder(projected, token_mask, num_layers=num_layers, trace=trace)
        return BeatsOutput(states, token_mask)

    def class_probabilities(self, output: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
        """AudioSet head of a fine-tuned checkpoint, as the official code applies it.

        Args:
            output: ``(B, N, D)`` final hidden states.
            padding_mask: ``(B, N)`` bool, True = padding, or None.

        Returns:
            ``(B, C)`` float32 probabilities: sigmoid of the predictor's logits averaged over
            valid tokens.

        Raises:
            InputError: the checkpoint has no predictor (not fine-tuned).
        """
        if self.predictor is None:
            raise InputError(
                "this BEATs checkpoint is not fine-tuned (cfg finetuned_model=False) and has no AudioSet head; "
                "pass a fine-tuned checkpoint such as BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt"
            )
        logits = self.predictor(output)  # (B, N, C)
        if padding_mask is None:
            return torch.sigmoid(logits.mean(dim=1))
        valid = (~padding_mask).unsqueeze(-1).to(logits.dtype)
        return torch.sigmoid((logits * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1.0))
