"""What fine-tuning needs from each model family: its transformer blocks, a differentiable
window vector, and a writer for an adapted checkpoint in the family's own loadable format.

The training loop (:mod:`retrieval.finetune`) is family-blind; it asks :func:`tunable` for a
:class:`Tunable` around a loaded fp32 encoder and works through these three calls:

* :meth:`Tunable.blocks`: the transformer blocks that shape the index's vectors, input side
  first (for a ``--layer k`` index, the first ``k`` of them). "Last N" are the last N here.
* :meth:`Tunable.window_vectors`: ``(k, S)`` float32 windows of one length -> ``(k, D)``
  float32 vectors with autograd, the same hidden state the encoder reads, mean-pooled over
  its frames (CLAP: its one unit-length projection).
* :meth:`Tunable.save`: write the base checkpoint with the trained tensors put in, as
  ``save_pretrained`` (wav2vec2 family, CLAP) or the official ``.pt`` layout (BEATs), and
  return what ``--model`` takes. Every tensor not trained is copied from the base
  checkpoint as it was read, so untouched weights stay bit-identical.

The log-mel baseline has no weights, so it has no :class:`Tunable` (:func:`tunable` says so).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from retrieval.errors import InputError

#: Families with a :class:`Tunable`, in registry order.
TUNABLE_FAMILIES = ("wav2vec2", "beats", "clap")


class Tunable(Protocol):
    """A loaded encoder seen as a trainable network (see the module docstring)."""

    #: the torch module whose parameters :meth:`blocks` come from (eval mode, fp32)
    model: torch.nn.Module
    #: size ``D`` of a window vector
    dim: int

    def blocks(self) -> Sequence[torch.nn.Module]:
        """Transformer blocks that feed the index's vectors, input side first."""
        ...

    def min_samples(self) -> int:
        """Fewest samples a window needs to give a vector (shorter ones are zero-padded to it)."""
        ...

    def window_vectors(self, audio: torch.Tensor) -> torch.Tensor:
        """``(k, S)`` float32 windows of equal length at the encoder's rate -> ``(k, D)`` float32."""
        ...

    def save(self, trained: Mapping[str, torch.Tensor], out: Path) -> Path:
        """Write the base checkpoint with ``trained`` (parameter name -> tensor) put in; returns
        the path to pass as ``--model``."""
        ...


def tunable(encoder: Any) -> Tunable:
    """The :class:`Tunable` of a loaded fp32 encoder.

    Raises:
        InputError: the family has no weights to fine-tune (logmel) or no tuning support yet.
    """
    name = getattr(encoder, "name", type(encoder).__name__)
    if name == "wav2vec2":
        return Wav2Vec2Tuning(encoder)
    if name == "beats":
        return BeatsTuning(encoder)
    if name == "clap":
        return ClapTuning(encoder)
    raise InputError(no_weights_message(name))


def no_weights_message(name: str) -> str:
    """The one-line refusal for a family that cannot be fine-tuned."""
    return (f"--finetune needs a model encoder, but this index uses {name!r}, which has no trained weights to "
            f"unfreeze; build an index with --encoder {' / '.join(TUNABLE_FAMILIES)} and fine-tune that")


def _mean_frames(h: torch.Tensor) -> torch.Tensor:
    """``(k, T, D)`` -> ``(k, D)``: mean over the frames (all valid: rows run unpadded)."""
    return h.float().mean(dim=1)


