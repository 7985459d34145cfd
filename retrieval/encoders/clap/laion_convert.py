"""LAION-CLAP ``.pt`` checkpoints -> the transformers ``ClapModel`` layout, and back.

LAION's training code (``laion_clap``) saves ``{"state_dict": {...}, "epoch": ...}`` with
keys such as ``module.audio_branch.layers.0.blocks.0.attn.qkv.weight``. The mapping below
is written from the two module trees (LAION's HTSAT + RoBERTa vs ``modeling_clap.py``):

==================================================  ==================================================
LAION                                               transformers ``ClapModel``
==================================================  ==================================================
``module.`` prefix (DDP)                            dropped
``audio_branch.bn0.*``                              ``audio_model.audio_encoder.batch_norm.*``
``audio_branch.patch_embed.*``                      ``audio_model.audio_encoder.patch_embed.*``
``audio_branch.layers.i.blocks.j.norm1.*``          ``....layers.i.blocks.j.layernorm_before.*``
``audio_branch.layers.i.blocks.j.norm2.*``          ``....layers.i.blocks.j.layernorm_after.*``
``...blocks.j.attn.qkv.{weight,bias}``              ``...blocks.j.attention.self.{query,key,value}.*`` (split)
``...blocks.j.attn.proj.*``                         ``...blocks.j.attention.output.dense.*``
``...blocks.j.attn.relative_position_*``            ``...blocks.j.attention.self.relative_position_*``
``...blocks.j.mlp.fc1.*`` / ``mlp.fc2.*``           ``...blocks.j.intermediate.dense.*`` / ``output.dense.*``
``audio_branch.layers.i.downsample.*``, ``norm.*``  same names under ``audio_model.audio_encoder.``
``text_branch.*`` (a RoBERTa)                       ``text_model.*`` (same RoBERTa names)
``{audio,text}_projection.0.*`` / ``.2.*``          ``{audio,text}_projection.linear1.*`` / ``linear2.*``
``logit_scale_a``, ``logit_scale_t``                same
==================================================  ==================================================

Dropped on the way in (no counterpart; the first two are the in-model spectrogram, which
:mod:`retrieval.encoders.clap.features` replaces): ``audio_branch.spectrogram_extractor.*``,
``audio_branch.logmel_extractor.*``, ``audio_branch.tscam_conv.*``, ``audio_branch.head.*``,
``...attn_mask``, ``audio_transform.*``, ``text_transform.*``, ``text_branch.embeddings.position_ids``.

The architecture is read from tensor shapes (:func:`config_from_laion`); what shapes do not
tell (text attention heads, ``spec_size``, patch stride) comes from a base ``ClapConfig``.
The text tower's settings that ``laion_clap`` fixes itself are taken from it, not from the
base: its text branch is ``RobertaModel.from_pretrained('roberta-base')``, so a LayerNorm
epsilon of 1e-5 (:data:`LAION_TEXT`; transformers' ``ClapTextConfig`` default is 1e-12),
and its tokenizer cuts text at 77 tokens (``hook.py``, :data:`LAION_TEXT_MAX_TOKENS`).
``laion_clap`` itself is never imported.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from retrieval.errors import EncoderError

#: Text-tower settings of every LAION-CLAP checkpoint with a RoBERTa text branch: those of
#: ``roberta-base``'s config, which ``laion_clap.clap_module.model.CLAP`` loads.
LAION_TEXT: dict[str, Any] = {"layer_norm_eps": 1e-5}
#: ``laion_clap.hook.CLAP_Module.tokenizer``: ``max_length=77, truncation=True``.
LAION_TEXT_MAX_TOKENS = 77

_AUDIO, _HF_AUDIO = "audio_branch.", "audio_model.audio_encoder."
_TEXT, _HF_TEXT = "text_branch.", "text_model."
#: LAION keys with no transformers counterpart.
IGNORED = re.compile(
    r"^(audio_branch\.(spectrogram_extractor|logmel_extractor|tscam_conv|head)\.|audio_transform\.|text_transform\.)"
    r"|attn_mask$|^text_branch\.embeddings\.position_ids$"
)
#: Block-level renames inside ``audio_branch.layers.i.blocks.j.`` (LAION -> transformers).
_BLOCK = {
    "norm1.": "layernorm_before.",
    "norm2.": "layernorm_after.",
    "attn.proj.": "attention.output.dense.",
    "attn.relative_position_bias_table": "attention.self.relative_position_bias_table",
    "attn.relative_position_index": "attention.self.relative_position_index",
    "mlp.fc1.": "intermediate.dense.",
    "mlp.fc2.": "output.dense.",
}
_BLOCK_KEY = re.compile(r"^(layers\.\d+\.blocks\.\d+\.)(.*)$")
_PROJ_KEY = re.compile(r"^(audio|text)_projection\.([02])\.(weight|bias)$")


def unwrap_checkpoint(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The flat state dict of a LAION checkpoint: ``checkpoint["state_dict"]`` (or the dict
    itself), with a DDP ``module.`` prefix removed. Non-tensor entries are dropped."""
    sd = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(sd, dict):
        raise EncoderError(f"a LAION-CLAP checkpoint is a dict with a 'state_dict'; got {type(checkpoint).__name__}")
    return {(k[len("module."):] if k.startswith("module.") else k): v
            for k, v in sd.items() if isinstance(v, torch.Tensor)}


