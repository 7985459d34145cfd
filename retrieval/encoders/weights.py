"""Find a checkpoint locally, or download it only when the hub is reachable.

Every encoder with weights resolves its ``--model`` through :func:`resolve_checkpoint`:

1. ``RETRIEVE_<ENCODER>_MODEL`` overrides the default checkpoint when ``--model`` is not given;
2. a path that exists is used as it is;
3. a hub id found in the Hugging Face cache is used from there, with no network;
4. otherwise, when ``HF_HUB_OFFLINE`` is unset and the hub answers a TCP connect within
   a few seconds, it is downloaded;
5. otherwise :class:`WeightsNotFoundError` says what to do. Nothing waits on a dead network.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from retrieval.errors import WeightsNotFoundError

#: Seconds to wait for the hub's TCP handshake before calling it unreachable.
HUB_CONNECT_TIMEOUT_S = 3.0


def env_var(encoder: str) -> str:
    """The environment variable that names a default checkpoint for ``encoder``."""
    return f"RETRIEVE_{encoder.upper()}_MODEL"


def choose_model(encoder: str, model: str | None, default: str | None) -> str | None:
    """``--model`` if given, else ``RETRIEVE_<ENCODER>_MODEL``, else the family default."""
    return model or os.environ.get(env_var(encoder)) or default


def looks_like_path(model: str) -> bool:
    """True for strings that name a file or folder rather than a hub id (``org/name``)."""
    return (
        model.startswith(("/", ".", "~"))
        or os.sep + os.sep in model
        or model.count("/") > 1
        or Path(model).suffix in {".pt", ".pth", ".bin", ".ckpt", ".safetensors"}
    )


def hub_reachable(timeout_s: float = HUB_CONNECT_TIMEOUT_S) -> bool:
    """Whether the Hugging Face hub accepts a TCP connection (honours ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``).

    The name lookup and the connect run in a daemon thread that is given ``timeout_s`` in
    all: ``socket``'s own timeout does not cover DNS, which can stall for much longer on a
    network that drops packets.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}:
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, name="hub-probe", daemon=True)
    worker.start()
    worker.join(timeout_s)
    return bool(result and result[0])


def resolve_checkpoint(encoder: str, model: str, *, file_hint: str = "config.json") -> str:
    """Return a local path for ``model`` (a path or a hub id), downloading only if the hub answers.

    Args:
        encoder: family name, used in messages and the environment variable.
        model: local path or hub id.
        file_hint: a file every snapshot of this family has, used to probe the cache.

    Raises:
        WeightsNotFoundError: with the three ways to provide the weights.
    """
    path = Path(model).expanduser()
    if path.exists():
        return str(path)
    if looks_like_path(model):
        raise WeightsNotFoundError(
            f"no {encoder} checkpoint at {path}; {_how_to(encoder, model, hub=False)}"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(model, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        pass
    if not hub_reachable():
        raise WeightsNotFoundError(
            f"{encoder} checkpoint {model!r} is not in the Hugging Face cache and the hub cannot be "
            f"reached from this machine; {_how_to(encoder, model, hub=True)}"
        )
    try:
        return snapshot_download(model)
    except Exception as exc:  # network, auth, or unknown repo: all mean "no weights"
        raise WeightsNotFoundError(
            f"could not download {encoder} checkpoint {model!r} ({exc}); {_how_to(encoder, model, hub=True)}"
        ) from exc


def _how_to(encoder: str, model: str, hub: bool) -> str:
    steps = ["pass --model /path/to/checkpoint", f"or set {env_var(encoder)}=/path/to/checkpoint"]
    if hub:
        steps.append(
            f"or fill the Hugging Face cache on a machine with network (`huggingface-cli download {model}`) "
            f"and copy ~/.cache/huggingface to this one"
        )
    return "; ".join(steps)


def local_status(entry) -> tuple[bool, str]:  # entry: registry.EncoderEntry (no import cycle)
    """Whether ``entry``'s checkpoint can be loaded here with no network, and from where (or how)."""
    model = choose_model(entry.name, None, entry.default_model)
    if model is None:
        return True, "built in (no weights)"
    path = Path(model).expanduser()
    if path.exists():
        return True, str(path)
    if looks_like_path(model):
        return False, f"pass --model PATH or set {env_var(entry.name)}"
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, "config.json")
    if isinstance(cached, str):
        return True, f"HF cache ({Path(cached).parent})"
    return False, f"not in the HF cache: `huggingface-cli download {model}`, --model PATH or {env_var(entry.name)}"
