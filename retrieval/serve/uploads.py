"""Uploaded clips: bytes in, ``(S,)`` float32 mono at the index's rate out, within the server's limits.

A pure function of its arguments, so it runs the same in the server process and in a
worker process (:mod:`retrieval.serve.workers`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from retrieval.audio.clip import clip_audio
from retrieval.audio.decode import probe
from retrieval.errors import AudioError, InputError


class UploadTooLarge(InputError):
    """An upload over the size or duration limit (HTTP 413)."""


def decode_upload(data: bytes, filename: str | None, sample_rate: int, max_duration_s: float,
                  start_s: float | None = None, end_s: float | None = None) -> np.ndarray:
    """The uploaded file ``data`` as ``(S,)`` float32 mono at ``sample_rate`` Hz, cropped to ``[start_s, end_s)``.

    ``filename`` only names the upload in messages and gives the decoder its extension.

    Raises:
        UploadTooLarge: longer than ``max_duration_s`` decoded seconds.
        AudioError: empty or not decodable (the decoder's reason, naming the upload).
    """
    if not data:
        raise AudioError(f"{filename} is empty")
    suffix = "".join(c for c in Path(filename or "").suffix.lower() if c.isalnum() or c == ".")[:8]
    fd, tmp = tempfile.mkstemp(suffix=suffix or ".bin", prefix="retrieve-upload-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            duration = probe(Path(tmp)).duration_s
        except AudioError as exc:
            raise AudioError(_named(str(exc), tmp, filename)) from None
        if duration > max_duration_s:
            raise UploadTooLarge(f"{filename} is {duration:.0f} s long; this server takes clips up to "
                                 f"{max_duration_s:.0f} s (--max-upload-s)")
        try:
            return clip_audio(tmp, sample_rate, start_s=start_s, end_s=end_s)
        except AudioError as exc:
            raise AudioError(_named(str(exc), tmp, filename)) from None
    finally:
        os.unlink(tmp)


def _named(message: str, tmp: str, filename: str | None) -> str:
    """A decoder's message about the temporary copy, told about the upload's own name."""
    return message.replace(tmp, filename or "upload").replace(Path(tmp).name, filename or "upload")