def is_laion_state_dict(sd: dict[str, Any]) -> bool:
    """True when ``sd`` has LAION's branch names."""
    return any(k.startswith(_AUDIO) for k in sd) and any(k.startswith(_TEXT) for k in sd)


def laion_to_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename (and split ``qkv``) a LAION state dict into ``ClapModel`` keys; drops :data:`IGNORED`."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if IGNORED.search(key):
            continue
        if key.startswith(_AUDIO):
            rest = key[len(_AUDIO):]
            if rest.startswith("bn0."):
                rest = "batch_norm." + rest[len("bn0."):]
            m = _BLOCK_KEY.match(rest)
            if m:
                prefix, tail = m.groups()
                if tail.startswith("attn.qkv."):
                    kind = tail[len("attn.qkv."):]
                    for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                        out[f"{_HF_AUDIO}{prefix}attention.self.{name}.{kind}"] = part.clone()
                    continue
                for old, new in _BLOCK.items():
                    if tail.startswith(old):
                        tail = new + tail[len(old):]
                        break
                rest = prefix + tail
            out[_HF_AUDIO + rest] = value
        elif key.startswith(_TEXT):
            out[_HF_TEXT + key[len(_TEXT):]] = value
        elif m := _PROJ_KEY.match(key):
            branch, idx, kind = m.groups()
            out[f"{branch}_projection.linear{1 if idx == '0' else 2}.{kind}"] = value
        else:
            out[key] = value
    return out


