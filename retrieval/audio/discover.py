"""Find audio files under a folder, recursively, safe against symlink loops."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from retrieval.audio.paths import to_stored
from retrieval.errors import InputError

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
    """A candidate audio file, or a folder discovery has something to say about.

    Attributes:
        path: the path as found under the root (links not resolved).
        rel_path: path relative to the corpus root, with ``/`` separators, in the stored form
            of :func:`retrieval.audio.paths.to_stored` (valid UTF-8 whatever the bytes on disk).
        size: bytes, or -1 when ``stat`` failed.
        mtime: seconds since the epoch, or 0.0 when ``stat`` failed.
        error: why the file (or folder) cannot be read, or None. A file with an error is
            skipped; a folder with an error could not be listed, so the files under it are
            unknown, not gone.
        note: a warning to record; the file is still read (a link out of the corpus).
        folder: this entry is a folder, not a file.
    """

    path: Path
    rel_path: str
    size: int
    mtime: float
    error: str | None = None
    note: str | None = None
    folder: bool = False


def discover(root: Path, extensions: frozenset[str] | None = None) -> Iterator[FoundFile]:
    """Yield audio files below ``root`` in sorted order, and the folders it could not walk.

    Symlinked folders are followed once each; a link back to a folder already walked
    (a loop, or a second link) is not followed again and comes out as a folder entry with
    a ``note``. Links that lead out of the corpus are followed, with a ``note`` saying
    where they lead. A folder that cannot be listed (no permission, vanished while
    walking) comes out with ``error`` set. Files whose ``stat`` fails (dangling links, no
    permission) or that are not regular files (FIFOs, devices, sockets: reading them
    would block or never end) come out with ``error`` set. Nothing is dropped silently.
    """
    root = Path(root)
    exts = extensions or audio_extensions()
    if root.is_file():
        yield _found(root, root.parent, None)
        return
    root_real = os.path.realpath(root)
    unreadable: list[OSError] = []
    seen_dirs: set[tuple[int, int]] = set()
    real_folders: dict[str, str] = {}  # folders symlinked files lead to, resolved once each
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=unreadable.append):
        yield from _unreadable(unreadable, root)
        here = Path(dirpath)
        try:
            st = os.stat(dirpath)
        except OSError as exc:
            dirnames[:] = []
            yield _folder(here, root, error=f"cannot read folder: {exc.strerror or exc}" + _KEPT)
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:  # symlink loop or second link to a folder already walked
            dirnames[:] = []
            yield _folder(here, root, note=_walked_note(here))
            continue
        seen_dirs.add(key)
        if here != root and os.path.islink(dirpath) and not _inside(os.path.realpath(dirpath), root_real):
            yield _folder(here, root, note=f"symlink to a folder outside the corpus ({os.path.realpath(dirpath)}); "
                                           "followed: its files are indexed under this path")
        dirnames.sort()
        rel_dir = here.relative_to(root).as_posix()  # once per folder, not per file
        for name in sorted(filenames):
            if _suffix(name).lower() in exts and not name.startswith("._"):
                yield _found(here / name, root, root_real, name if rel_dir == "." else f"{rel_dir}/{name}",
                             real_folders)
    yield from _unreadable(unreadable, root)


#: Appended to the error of a folder that cannot be listed.
_KEPT = ("; the files indexed under it are kept as they were: make it readable (permissions, mount) "
         "and run again")


def _unreadable(errors: list[OSError], root: Path) -> Iterator[FoundFile]:
    """Folder entries for the ``os.walk`` errors collected so far (then forgets them)."""
    for exc in errors:
        where = Path(exc.filename) if exc.filename is not None else root
        yield _folder(where, root, error=f"cannot read folder: {exc.strerror or exc}" + _KEPT)
    errors.clear()


def _folder(path: Path, root: Path, *, error: str | None = None, note: str | None = None) -> FoundFile:
    return FoundFile(path, _rel(path, root), -1, 0.0, error=error, note=note, folder=True)


def _walked_note(path: Path) -> str:
    target = os.path.realpath(path)
    parent = os.path.realpath(path.parent)
    if _inside(parent, target):
        what = "a symlink loop (it leads back to a folder above it)"
    elif os.path.islink(path):
        what = "a second link to a folder already walked"
    else:
        what = "a folder already walked through a link"
    return f"{what}: {target}; not followed again, its files are indexed once, under their first path"


def audio_clips(clips: str | Path | Sequence[str | Path]) -> list[str | Path]:
    """The clips a ``classify`` call names: every audio file under a folder, one path, or a list.

    A folder is walked as a corpus is (:func:`discover`): readable audio files only, in
    discovery order. A path that is not a folder, and each path of a list, is kept as
    given (a bad one fails when it is read, with the others still labelled).

    Raises:
        InputError: a folder holding no audio file.
    """
    if isinstance(clips, (str, Path)) and Path(clips).is_dir():
        found: list[str | Path] = [f.path for f in discover(Path(clips)) if f.error is None and not f.folder]
        if not found:
            raise InputError(f"no audio files under {clips}")
        return found
    return [clips] if isinstance(clips, (str, Path)) else list(clips)


def under(rel_path: str, folder: str) -> bool:
    """Whether the stored path ``rel_path`` is inside the stored folder path ``folder`` (``.``: the root)."""
    return folder in (".", "") or rel_path.startswith(folder.rstrip("/") + "/")


def _inside(path: str, folder: str) -> bool:
    """Whether the resolved ``path`` is ``folder`` or below it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _rel(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    return to_stored(rel)


def _suffix(name: str) -> str:
    """``PurePath(name).suffix`` of a bare file name, without building a path."""
    i = name.rfind(".")
    return name[i:] if 0 < i < len(name) - 1 else ""


def _found(path: Path, root: Path, root_real: str | None, rel_posix: str | None = None,
           real_folders: dict[str, str] | None = None) -> FoundFile:
    """``rel_posix``: ``path`` relative to ``root`` as a POSIX string, when the caller has it;
    ``real_folders``: resolved folders of this walk (:func:`_link_target`)."""
    rel = _rel(path, root) if rel_posix is None else to_stored(rel_posix)
    name = os.fspath(path)
    try:
        st = os.stat(name)
    except OSError as exc:
        return FoundFile(path, rel, -1, 0.0, f"cannot stat: {exc.strerror or exc}")
    if not stat.S_ISREG(st.st_mode):
        return FoundFile(path, rel, -1, st.st_mtime,
                         f"not a regular file ({_kind(st.st_mode)}): reading it could block or never end")
    if not os.access(name, os.R_OK):
        return FoundFile(path, rel, st.st_size, st.st_mtime, "permission denied")
    note = None
    if root_real is not None and os.path.islink(name):
        target = _link_target(name, {} if real_folders is None else real_folders)
        if not _inside(target, root_real):
            note = f"symlink to a file outside the corpus ({target}); followed"
    return FoundFile(path, rel, st.st_size, st.st_mtime, note=note)


def _link_target(link: str, real_folders: dict[str, str]) -> str:
    """``os.path.realpath(link)`` of a symlink to a file, resolving its folder once per folder.

    ``realpath`` walks every component of the path with an ``lstat`` each (a tenth of a second
    per thousand links to a deep folder); a link's target that is not itself a link is the
    resolved folder of the target plus its name. Anything else (a chain of links, a target
    named ``.`` or ``..``, an unreadable link) goes through ``realpath``. ``real_folders``
    caches resolved folders for one walk.
    """
    try:
        target = os.path.join(os.path.dirname(link), os.readlink(link))
    except OSError:
        return os.path.realpath(link)
    folder, name = os.path.split(target)
    if name in ("", ".", "..") or os.path.islink(target):
        return os.path.realpath(link)
    real = real_folders.get(folder)
    if real is None:
        real = real_folders[folder] = os.path.realpath(folder)
    return os.path.join(real, name)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return f"mode {stat.filemode(mode)}"
