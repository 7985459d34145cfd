"""Decode tasks for tests/test_pipeline.py that misbehave on purpose.

They run inside decoding workers, which import this module by name, so it imports only
what a worker has already loaded.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

from retrieval.pipeline import DecodedFile, WindowSpec, decode_task


def crashing_task(paths: list[str], spec: WindowSpec) -> list[DecodedFile]:
    """A decode task whose process dies on any file named *crash* (as a segfaulting decoder would)."""
    if any("crash" in Path(p).name for p in paths):
        os._exit(11)
    return decode_task(paths, spec)


def deferring_task(paths: list[str], spec: WindowSpec) -> list[DecodedFile]:
    """Decodes only the first file of each task and defers the rest."""
    return decode_task(paths[:1], spec) + [DecodedFile(deferred=True) for _ in paths[1:]]


def attempts_log(path: str | Path) -> Path:
    """Where :func:`hanging_task` counts its attempts on ``path``: a file named for that path."""
    digest = hashlib.blake2b(str(Path(path).resolve()).encode(), digest_size=8).hexdigest()
    return Path(tempfile.gettempdir()) / f"retrieve-hang-{digest}.attempts"


def failing_init() -> None:
    """A worker initializer that fails, as when workers cannot start at all."""
    raise RuntimeError("this worker cannot start")


def hanging_task(paths: list[str], spec: WindowSpec) -> list[DecodedFile]:
    """A decode task that never returns on any file named *hang* (as a decoder stuck in a loop).

    Each attempt on such a task appends the task's size to :func:`attempts_log` of the file
    (workers may come from a fork server started before a test set any variable).
    """
    hung = [p for p in paths if "hang" in Path(p).name]
    if hung:
        with attempts_log(hung[0]).open("a") as log:
            log.write(f"{len(paths)}\n")
        while True:
            time.sleep(1)
    return decode_task(paths, spec)
