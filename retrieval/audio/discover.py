"""Find audio files under a folder, recursively, safe against symlink loops."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: Extensions libsndfile (through soundfile) decodes.
SNDFILE_EXTENSIONS: frozenset[str] = frozenset({
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
    ".au", ".snd", ".caf", ".w64", ".rf64", ".voc", ".sd2", ".nist", ".sph", ".htk",
})
#: Extensions that need the optional PyAV extra (`pip install retrieve[av]`).
AV_EXTENSIONS: frozenset[str] = frozenset({".m4a", ".aac", ".mp4", ".wma", ".webm", ".mka", ".ac3"})


def has_pyav() -> bool:
    """Whether PyAV is importable (the optional decoder for m4a/aac/opus)."""
    import importlib.util

    return importlib.util.find_spec("av") is not None


def audio_extensions() -> frozenset[str]:
    """Every extension discovery picks up on this machine."""
    return SNDFILE_EXTENSIONS | AV_EXTENSIONS if has_pyav() else SNDFILE_EXTENSIONS


@dataclass(frozen=True)
class FoundFile:
    """A candidate audio file.

    Attributes:
        path: absolute path.
        rel_path: path relative to the corpus root, with ``/`` separators.
        size: bytes, or -1 when ``stat`` failed.
        mtime: seconds since the epoch, or 0.0 when ``stat`` failed.
        error: why the file cannot be read, or None.
    """

    path: Path
    rel_path: str
    size: int
    mtime: float
    error: str | None = None


def discover(root: Path, extensions: frozenset[str] | None = None) -> Iterator[FoundFile]:
    """Yield audio files below ``root`` in sorted order.

    Symlinked folders are followed once each (a loop is entered at most once), and
    files whose ``stat`` fails (dangling links, no permission) are yielded with
    ``error`` set, so the caller can record them instead of dropping them silently.
    """
    root = Path(root)
    exts = extensions or audio_extensions()
    if root.is_file():
        yield _found(root, root.parent)
        return
    seen_dirs: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=None):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:  # symlink loop or second link to a folder already walked
            dirnames[:] = []
            continue
        seen_dirs.add(key)
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in exts and not name.startswith("._"):
                yield _found(Path(dirpath) / name, root)


def _found(path: Path, root: Path) -> FoundFile:
    rel = path.relative_to(root).as_posix()
    try:
        st = path.stat()
    except OSError as exc:
        return FoundFile(path, rel, -1, 0.0, f"cannot stat: {exc.strerror or exc}")
    if not os.access(path, os.R_OK):
        return FoundFile(path, rel, st.st_size, st.st_mtime, "permission denied")
    return FoundFile(path, rel, st.st_size, st.st_mtime)
