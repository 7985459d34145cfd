"""Find a checkpoint locally, or download it only when the hub is reachable.

Every encoder with weights resolves its ``--model`` through :func:`resolve_checkpoint`:

1. ``RETRIEVE_<ENCODER>_MODEL`` overrides the default checkpoint when ``--model`` is not given;
2. a path that exists is used as it is (and recorded absolute, :func:`absolute_model`);
3. a hub id found in the Hugging Face cache is used from there, with no network;
4. otherwise, when ``HF_HUB_OFFLINE`` is unset and the hub answers a TCP connect within
   a few seconds, it is downloaded;
5. otherwise :class:`WeightsNotFoundError` says what to do. Nothing waits on a dead network.

The cache is the one huggingface_hub would use *now* (:func:`hub_cache_dir`: ``HF_HUB_CACHE``,
else ``HF_HOME/hub``, else ``XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``),
read from the environment at each call rather than when huggingface_hub was imported, and
messages name it. The download command they suggest is one the installed huggingface_hub
ships (:func:`download_command`: ``hf download`` since 0.34, ``huggingface-cli download``
before, else a Python one-liner).

A checkpoint loaded from local files also gets a digest (:func:`weights_digest`), which
the recipe uses to recognise the same weights after they move.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import threading
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from retrieval.errors import WeightsNotFoundError

#: Seconds to wait for the hub's TCP handshake before calling it unreachable.
HUB_CONNECT_TIMEOUT_S = 3.0


def env_var(encoder: str) -> str:
    """The environment variable that names a default checkpoint for ``encoder``."""
    return f"RETRIEVE_{encoder.upper()}_MODEL"


def choose_model(encoder: str, model: str | None, default: str | None) -> str | None:
    """``--model`` if given, else ``RETRIEVE_<ENCODER>_MODEL``, else the family default.

    A local path comes back absolute (:func:`absolute_model`), so what is recorded works
    from any directory.
    """
    chosen = model or os.environ.get(env_var(encoder)) or default
    return absolute_model(chosen) if chosen else chosen


def absolute_model(model: str) -> str:
    """``model`` as an absolute path when it names a local file or folder, else unchanged (a hub id).

    A path that exists here, or one that :func:`looks_like_path`, is resolved against the
    current directory (``~`` expanded); ``org/name`` that is not a folder here stays a hub id.
    """
    path = Path(model).expanduser()
    if path.exists() or looks_like_path(model):
        return str(path.resolve())
    return model


def is_local(model: str) -> bool:
    """True when ``model`` names a local file or folder (existing or not), not a hub id."""
    return Path(model).expanduser().is_absolute() or Path(model).expanduser().exists() or looks_like_path(model)


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
    if hub_offline():
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

    cache = hub_cache_dir()
    try:
        return snapshot_download(model, local_files_only=True, cache_dir=cache)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        pass
    if not hub_reachable():
        offline = hub_offline()
        why = (f"{offline} is set, so no download was tried" if offline
               else "the hub cannot be reached from this machine")
        raise WeightsNotFoundError(
            f"{encoder} checkpoint {model!r} is not in the Hugging Face cache ({cache}) and {why}; "
            f"{_how_to(encoder, model, hub=True)}"
        )
    try:
        return snapshot_download(model, cache_dir=cache)
    except Exception as exc:  # network, auth, or unknown repo: all mean "no weights"
        raise WeightsNotFoundError(
            f"could not download {encoder} checkpoint {model!r} ({exc}); {_how_to(encoder, model, hub=True)}"
        ) from exc


def hub_offline() -> str | None:
    """The variable that forbids downloads (``HF_HUB_OFFLINE``, else ``TRANSFORMERS_OFFLINE``, as
    huggingface_hub reads them), read now; None when downloads are allowed."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var):
            return var if os.environ[var].strip().lower() in {"1", "true", "yes", "on"} else None
    return None


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache huggingface_hub would use with the environment as it is now.

    ``HF_HUB_CACHE`` (or the older ``HUGGINGFACE_HUB_CACHE``), else ``$HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``: the rule of
    ``huggingface_hub.constants``, which reads it once at import.
    """
    env = os.environ
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def _console_scripts() -> set[str]:
    """Names of the commands the installed huggingface_hub declares (empty if it is not installed)."""
    from importlib import metadata  # only an error message needs it; a cold start does not

    try:
        entry_points = metadata.distribution("huggingface_hub").entry_points
    except metadata.PackageNotFoundError:
        return set()
    return {ep.name for ep in entry_points if ep.group == "console_scripts"}


def download_command(model: str) -> str:
    """A command that downloads hub id ``model`` with the installed huggingface_hub, runnable here.

    ``hf download ID`` where the package ships ``hf`` (0.34 and later; 1.0 dropped
    ``huggingface-cli``), ``huggingface-cli download ID`` where it ships only that; the
    Python one-liner, which works with every version, when neither is declared or the one
    declared is not on ``PATH`` (a package installed without its scripts).
    """
    scripts = _console_scripts()
    for name in ("hf", "huggingface-cli"):
        if name in scripts and shutil.which(name):
            return f"{name} download {model}"
    return f"python -c \"from huggingface_hub import snapshot_download; snapshot_download('{model}')\""


def _how_to(encoder: str, model: str, hub: bool) -> str:
    steps = ["pass --model /path/to/checkpoint", f"or set {env_var(encoder)}=/path/to/checkpoint"]
    if hub:
        folder = "models--" + model.replace("/", "--")
        steps.append(
            f"or download it on a machine with network (`{download_command(model)}`) and copy its "
            f"{folder} folder from that machine's hub cache into {hub_cache_dir()} here"
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

    cache = hub_cache_dir()
    cached = try_to_load_from_cache(model, "config.json", cache_dir=cache)
    if isinstance(cached, str):
        return True, f"HF cache ({Path(cached).parent})"
    offline = f" ({hub_offline()} is set)" if hub_offline() else ""
    return False, (f"not in the HF cache {cache}{offline}: `{download_command(model)}`, "
                   f"--model PATH or {env_var(entry.name)}")


def weights_digest(path: str | Path) -> str:
    """Hex sha256 identifying the checkpoint at ``path`` by content, wherever it sits.

    For a file (a ``.pt``), the sha256 of its bytes. For a folder (``save_pretrained``
    output), the sha256 of the sorted ``name sha256`` lines of every file under it, names
    relative to the folder, dot-files and dot-folders skipped: moving or renaming the folder
    keeps the digest, changing any weight or config file changes it. Each file's digest is
    cached for the process by path, size and modification time.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    root = Path(path).expanduser().resolve()
    if root.is_file():
        return _file_sha256(str(root), *_stamp(root))
    if not root.is_dir():
        raise FileNotFoundError(f"no checkpoint at {root}")
    lines = []
    for item in sorted(root.rglob("*")):
        rel = item.relative_to(root)
        if item.is_file() and not any(part.startswith(".") for part in rel.parts):
            lines.append(f"{rel.as_posix()} {_file_sha256(str(item), *_stamp(item))}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int, chunk_bytes: int = 1 << 22) -> str:
    """sha256 of one file; ``size`` and ``mtime_ns`` only key the cache."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
