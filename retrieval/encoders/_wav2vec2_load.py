"""Loading a wav2vec2-family checkpoint and checking what the user asked of it.

Split from ``wav2vec2.py``: this module turns :class:`EncoderOptions` into a loaded,
validated model (checkpoint resolution, feature-extractor settings, device, precision,
layer); ``wav2vec2.py`` runs it.

Precision modes (fp32, fp16 / bf16 autocast, int8 dynamic quantisation of Linear layers)
are the ones every model encoder uses, from ``retrieval.encoders.precision``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from retrieval.encoders.base import EncoderOptions
from retrieval.encoders.precision import Precision, check_precision, prepare
from retrieval.encoders.weights import choose_model, env_var, is_local, resolve_checkpoint
from retrieval.errors import EncoderError, InputError

Layer = int | Literal["last", "mean"]


@dataclass(frozen=True)
class Checkpoint:
    """A loaded model and the feature-extractor settings that go with it.

    Attributes:
        model_id: what the user named (hub id or path), recorded in the recipe.
        path: local folder it was loaded from (a cache snapshot for hub ids).
        model: the transformers base model, in eval mode on ``device`` (Linear layers
            quantised for ``int8``).
        precision: ``fp32``, ``fp16`` or ``bf16`` (both run under :func:`autocast`) or ``int8``.
        sample_rate: Hz the model expects (``feature_extractor.sampling_rate``).
        do_normalize: zero-mean unit-variance per clip before the model.
        return_attention_mask: whether the checkpoint was trained with attention masks.
        layer: ``--layer`` resolved by :func:`parse_layer`.
        local: the checkpoint was given as a local folder (its recipe records a
            :func:`~retrieval.encoders.weights.weights_digest`), not a hub id (which its revision
            identifies).
    """

    model_id: str
    path: str
    model: Any
    device: torch.device
    precision: Precision
    sample_rate: int
    do_normalize: bool
    return_attention_mask: bool
    layer: Layer
    local: bool = False


def load_checkpoint(encoder: str, options: EncoderOptions, default: str | None) -> Checkpoint:
    """Resolve ``--model`` (or ``RETRIEVE_<ENCODER>_MODEL``, or ``default``) and load it.

    Raises:
        WeightsNotFoundError: the checkpoint is neither local nor downloadable.
        EncoderError: the folder is not a wav2vec2-family transformers checkpoint.
        UnknownNameError: unknown precision.
        InputError: unknown device or layer; int8 off the CPU; fp16 on it.
    """
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

    device = parse_device(options.device)
    precision = check_precision(options.precision, str(device))
    model_id = choose_model(encoder, options.model, default)
    if not model_id:
        raise EncoderError(f"no {encoder} checkpoint given: pass --model or set {env_var(encoder)}")
    path = resolve_checkpoint(encoder, model_id)
    fix = ("pass --model a folder written by save_pretrained (config.json, weights, "
           "preprocessor_config.json) or a hub id of a wav2vec2 / HuBERT / WavLM / data2vec-audio model")
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as exc:
        raise EncoderError(f"cannot read a transformers config from {model_id!r} ({exc}); {fix}") from exc
    missing = [a for a in ("conv_kernel", "conv_stride", "hidden_size", "num_hidden_layers") if not hasattr(config, a)]
    if missing:
        raise EncoderError(
            f"{model_id!r} is a {config.model_type!r} model without {', '.join(missing)}, so not a "
            f"wav2vec2-family speech encoder; {fix}"
        )
    layer = parse_layer(options.layer, int(config.num_hidden_layers), model_id)
    if getattr(config, "add_adapter", False):
        raise EncoderError(
            f"{model_id!r} ends in a length-changing adapter (add_adapter=True), which this encoder does not "
            f"support; use the checkpoint it was fine-tuned from"
        )
    try:
        extractor = AutoFeatureExtractor.from_pretrained(path)
    except (OSError, ValueError, KeyError) as exc:
        raise EncoderError(
            f"{model_id!r} has no usable feature-extractor config ({exc}); save the one the model was trained "
            f"with next to it: Wav2Vec2FeatureExtractor(do_normalize=..., return_attention_mask=...)"
            f".save_pretrained(folder)"
        ) from exc
    if not hasattr(extractor, "do_normalize") or "input_values" not in extractor.model_input_names:
        raise EncoderError(
            f"{model_id!r} comes with a {type(extractor).__name__}, not a raw-waveform "
            f"Wav2Vec2FeatureExtractor; {fix}"
        )
    try:
        model = AutoModel.from_pretrained(path, config=config)
    except (OSError, ValueError, RuntimeError) as exc:
        raise EncoderError(f"cannot load the weights of {model_id!r} ({exc}); {fix}") from exc
    if not hasattr(model, "_get_feat_extract_output_lengths") or not hasattr(model, "encoder"):
        raise EncoderError(f"{model_id!r} loads as {type(model).__name__}, not a wav2vec2-family model; {fix}")
    model = model.eval().to(device)
    if precision == "int8" and config.model_type == "wavlm":
        # WavLM's attention reads q_proj.bias and friends directly, which quantised Linear
        # layers do not have: quantise the feed-forward blocks only.
        for block in model.encoder.layers:
            prepare(block.feed_forward, precision)
    else:
        model = prepare(model, precision)
    return Checkpoint(
        model_id=model_id,
        path=path,
        model=model,
        device=device,
        precision=precision,
        sample_rate=int(extractor.sampling_rate),
        do_normalize=bool(extractor.do_normalize),
        return_attention_mask=bool(extractor.return_attention_mask),
        layer=layer,
        local=is_local(model_id),
    )


def parse_device(device: str) -> torch.device:
    """``--device`` as a torch device; an unknown string raises :class:`InputError`."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"unknown device {device!r} ({exc}); pass --device cpu or --device cuda") from exc