def hf_to_laion(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`laion_to_hf` (``query/key/value`` merged back into ``qkv``).

    Used to write LAION-layout test checkpoints; buffers transformers recomputes
    (``position_ids``, ``token_type_ids``) are left out, as LAION files lack them.
    """
    inverse_block = {new: old for old, new in _BLOCK.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.startswith(_HF_AUDIO):
            rest = key[len(_HF_AUDIO):]
            if rest.startswith("batch_norm."):
                rest = "bn0." + rest[len("batch_norm."):]
            m = _BLOCK_KEY.match(rest)
            if m:
                prefix, tail = m.groups()
                qkv = re.match(r"attention\.self\.(query|key|value)\.(weight|bias)$", tail)
                if qkv:
                    if qkv.group(1) == "query":
                        kind = qkv.group(2)
                        parts = [sd[f"{_HF_AUDIO}{prefix}attention.self.{n}.{kind}"] for n in ("query", "key", "value")]
                        out[f"{_AUDIO}{prefix}attn.qkv.{kind}"] = torch.cat(parts, dim=0)
                    continue
                for new, old in inverse_block.items():
                    if tail.startswith(new):
                        tail = old + tail[len(new):]
                        break
                rest = prefix + tail
            out[_AUDIO + rest] = value
        elif key.startswith(_HF_TEXT):
            rest = key[len(_HF_TEXT):]
            if rest in ("embeddings.position_ids", "embeddings.token_type_ids"):
                continue
            out[_TEXT + rest] = value
        elif m := re.match(r"^(audio|text)_projection\.linear([12])\.(weight|bias)$", key):
            branch, idx, kind = m.groups()
            out[f"{branch}_projection.{0 if idx == '1' else 2}.{kind}"] = value
        else:
            out[key] = value
    return out


def config_from_laion(sd: dict[str, torch.Tensor], base: Any | None = None) -> Any:
    """A ``ClapConfig`` whose shapes match LAION state dict ``sd``.

    Read from shapes: Swin width, depths, heads per stage, window size, MLP ratio, mel
    bins, fusion (and its AFF ratio), audio hidden size, projection size; RoBERTa
    vocabulary, width, layers, intermediate size, positions and token types. The text
    LayerNorm epsilon is LAION's (:data:`LAION_TEXT`). Everything else (text heads,
    ``spec_size``, patch stride, audio epsilons) comes from ``base`` (a ``ClapConfig``;
    transformers' defaults, i.e. ``laion/clap-htsat-unfused``, when None).

    Raises:
        EncoderError: a tensor this needs is missing, so ``sd`` is not a LAION-CLAP state dict.
    """
    from transformers import ClapConfig

    def shape(key: str) -> tuple[int, ...]:
        if key not in sd:
            raise EncoderError(f"not a LAION-CLAP state dict: no {key!r} (found e.g. {sorted(sd)[:3]})")
        return tuple(sd[key].shape)

    base = base if base is not None else ClapConfig()
    audio = base.audio_config.to_dict()
    text = base.text_config.to_dict()
    blocks: dict[int, set[int]] = {}
    for key in sd:
        if m := re.match(r"^audio_branch\.layers\.(\d+)\.blocks\.(\d+)\.", key):
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    stages = sorted(blocks)
    if not stages:
        raise EncoderError("not a LAION-CLAP state dict: no audio_branch.layers.*.blocks.* tensors")
    embed = shape("audio_branch.patch_embed.proj.weight")[0]
    table = [shape(f"audio_branch.layers.{i}.blocks.0.attn.relative_position_bias_table") for i in stages]
    fc1 = shape("audio_branch.layers.0.blocks.0.mlp.fc1.weight")
    proj_a = shape("audio_projection.0.weight")
    fusion = "audio_branch.patch_embed.mel_conv2d.weight" in sd
    audio.update(
        patch_embeds_hidden_size=embed,
        depths=[len(blocks[i]) for i in stages],
        num_attention_heads=[t[1] for t in table],
        window_size=int(round((math.sqrt(table[0][0]) + 1) / 2)),
        mlp_ratio=fc1[0] / fc1[1],
        num_mel_bins=shape("audio_branch.bn0.weight")[0],
        patch_size=shape("audio_branch.patch_embed.proj.weight")[2],
        hidden_size=proj_a[1],
        enable_fusion=fusion,
    )
    if fusion:
        audio.update(fusion_type=audio.get("fusion_type") or "aff_2d",
                     aff_block_r=embed // shape("audio_branch.patch_embed.fusion_model.local_att.0.weight")[0])
    n_text_layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"^text_branch\.encoder\.layer\.(\d+)\.", k)))
    vocab, width = shape("text_branch.embeddings.word_embeddings.weight")
    text.update(
        vocab_size=vocab, hidden_size=width, num_hidden_layers=n_text_layers,
        intermediate_size=shape("text_branch.encoder.layer.0.intermediate.dense.weight")[0],
        max_position_embeddings=shape("text_branch.embeddings.position_embeddings.weight")[0],
        type_vocab_size=shape("text_branch.embeddings.token_type_embeddings.weight")[0],
        **LAION_TEXT,
    )
    for cfg in (audio, text):
        for k in ("model_type", "transformers_version", "architectures", "projection_dim"):
            cfg.pop(k, None)
    return ClapConfig(text_config=text, audio_config=audio, projection_dim=proj_a[0],
                      projection_hidden_act=base.projection_hidden_act)


def load_laion_into(model: Any, sd: dict[str, torch.Tensor]) -> None:
    """Load a LAION state dict into a ``ClapModel`` built from :func:`config_from_laion`.

    Raises:
        EncoderError: with the missing or unexpected keys, when the layouts disagree.
    """
    converted = laion_to_hf(sd)
    own = model.state_dict()
    recomputed = re.compile(r"(relative_position_index|position_ids|token_type_ids|num_batches_tracked)$")
    missing = [k for k in own if k not in converted and not recomputed.search(k)]
    unexpected = [k for k in converted if k not in own]
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in converted.items()
             if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise EncoderError(
            "LAION-CLAP checkpoint does not fit the transformers ClapModel layout: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)}), shape mismatches {wrong[:3]}; "
            "is it an HTSAT + RoBERTa CLAP? Other audio branches (PANN) are not supported"
        )
    model.load_state_dict({k: v for k, v in converted.items()}, strict=False)
