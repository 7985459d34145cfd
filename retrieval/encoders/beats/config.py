"""The BEATs architecture settings, read from a checkpoint's ``cfg`` dict.

Official checkpoints store ``BEATsConfig.__dict__`` under ``'cfg'``. The class defaults
below are the official class defaults, and several differ from the released models
(``max_distance`` 1280 vs 800, ``deep_norm``/``gru_rel_pos``/``relative_position_embedding``
False vs True, ``input_patch_size`` -1 vs 16). They exist only so that a partial dict
can be completed the way the official code completes it; always build the config from
the checkpoint with :meth:`BeatsConfig.from_dict`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from retrieval.errors import EncoderError

#: Fields that change the network's numbers (recorded in an index recipe).
ARCHITECTURE_FIELDS: tuple[str, ...] = (
    "input_patch_size", "embed_dim", "conv_bias", "encoder_layers", "encoder_embed_dim",
    "encoder_ffn_embed_dim", "encoder_attention_heads", "activation_fn", "layer_norm_first",
    "deep_norm", "conv_pos", "conv_pos_groups", "relative_position_embedding", "num_buckets",
    "max_distance", "gru_rel_pos", "finetuned_model", "predictor_class",
)


@dataclass(frozen=True)
class BeatsConfig:
    """BEATs hyper-parameters (names and defaults as in the official ``BEATsConfig``).

    Attributes:
        input_patch_size: side of the square fbank patch (frames x mel bins), 16 when released.
        embed_dim: patch-embedding channels ``E``.
        conv_bias: whether the patch Conv2d has a bias.
        encoder_layers: transformer layers ``L``.
        encoder_embed_dim: hidden size ``D`` (the encoder's output ``dim``).
        encoder_ffn_embed_dim: feed-forward width ``F``.
        encoder_attention_heads: heads ``H``; ``D`` must be divisible by ``H``.
        activation_fn: only ``"gelu"`` (exact erf form) is supported.
        layer_norm_first: pre-LN layers; only ``False`` (the released post-LN form) is supported.
        deep_norm: scale residuals by ``(2L)^(1/4)``.
        conv_pos, conv_pos_groups: positional Conv1d kernel size and groups.
        relative_position_embedding: add a bucketed relative-position bias to attention.
        num_buckets, max_distance: relative-position bucketing.
        gru_rel_pos: gate the relative-position bias per query (``grep_linear``/``grep_a``).
        finetuned_model: the checkpoint has an AudioSet ``predictor`` head.
        predictor_class: classes of that head (527 for AudioSet).
        dropout, attention_dropout, activation_dropout, encoder_layerdrop, dropout_input,
        predictor_dropout, layer_wise_gradient_decay_ratio: training-only; identities at inference.
        extra: keys of the checkpoint's cfg that this class does not know, kept for the record.
    """

    input_patch_size: int = -1
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_wise_gradient_decay_ratio: float = 1.0
    layer_norm_first: bool = False
    deep_norm: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False
    finetuned_model: bool = False
    predictor_dropout: float = 0.1
    predictor_class: int = 527
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> "BeatsConfig":
        """Build from a checkpoint's ``cfg`` dict and check that this implementation supports it.

        Raises:
            EncoderError: unsupported variant or inconsistent sizes, naming the field and value.
        """
        if not isinstance(cfg, dict):
            raise EncoderError(f"checkpoint 'cfg' must be a dict; got {type(cfg).__name__}")
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in cfg.items() if k in known}
        extra = {k: v for k, v in cfg.items() if k not in known}
        config = cls(**values, extra=extra)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise :class:`EncoderError` for settings this implementation cannot run."""
        if self.input_patch_size < 1 or 128 % self.input_patch_size:
            raise EncoderError(
                f"input_patch_size must divide the 128 mel bins; got {self.input_patch_size} "
                f"(released BEATs checkpoints use 16; is 'cfg' from a BEATs checkpoint?)"
            )
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise EncoderError(
                f"encoder_embed_dim {self.encoder_embed_dim} is not divisible by "
                f"encoder_attention_heads {self.encoder_attention_heads}"
            )
        if self.encoder_embed_dim % self.conv_pos_groups:
            raise EncoderError(
                f"encoder_embed_dim {self.encoder_embed_dim} is not divisible by conv_pos_groups {self.conv_pos_groups}"
            )
        if self.activation_fn != "gelu":
            raise EncoderError(f"activation_fn {self.activation_fn!r} is not supported; released BEATs uses 'gelu'")
        if self.layer_norm_first:
            raise EncoderError(
                "layer_norm_first=True (pre-LN) is not supported; released BEATs checkpoints are post-LN "
                "(layer_norm_first=False)"
            )
        if self.num_buckets < 4 or self.max_distance <= self.num_buckets // 4:
            raise EncoderError(
                f"need num_buckets >= 4 and max_distance > num_buckets / 4; got {self.num_buckets} and {self.max_distance}"
            )

    @property
    def head_dim(self) -> int:
        """Features per attention head, ``D / H``."""
        return self.encoder_embed_dim // self.encoder_attention_heads

    @property
    def deep_norm_alpha(self) -> float:
        """Residual scale: ``(2L)^(1/4)`` with DeepNorm, else 1."""
        return (2.0 * self.encoder_layers) ** 0.25 if self.deep_norm else 1.0

    def architecture(self) -> dict[str, Any]:
        """The fields that change the numbers, for an index recipe."""
        return {k: getattr(self, k) for k in ARCHITECTURE_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        """The official ``cfg`` dict (unknown keys merged back), as stored in a checkpoint."""
        d = asdict(self)
        extra = d.pop("extra")
        return {**d, **extra}
