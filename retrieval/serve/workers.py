"""Heavy work of the server in warmed worker processes, so the server's own process stays free for searches.

Decoding and embedding an upload and rendering a spectrogram thumbnail hold Python's GIL
for most of their run. Done on the server's threads, every search by an indexed file
that arrives meanwhile waits for them in the interpreter even when a CPU core is idle
(on 2 cores at 16 clients: a search by id took 50 ms at the median, of which 11 ms in
the search). :class:`Workers` runs that work in ``processes`` spawned worker processes
instead; the server's thread only waits for the answer, without the GIL.

What runs where:

- thumbnails: rendered in a worker (:func:`retrieval.serve.media.render_spectrogram`);
- uploads: decoded in a worker; embedded there too when the encoder needs no weights
  (``default_model`` is None in the registry, e.g. ``logmel``), which builds it in the
  worker from the index's recipe. Model encoders (CLAP, wav2vec2, ...) embed in the
  server process, where their one copy of the weights lives and torch releases the GIL.
  The index's fitted post-processing is always applied in the server, so the vector is the
  one :meth:`retrieval.index.Index.embed` gives for the same audio.

Workers run at a lower CPU priority (:data:`WORKER_NICENESS`): on a small, busy machine
the OS then gives a core to a search by an indexed file before a thumbnail render, so
the heavy requests pay the wait for CPU as they already pay the wait for a slot.

``processes=0`` does all of it in the calling thread (the previous behaviour).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from retrieval.encoders.registry import entry
from retrieval.errors import InputError, RetrievalError
from retrieval.recipe import Recipe
from retrieval.serve.media import render_spectrogram
from retrieval.serve.uploads import decode_upload

T = TypeVar("T")
#: Added to a worker process's nice value (lower CPU priority than the server's own threads).
WORKER_NICENESS = 10


class Workers:
    """``processes`` worker processes for heavy requests (0: run them in the calling thread).

    The pool is spawned on first use, or by :meth:`start`, which also waits until every
    worker has imported what it needs. A worker that dies is replaced on the next call;
    the request that was on it gets a :class:`RetrievalError`.
    """

    def __init__(self, processes: int) -> None:
        if processes < 0:
            raise InputError(f"worker processes must be 0 (in the server process) or more, got {processes}")
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Spawn the workers now and wait until each has imported its libraries (a no-op for 0)."""
        if self.processes:
            pool = self._executor()
            for f in [pool.submit(_warm, 0.2) for _ in range(self.processes)]:
                f.result()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def thumbnail(self, path: Path, duration_s: float, mark: tuple[float, float] | None, width: int,
                  height: int) -> bytes:
        """PNG bytes of :func:`retrieval.serve.media.render_spectrogram`, rendered in a worker."""
        return self._run(render_spectrogram, path, duration_s, mark, width, height)

    def upload(self, data: bytes, filename: str | None, recipe: Recipe, max_duration_s: float,
               start_s: float | None, end_s: float | None, *, index_root: Path, corpus_root: str | None,
               embed_here: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Decode an upload (and, for an encoder without weights, embed it) in a worker.

        Returns:
            ``(audio, raw)``: either ``raw``, the pooled ``(P,)`` float32 vector before the
            index's post-processing (audio None), or, when the encoder has weights or
            ``embed_here`` is False, ``audio`` as ``(S,)`` float32 at ``recipe.sample_rate``
            for the caller to embed with its own encoder (raw None).

        Raises:
            UploadTooLarge, AudioError: as :func:`retrieval.serve.uploads.decode_upload`.
        """
        embed = embed_here and weightless(recipe)
        return self._run(_decode_and_embed, data, filename, recipe, max_duration_s, start_s, end_s,
                         str(index_root), corpus_root, embed)

    # -- internals -------------------------------------------------------------------------

    def _executor(self) -> Executor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_init_worker, initargs=(os.getpid(),))
            return self._pool

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if not self.processes:
            return fn(*args)
        pool = self._executor()
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise RetrievalError("a worker process of the server died during this request (out of memory?); "
                                 "it has been replaced: try again") from None


def weightless(recipe: Recipe) -> bool:
    """True when ``recipe``'s encoder needs no weights, so a worker can build it cheaply."""
    return entry(recipe.encoder).default_model is None


# -- what runs in a worker -----------------------------------------------------------------

#: Encoders a worker keeps, by (recipe hash, index folder); weightless ones are cheap to rebuild.
_MAX_ENCODERS = 8
_ENCODERS: dict[tuple[str, str], Any] = {}


def _init_worker(parent_pid: int) -> None:
    """Lower this worker's CPU priority and end it with the server."""
    try:
        os.nice(WORKER_NICENESS)
    except OSError:  # not allowed here: keep the default priority
        pass
    _watch_parent(parent_pid)


def _watch_parent(parent_pid: int, every_s: float = 0.5) -> None:
    """End this worker when the server is gone.

    A server stopped by a signal may never shut its pool down (uvicorn re-raises SIGTERM
    after its own shutdown), and a pool worker does not notice on its own.
    """
    import time

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(every_s)
        os._exit(0)

    threading.Thread(target=watch, name="watch-server", daemon=True).start()


def _warm(pause_s: float) -> int:
    """Import what the work needs; ``pause_s`` keeps this worker busy so the next warm-up goes to another."""
    import time

    import PIL.Image  # noqa: F401
    from matplotlib import colormaps  # noqa: F401

    import retrieval.embed  # noqa: F401

    time.sleep(pause_s)
    return 0


def _decode_and_embed(data: bytes, filename: str | None, recipe: Recipe, max_duration_s: float,
                      start_s: float | None, end_s: float | None, index_root: str, corpus_root: str | None,
                      embed: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    audio = decode_upload(data, filename, recipe.sample_rate, max_duration_s, start_s, end_s)
    if not embed:
        return audio, None
    from retrieval.configure import encoder_for
    from retrieval.embed import embed_clip

    key = (recipe.hash(), index_root)
    if key not in _ENCODERS:
        if len(_ENCODERS) >= _MAX_ENCODERS:
            _ENCODERS.pop(next(iter(_ENCODERS)))
        _ENCODERS[key] = encoder_for(recipe, "cpu", index=index_root, corpus=corpus_root)
    raw, _, _ = embed_clip(_ENCODERS[key], audio, recipe.window_samples, recipe.hop_samples, recipe.pooling)
    return None, np.asarray(raw, np.float32)