class _Tuning:
    """What every family's :class:`Tunable` holds: the loaded encoder, its torch model and ``D``."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self.model = encoder.model
        self.dim = int(encoder.dim)


class Wav2Vec2Tuning(_Tuning):
    """wav2vec2 / HuBERT / WavLM / data2vec-audio (:class:`~retrieval.encoders.wav2vec2.Wav2Vec2Encoder`)."""

    def blocks(self) -> Sequence[torch.nn.Module]:
        layers = list(self.model.encoder.layers)
        layer = self.encoder.layer
        # hidden_states[k] is the output of block k: a --layer k index is shaped by the first k blocks
        return layers[:layer] if isinstance(layer, int) else layers

    def min_samples(self) -> int:
        return int(self.encoder.frame_samples)

    def window_vectors(self, audio: torch.Tensor) -> torch.Tensor:
        from retrieval.encoders.wav2vec2 import NORM_EPS

        x = audio.float()
        if self.encoder.do_normalize:  # as transformers' feature extractor does, per clip
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) / torch.sqrt(x.var(dim=1, unbiased=False, keepdim=True) + NORM_EPS)
        layer = self.encoder.layer
        out = self.model(x, output_hidden_states=layer != "last")
        if layer == "last":
            return _mean_frames(out.last_hidden_state)
        if layer == "mean":
            return _mean_frames(torch.stack(out.hidden_states).mean(dim=0))
        return _mean_frames(out.hidden_states[layer])

    def save(self, trained: Mapping[str, torch.Tensor], out: Path) -> Path:
        from transformers import AutoFeatureExtractor, AutoModel

        from retrieval.encoders.weights import resolve_checkpoint

        base = resolve_checkpoint(self.encoder.name, self.encoder.checkpoint)
        fresh = AutoModel.from_pretrained(base)
        _put(fresh, trained, base)
        fresh.save_pretrained(out)
        AutoFeatureExtractor.from_pretrained(base).save_pretrained(out)
        return out


class BeatsTuning(_Tuning):
    """BEATs (:class:`~retrieval.encoders.beats.BeatsEncoder`); writes the official ``.pt`` layout."""

    def blocks(self) -> Sequence[torch.nn.Module]:
        layers = list(self.model.encoder.layers)
        needed = self.encoder._layers_needed()
        return layers if needed is None else layers[:needed]

    def min_samples(self) -> int:
        return int(self.encoder._min_samples)

    def window_vectors(self, audio: torch.Tensor) -> torch.Tensor:
        from retrieval.encoders.beats.layout import freq_patches

        out = self.model.extract_features(audio.float(), num_layers=self.encoder._layers_needed())
        tokens = self.encoder._select(out.hidden_states)
        k = audio.shape[0]
        frames = tokens.reshape(k, -1, freq_patches(self.encoder._patch), self.encoder.dim).mean(dim=2)
        return _mean_frames(frames)

    def save(self, trained: Mapping[str, torch.Tensor], out: Path) -> Path:
        path = self.encoder.checkpoint.path
        blob = torch.load(path, map_location="cpu", weights_only=True)
        state = blob["model"]
        unknown = sorted(set(trained) - set(state))
        if unknown:
            raise InputError(f"trained tensors {unknown[:3]} are not in the base checkpoint {path}")
        aliases = _aliases(self.model)
        for name, value in trained.items():
            for key in aliases.get(name, [name]):  # a shared module (the position table) is saved under every layer
                state[key] = value.detach().to("cpu", state[key].dtype).clone()
        target = out / f"{path.stem}.finetuned.pt"
        torch.save(blob, target)
        return target


class ClapTuning(_Tuning):
    """CLAP's audio tower (:class:`~retrieval.encoders.clap.ClapEncoder`): the HTS-AT Swin blocks of
    every stage, flattened in order. Writes a transformers folder with the tokenizer and front end."""

    def blocks(self) -> Sequence[torch.nn.Module]:
        stages = self.model.audio_model.audio_encoder.layers
        return [block for stage in stages for block in stage.blocks]

    def min_samples(self) -> int:
        return 1

    def window_vectors(self, audio: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        lengths = torch.full((audio.shape[0],), audio.shape[1], dtype=torch.int64)
        with torch.no_grad():
            feats, is_longer = self.encoder.features(audio.float(), lengths)
        pooled = self.model.audio_model(input_features=feats, is_longer=is_longer).pooler_output
        return F.normalize(self.model.audio_projection(pooled).float(), dim=-1)

    def save(self, trained: Mapping[str, torch.Tensor], out: Path) -> Path:
        from transformers import ClapModel

        info = self.encoder._info
        if info.get("format") != "transformers":
            raise InputError(f"fine-tuning a CLAP checkpoint in {info.get('format')!r} format is not supported; "
                             "convert it to a transformers folder first (ClapModel.save_pretrained)")
        from retrieval.encoders.weights import resolve_checkpoint

        base = resolve_checkpoint(self.encoder.name, self.encoder.checkpoint)
        fresh = ClapModel.from_pretrained(base, local_files_only=True)
        _put(fresh, trained, base)
        fresh.save_pretrained(out)
        for item in Path(base).iterdir():  # tokenizer and feature-extractor files travel with the weights
            if item.is_file() and item.suffix in (".json", ".txt", ".model") and not (out / item.name).exists():
                shutil.copy2(item, out / item.name)
        return out


def _aliases(model: torch.nn.Module) -> dict[str, list[str]]:
    """Parameter name (as ``named_parameters`` gives it) -> every state-dict key of that same tensor."""
    by_id: dict[int, list[str]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for p_name, p in module.named_parameters(recurse=False):
            by_id.setdefault(id(p), []).append(f"{mod_name}.{p_name}" if mod_name else p_name)
    return {name: by_id[id(p)] for name, p in model.named_parameters()}


def _put(model: torch.nn.Module, trained: Mapping[str, torch.Tensor], base: str) -> None:
    """Copy ``trained`` into ``model``'s parameters by name; every name must exist there."""
    params = dict(model.named_parameters())
    unknown = sorted(set(trained) - set(params))
    if unknown:
        raise InputError(f"trained tensors {unknown[:3]} are not parameters of the base checkpoint {base}")
    with torch.no_grad():
        for name, value in trained.items():
            params[name].copy_(value.detach().to(params[name].device, params[name].dtype))