def parse_layer(layer: str | int | None, n_layers: int, model_id: str) -> Layer:
    """Resolve ``--layer`` against a model with ``n_layers`` transformer layers.

    Indices count as transformers' ``hidden_states`` do: 0 is the input to the first layer
    (conv features after projection and positional convolution), ``N`` the output of layer N.
    ``None`` and ``"last"`` mean ``last_hidden_state`` (after the final layer norm in
    stable-layer-norm models, which ``hidden_states[n_layers]`` may lack); ``"mean"`` averages
    every hidden state.

    Raises:
        InputError: not an integer in ``[0, n_layers]``, ``"last"`` or ``"mean"``.
    """
    if layer is None:
        return "last"
    text = str(layer).strip().lower()
    if text in ("last", "mean"):
        return text  # type: ignore[return-value]
    valid = f"choose 0..{n_layers}, 'last' or 'mean'"
    try:
        index = int(text)
    except ValueError:
        raise InputError(f"--layer {layer!r} is not a layer of {model_id} ({n_layers} layers); {valid}") from None
    if not 0 <= index <= n_layers:
        raise InputError(f"--layer {index} is out of range for {model_id} ({n_layers} layers); {valid}")
    return index


def conv_geometry(kernels: tuple[int, ...], strides: tuple[int, ...]) -> tuple[int, int]:
    """``(hop_samples, frame_samples)`` of a stack of unpadded 1-d convolutions.

    ``(10, 3, 3, 3, 3, 2, 2)`` / ``(5, 2, 2, 2, 2, 2, 2)`` (wav2vec2) gives ``(320, 400)``.
    """
    hop, field = 1, 1
    for k, s in zip(kernels, strides):
        field += (int(k) - 1) * hop
        hop *= int(s)
    return hop, field


def snapshot_revision(path: str) -> str | None:
    """The commit hash of a Hugging Face cache snapshot folder, None for any other path."""
    p = Path(path)
    if p.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", p.name):
        return p.name
    return None
