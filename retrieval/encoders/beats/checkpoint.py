"""Find, read and check official BEATs checkpoints.

An official checkpoint is a ``torch.save`` of ``{'cfg': BEATsConfig.__dict__, 'model':
state_dict}``; fine-tuned ones add ``'label_dict'`` (class index -> AudioSet label id).
It is read with ``torch.load(weights_only=True)``, so no pickled code can run; a file
that needs more than tensors and plain containers is refused with an explanation.
The network is built from the checkpoint's own ``cfg`` (the official class defaults
differ from the released models) and its weights are loaded strictly.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from retrieval.encoders.beats.config import BeatsConfig
from retrieval.encoders.beats.model import BeatsModel
from retrieval.encoders.weights import choose_model, env_var
from retrieval.errors import EncoderError, WeightsNotFoundError

#: Where Microsoft publishes the checkpoints (download links in its README).
OFFICIAL_CHECKPOINTS = "https://github.com/microsoft/unilm/tree/master/beats (README, 'Pre-Trained and Fine-Tuned Tokenizers and Models')"


@dataclass(frozen=True)
class BeatsCheckpoint:
    """A checkpoint read from disk.

    Attributes:
        path: the file.
        sha256: hex digest of the whole file.
        config: architecture from the checkpoint's ``cfg``.
        state_dict: parameter name -> float tensor, in official naming.
        label_dict: class index -> label (AudioSet id) for fine-tuned checkpoints, else None.
    """

    path: Path
    sha256: str
    config: BeatsConfig
    state_dict: dict[str, torch.Tensor]
    label_dict: dict[int, str] | None


def resolve_path(model: str | None, default: str) -> Path:
    """The checkpoint file (absolute) for ``--model``, else ``RETRIEVE_BEATS_MODEL``, else ``default``.

    Microsoft publishes BEATs weights as plain ``.pt`` downloads, not on the Hugging Face
    hub, so unlike :func:`retrieval.encoders.weights.resolve_checkpoint` only local files
    are accepted and nothing touches the network: a missing file fails at once.

    Raises:
        WeightsNotFoundError: no such file, with the ways to provide one.
    """
    chosen = choose_model("beats", model, default) or default
    path = Path(chosen).expanduser()
    if path.is_file():
        return path.resolve()
    what = "is a folder, not a checkpoint file" if path.is_dir() else "does not exist"
    raise WeightsNotFoundError(
        f"BEATs checkpoint {str(path)!r} {what}; pass --model /path/to/{Path(default).name} "
        f"or set {env_var('beats')}=/path/to/{Path(default).name}. The official checkpoints "
        f"(pre-trained BEATs_iter3_plus_AS2M.pt and AudioSet fine-tuned ones) are linked from {OFFICIAL_CHECKPOINTS}"
    )


def file_sha256(path: Path, chunk_bytes: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def read_checkpoint(path: Path) -> BeatsCheckpoint:
    """Read and check an official-format checkpoint without running pickled code.

    Raises:
        EncoderError: unreadable file, refused pickle content, or not the official layout.
    """
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise EncoderError(
            f"refusing to load {path}: it holds objects other than tensors and plain containers, which "
            f"torch.load(weights_only=True) will not unpickle because that could run code ({_first_line(exc)}). "
            f"If you trust the file, re-save it as a plain dict: "
            f"torch.save({{'cfg': dict(ckpt['cfg']), 'model': ckpt['model']}}, 'clean.pt')"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise EncoderError(f"cannot read BEATs checkpoint {path}: {_first_line(exc)}; is the download complete?") from exc
    if not isinstance(raw, dict) or "cfg" not in raw or "model" not in raw:
        keys = sorted(map(str, raw)) if isinstance(raw, dict) else type(raw).__name__
        raise EncoderError(
            f"{path} is not an official BEATs checkpoint: expected a dict with 'cfg' and 'model', got {keys}"
        )
    state = raw["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EncoderError(f"{path}: 'model' must be a state dict of tensors; got {type(state).__name__}")
    config = BeatsConfig.from_dict(raw["cfg"])
    return BeatsCheckpoint(path, file_sha256(path), config, state, _labels(raw.get("label_dict"), path))


def build_model(checkpoint: BeatsCheckpoint, device: str | torch.device = "cpu") -> BeatsModel:
    """A :class:`BeatsModel` in eval mode with the checkpoint's weights loaded strictly.

    Raises:
        EncoderError: missing or unexpected keys, wrong shapes, or per-layer copies of the
            shared relative-position table that disagree.
    """
    _check_shared_table(checkpoint)
    model = BeatsModel(checkpoint.config)
    try:
        model.load_state_dict(checkpoint.state_dict, strict=True)
    except RuntimeError as exc:
        raise EncoderError(
            f"weights in {checkpoint.path} do not fit the architecture in its own cfg "
            f"({checkpoint.config.architecture()}): {exc}"
        ) from exc
    return model.to(device).eval()


def _check_shared_table(checkpoint: BeatsCheckpoint) -> None:
    """BEATs shares one relative-position table; every per-layer copy must hold the same values."""
    key = "encoder.layers.{}.self_attn.relative_attention_bias.weight"
    first = checkpoint.state_dict.get(key.format(0))
    if first is None:
        return
    for i in range(1, checkpoint.config.encoder_layers):
        other = checkpoint.state_dict.get(key.format(i))
        if other is not None and (other.shape != first.shape or not torch.equal(other, first)):
            raise EncoderError(
                f"{checkpoint.path}: {key.format(i)} differs from layer 0's table, but BEATs shares one "
                f"relative-position table across layers; the checkpoint is not in the official format"
            )


def _labels(label_dict: Any, path: Path) -> dict[int, str] | None:
    """``label_dict`` as ``{index: label}``; keys may be ints or digit strings."""
    if label_dict is None:
        return None
    if isinstance(label_dict, (list, tuple)):
        return {i: str(v) for i, v in enumerate(label_dict)}
    if not isinstance(label_dict, dict):
        raise EncoderError(f"{path}: 'label_dict' must map class index to label; got {type(label_dict).__name__}")
    try:
        return {int(k): str(v) for k, v in label_dict.items()}
    except (TypeError, ValueError) as exc:
        raise EncoderError(f"{path}: 'label_dict' keys must be class indices; {exc}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
