"""Corpus-relative paths as stored in the index: valid UTF-8, lossless, reversible.

A file name on Linux is bytes; DuckDB and Parquet hold UTF-8 text. Python decodes a
name that is not valid UTF-8 with ``surrogateescape`` (byte ``0xff`` becomes ``'\\udcff'``),
which no UTF-8 store accepts. So a path component that is not valid UTF-8 is stored
quoted, as git quotes such names: ``"bad\\xffname.wav"``, with ``\\xHH`` for each
undecodable byte and ``\\\\`` / ``\\"`` for a backslash or a quote. Every other component
is stored as it is, so ordinary names (the labels CSV, ``--where path LIKE ...``) are
untouched. A component that really begins with ``"`` is quoted too, which keeps the
mapping one-to-one: :func:`to_os` gives back the exact name on disk.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_QUOTE = '"'
_ESCAPE = re.compile(r'\\(x[0-9a-f]{2}|\\|")')


def to_stored(rel_path: str) -> str:
    """A ``/``-separated path as :func:`os.fsdecode` gives it -> the form stored in the index.

    >>> to_stored("dog/bark.wav")
    'dog/bark.wav'
    >>> to_stored("dog/b\\udcffark.wav")
    'dog/"b\\\\xffark.wav"'
    """
    return "/".join(_quote(part) for part in rel_path.split("/"))


def to_os(stored: str) -> str:
    """The inverse of :func:`to_stored`: the path with its exact bytes (surrogate-escaped)."""
    return "/".join(_unquote(part) for part in stored.split("/"))


def real_path(root: Path | str, stored: str) -> Path:
    """The file on disk that the stored, corpus-relative path ``stored`` names."""
    return Path(to_os(str(root))) / to_os(stored)


def _quote(part: str) -> str:
    try:
        part.encode("utf-8")
        needed = part.startswith(_QUOTE)
    except UnicodeEncodeError:
        needed = True
    if not needed:
        return part
    out = []
    for ch in part:
        if "\udc80" <= ch <= "\udcff":  # an undecodable byte, as surrogateescape holds it
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch in ('\\', _QUOTE):
            out.append("\\" + ch)
        elif "\ud800" <= ch <= "\udfff":  # a lone surrogate from elsewhere: keep its UTF-8 bytes' escape
            out.append("".join(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogatepass")))
        else:
            out.append(ch)
    return _QUOTE + "".join(out) + _QUOTE


def _unquote(part: str) -> str:
    if not (len(part) >= 2 and part.startswith(_QUOTE) and part.endswith(_QUOTE)):
        return part
    raw = bytearray()
    body = part[1:-1]
    pos = 0
    for m in _ESCAPE.finditer(body):
        raw += body[pos:m.start()].encode("utf-8")
        tok = m.group(1)
        raw += bytes([int(tok[1:], 16)]) if tok.startswith("x") else tok.encode("utf-8")
        pos = m.end()
    raw += body[pos:].encode("utf-8")
    return os.fsdecode(bytes(raw))
