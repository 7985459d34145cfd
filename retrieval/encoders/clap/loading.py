"""Load a CLAP checkpoint: a transformers folder / hub id, or a LAION-CLAP ``.pt`` file.

Both end as the same three objects: a ``transformers.ClapModel`` in eval mode, its
tokenizer, and a :class:`~retrieval.encoders.clap.features.ClapFeatures` front end built
from the checkpoint's own ``preprocessor_config.json``.

* **transformers checkpoint** (folder with ``config.json``, or a hub id): resolved by
  :func:`retrieval.encoders.weights.resolve_checkpoint` (no network when the hub is not
  reachable), loaded with ``local_files_only=True``.
* **LAION ``.pt``** (e.g. the music CLAP): the architecture is read from tensor shapes and
  the weights renamed (:mod:`~retrieval.encoders.clap.laion_convert`). A ``.pt`` holds no
  tokenizer and no front-end settings, so they come from ``processor`` (a transformers
  CLAP folder or hub id, default ``laion/clap-htsat-unfused``); its ``config.json``
  supplies what shapes cannot tell (text attention heads). The front end's truncation
  follows the weights: ``fusion`` when the checkpoint has fusion layers, else ``rand_trunc``.
  Text is cut at 77 tokens, as ``laion_clap`` does, whatever the processor's tokenizer allows.
  The file is read with ``torch.load(weights_only=True)``; a file that needs arbitrary
  unpickling is refused unless ``trust_pickle=True`` (CLI: ``--opt trust_pickle=true``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.encoders.clap.features import ClapFeatures
from retrieval.encoders.weights import is_local, resolve_checkpoint
from retrieval.errors import EncoderError

#: Where LAION checkpoints take their tokenizer and front end from unless told otherwise.
DEFAULT_PROCESSOR = "laion/clap-htsat-unfused"
LAION_SUFFIXES = (".pt", ".pth", ".ckpt")


@dataclass
class LoadedClap:
    """A loaded checkpoint.

    Attributes:
        model: ``transformers.ClapModel`` in eval mode, on ``device``.
        tokenizer: the text tokenizer (a RoBERTa BPE for every released CLAP).
        features: the torch front end.
        info: how it was loaded, JSON-serialisable (``format``, ``revision``, ``processor``, and
            ``weights_path``: the file or folder of a checkpoint given as a local path, whose
            :func:`~retrieval.encoders.weights.weights_digest` the recipe records; None for a hub id).
        text_max_tokens: the checkpoint's own text length limit in tokens (77 for LAION
            ``.pt`` files), or None for the tokenizer's ``model_max_length``.
    """

    model: Any
    tokenizer: Any
    features: ClapFeatures
    info: dict[str, Any]
    text_max_tokens: int | None = None


def load_clap(model: str, *, device: str = "cpu", processor: str | None = None,
              trust_pickle: bool = False) -> LoadedClap:
    """Load ``model`` (hub id, folder, or LAION ``.pt``) for inference on ``device``.

    Args:
        model: a hub id or local path, chosen by :func:`retrieval.encoders.weights.choose_model`.
        device: torch device string.
        processor: tokenizer and front-end source for a LAION ``.pt``; ignored for folders
            unless they lack a tokenizer.
        trust_pickle: allow full unpickling of a ``.pt`` file (only for files you trust).

    Raises:
        WeightsNotFoundError: the checkpoint (or the processor source) is not available offline.
        EncoderError: the file is not a CLAP checkpoint.
    """
    path = Path(resolve_checkpoint("clap", model))
    loaded = _load(path, device=device, processor=processor, trust_pickle=trust_pickle)
    loaded.info["weights_path"] = str(path) if is_local(model) else None
    return loaded


def _load(path: Path, *, device: str, processor: str | None, trust_pickle: bool) -> LoadedClap:
    """:func:`load_clap` once ``path`` is local: a LAION ``.pt`` or a transformers folder."""
    if path.is_file() and path.suffix in LAION_SUFFIXES:
        return _load_laion(path, device=device, processor=processor or DEFAULT_PROCESSOR, trust_pickle=trust_pickle)
    if path.is_file():
        raise EncoderError(
            f"{path} is a file but not a LAION-CLAP checkpoint ({', '.join(LAION_SUFFIXES)}); "
            "pass the folder that holds config.json for a transformers checkpoint"
        )
    if not (path / "config.json").exists():
        raise EncoderError(f"{path} has no config.json; a transformers CLAP checkpoint folder needs one")
    from transformers import ClapModel

    try:
        clap = ClapModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise EncoderError(f"could not load a ClapModel from {path} ({exc})") from exc
    text_source = path if (path / "tokenizer_config.json").exists() or processor is None else Path(
        resolve_checkpoint("clap", processor))
    tokenizer, extractor = _processor_parts(text_source)
    features = ClapFeatures.from_extractor(extractor, device=device)
    _check_front_end(features, clap.config, path)
    info = {"format": "transformers", "revision": _revision(path),
            "processor": None if text_source == path else processor}
    return LoadedClap(clap.eval().to(device), tokenizer, features, info)


def _load_laion(path: Path, *, device: str, processor: str, trust_pickle: bool) -> LoadedClap:
    import pickle

    import torch
    from transformers import ClapConfig, ClapModel

    from retrieval.encoders.clap import laion_convert

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        raise EncoderError(
            f"{path} holds more than tensors and plain containers, so it was not unpickled ({exc}); "
            "if you trust the file, pass --opt trust_pickle=true to `retrieve index` "
            "(Python: EncoderOptions(extra={'trust_pickle': True}))"
        ) from exc
    except (OSError, RuntimeError) as exc:
        raise EncoderError(f"could not read {path} as a torch checkpoint ({exc})") from exc
    sd = laion_convert.unwrap_checkpoint(checkpoint)
    if not laion_convert.is_laion_state_dict(sd):
        raise EncoderError(
            f"{path} is not a LAION-CLAP checkpoint: no 'audio_branch.*' and 'text_branch.*' tensors "
            f"(found e.g. {sorted(sd)[:3]})"
        )
    source = Path(resolve_checkpoint("clap", processor))
    base = ClapConfig.from_pretrained(source) if (source / "config.json").exists() else None
    config = laion_convert.config_from_laion(sd, base)
    clap = ClapModel(config)
    laion_convert.load_laion_into(clap, sd)
    tokenizer, extractor = _processor_parts(source)
    truncation = "fusion" if config.audio_config.enable_fusion else "rand_trunc"
    features = ClapFeatures.from_extractor(extractor, truncation=truncation, device=device)
    _check_front_end(features, config, path)
    info = {"format": "laion", "revision": f"{path.name}:{os.path.getsize(path)}", "processor": processor}
    return LoadedClap(clap.eval().to(device), tokenizer, features, info,
                      text_max_tokens=laion_convert.LAION_TEXT_MAX_TOKENS)


def _processor_parts(source: Path) -> tuple[Any, Any]:
    """Tokenizer and ``ClapFeatureExtractor`` saved in ``source``."""
    from transformers import AutoTokenizer, ClapFeatureExtractor

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        extractor = ClapFeatureExtractor.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise EncoderError(
            f"no CLAP tokenizer / preprocessor_config.json in {source} ({exc}); "
            "pass extra={'processor': <a transformers CLAP folder or hub id>}"
        ) from exc
    return tokenizer, extractor


def _check_front_end(features: ClapFeatures, config: Any, where: Path) -> None:
    """The front end must produce what the audio tower expects."""
    mel_bins = config.audio_config.num_mel_bins
    if features.config.n_mels != mel_bins:
        raise EncoderError(
            f"{where}: the feature extractor makes {features.config.n_mels} mel bands but the model "
            f"expects {mel_bins}; use the preprocessor_config.json that came with the checkpoint"
        )


def _revision(path: Path) -> str | None:
    """The hub commit of a snapshot in the Hugging Face cache (``.../snapshots/<sha>``), else None."""
    return path.name if path.parent.name == "snapshots" else None
