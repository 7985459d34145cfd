"""Decoding ahead of the encoder: files -> windows in worker processes, results in order.

``retrieve index --workers N`` decodes, resamples and cuts windows in ``N`` worker
processes while the main process runs the encoder, so the model never waits for
libsndfile or soxr. This module holds both sides:

* :func:`iter_windows`: one file -> its windows, levels and silence flags. The main
  process (``--workers 0``, and long files) and the workers run this same code, so the
  windows are identical bit for bit whichever process cut them.
* :func:`decode_task`: what a worker runs: a few files -> :class:`DecodedFile` each.
* :class:`DecodePool`: a ``concurrent.futures.ProcessPoolExecutor`` that yields results
  in submission order (so commits are deterministic), with a bounded number of tasks in
  flight (so memory is bounded), and that turns a dead worker into an error row for the
  one file that killed it.

Design choices:

* **forkserver, not fork.** Forking a process that has started torch's thread pools can
  deadlock the child; the fork server is a fresh interpreter that imports only this
  module and the log-mel encoder (numpy, scipy, soundfile, soxr; never torch), and
  workers fork from it in milliseconds. Where the
  platform has no fork server, ``spawn`` is used. As with any ``multiprocessing`` code, a
  script that calls ``ingest(..., workers=N)`` needs the ``if __name__ == "__main__":`` guard.
* **Long files stream in the main process.** A worker returns whole files, so a file whose
  windows would exceed :data:`LONG_FILE_SAMPLES` (about 2 minutes at 16 kHz with a 50 %
  hop, 40 s at 48 kHz) is handed back undecoded and the main process streams it
  block by block, as with ``--workers 0``; memory stays bounded by one block plus the
  encoder queue. Decoding is a small part of the cost of a model encoder, so little
  overlap is lost.
* **Memory bound.** A task holds at most :data:`FILES_PER_TASK` files; once its windows
  reach :data:`TASK_SAMPLES` samples, the rest of its files come back ``deferred`` and are
  submitted again as a new task. At most ``IN_FLIGHT_PER_WORKER * N`` tasks are submitted
  and not yet consumed. So at most ``2 * N * (16 + 16) MB`` of decoded windows wait for the
  encoder, whatever the corpus (typically far less: FSDD tasks hold about 0.5 MB).
* **Workers that embed.** For encoders whose registry entry sets ``embeds_in_workers`` (pure
  numpy, no weights, bit-exact batch invariance: the log-mel baseline), the workers also embed
  and send back vectors, so the main process only writes; for model encoders the model
  stays in the main process (one copy of the weights, all torch threads).
* **The main process helps.** With such an encoder, whenever the next result in line is not
  ready the main process decodes and embeds the next group itself (at most
  ``IN_FLIGHT_PER_WORKER * N`` groups ahead) instead of waiting: writing rows leaves it idle
  most of the time, and with one worker per idle core but its own (``auto_workers``) its
  core would otherwise go unused. The same :func:`decode_task` runs, so the vectors are the
  same bit for bit; results are still consumed in order. The price: a file the main process decodes
  has no process of its own, so a decoder that crashes or hangs on it stops the run, as
  with ``--workers 0``. So before decoding a group itself the main process writes the
  group's paths to a journal in the index folder (:data:`HERE_JOURNAL`) and empties it
  after; a re-run that finds paths there leaves those files to the workers, whose
  protection below turns the culprit into an error row instead of a second crash.
* **A worker dies.** Every future of a broken pool fails together, so the files in flight
  are re-run one at a time in a fresh pool; the file whose task kills a worker again is
  recorded as an error, the others are indexed. A fresh pool that cannot run even a
  trivial task is unusable: the main process decodes everything from there on.
* **A worker hangs.** A task that has not finished :data:`TASK_TIMEOUT_S` seconds after it
  reached the head of the line (a decoder stuck in a loop on a malformed file) has its
  workers killed; the pool is then broken and handled as above, each file in flight re-run
  alone under the same limit, and the one that hangs again is recorded as an error.
* **Orphans.** Each worker watches its parent and exits when it dies, so ``kill -9`` of
  ``retrieve index`` leaves no decoding processes behind.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as TaskTimeout  # the builtin from 3.11, its own class on 3.10
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from retrieval.allocator import keep_freed_memory
from retrieval.audio.decode import AudioInfo, AudioSource, DecodeReport, open_audio, stream
from retrieval.audio.windows import Window, cut_stream, rms_db
from retrieval.errors import AudioError, InputError

log = logging.getLogger(__name__)

#: Files per worker task: amortises inter-process overhead over short files.
FILES_PER_TASK = 16
#: A worker hands a file back to the main process to stream when its windows would hold
#: more samples than this (16 MB of float32).
LONG_FILE_SAMPLES = 4_000_000
#: A task defers its remaining files once its windows hold this many samples (16 MB of float32).
TASK_SAMPLES = 4_000_000
#: Input bytes per task, used to group files before their durations are known.
TASK_BYTES = 8 << 20
#: Tasks submitted and not yet consumed, per worker.
IN_FLIGHT_PER_WORKER = 2
#: Seconds a fresh pool may take to run a trivial task before it is declared unusable.
HEALTH_TIMEOUT_S = 120.0
#: Seconds a task may run, from the moment the pool waits on it, before its worker is taken for
#: hung and killed. A task holds at most 16 files and 8 MB of input: decoding FSDD tasks takes
#: about 10 ms, a full task of compressed audio a few seconds; 300 s leaves room for a machine
#: a hundred times slower than that and still ends a hang.
TASK_TIMEOUT_S = 300.0

#: File in the index folder naming the files the main process is decoding right now (one path
#: per line; empty when it decodes none). Left non-empty only by a run that died in the middle.
HERE_JOURNAL = "decoding-here.txt"

T = TypeVar("T")


@dataclass(frozen=True)
class WindowSpec:
    """How files become windows (from the recipe), and what a worker does with them.

    Attributes:
        sample_rate: Hz the audio is resampled to.
        window_samples, hop_samples: analysis window and hop at ``sample_rate``.
        silence_db: windows quieter than this RMS level (dBFS) are silent; None keeps all.
        embed_recipe: when set, workers build this recipe's encoder and return vectors
            instead of audio (encoders whose registry entry sets ``embeds_in_workers``).
        batch_size: windows per encoder call in a worker.
        long_samples, task_samples: :data:`LONG_FILE_SAMPLES` and :data:`TASK_SAMPLES` for
            this run (None: the module's values).
        device: torch device for the encoder a worker builds from ``embed_recipe``.
    """

    sample_rate: int
    window_samples: int
    hop_samples: int
    silence_db: float | None
    embed_recipe: Any = None  # retrieval.recipe.Recipe; Any keeps the worker's imports light
    batch_size: int = 16
    long_samples: int | None = None
    task_samples: int | None = None
    device: str = "cpu"  # torch device of the encoder a worker builds (a Ray actor with a GPU: cuda)
    copies: bool = False  # also compute copy frames (retrieval.copies.features) from the same decode

    def window_samples_of(self, info: AudioInfo) -> int:
        """Estimated samples in all of a file's windows (overlap counted), from its header."""
        out = info.frames * self.sample_rate / max(info.sample_rate, 1)
        return int(out * max(1.0, self.window_samples / self.hop_samples)) + self.window_samples


@dataclass
class DecodedFile:
    """One file's windows, levels and vectors: ingest's one record of a file, whoever decoded it
    (a worker, or the main process streaming it through :func:`scan_file`).

    Attributes:
        info: the file's header, None when it could not be read.
        report: decode facts (non-finite samples replaced, output length).
        starts, ends: ``(w,)`` int64 window bounds in samples at the target rate.
        levels: ``(w,)`` float64 RMS level of each window, dBFS.
        silent: ``(w,)`` bool, True for windows below the silence threshold.
        audio: ``(sum of non-silent window lengths,)`` float32, the non-silent windows end to end.
        vectors, counts: ``(k, P)`` float32 and ``(k,)`` int64 for the ``k`` non-silent windows
            once embedded (by a worker, or by the main process at commit), else None.
        file_vector: ``(P,)`` float32 file vector pooled from them (None for a silent file or a
            pooling without file vectors).
        window_errors: per non-silent window, the encoder's error or None (worker-embedded only).
        error: why the file cannot be indexed (a decode failure, or an encoder failure on one of
            its windows when the main process embeds it), or None.
        long: the file is too long to send whole; the main process streams it.
        deferred: not decoded because the task was full; submitted again.
        copy_frames: ``(T, BANDS)`` uint8 copy frames when ``spec.copies``, else None.
    """

    info: AudioInfo | None = None
    report: DecodeReport = field(default_factory=DecodeReport)
    starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ends: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    levels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    silent: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    vectors: np.ndarray | None = None
    counts: np.ndarray | None = None
    file_vector: np.ndarray | None = None
    window_errors: list[str | None] | None = None
    error: str | None = None
    long: bool = False
    deferred: bool = False
    copy_frames: np.ndarray | None = None

    def windows(self) -> list[np.ndarray]:
        """The non-silent windows' audio, as views into :attr:`audio`."""
        lengths = (self.ends - self.starts)[~self.silent]
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        return [self.audio[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def iter_windows(path: Path, spec: WindowSpec, report: DecodeReport,
                 info: AudioInfo, tap: Callable[[np.ndarray], None] | None = None,
                 source: AudioSource | None = None) -> Iterator[tuple[Window, float, bool]]:
    """Stream a file's windows with their RMS level (dBFS) and silence flag.

    ``tap`` sees every decoded block before the mix to mono (:func:`retrieval.audio.decode.stream`);
    ``source`` is the file already open (then ``path`` and ``info`` are not used to open it).

    Raises:
        AudioError: the file cannot be decoded.
    """
    for w in cut_stream(stream(path, spec.sample_rate, report=report, info=info, tap=tap, source=source),
                        spec.window_samples, spec.hop_samples):
        level = rms_db(w.audio)
        yield w, level, spec.silence_db is not None and level < spec.silence_db


def decode_failure(exc: BaseException) -> str:
    """The error-row text for an exception raised while decoding a file."""
    if isinstance(exc, AudioError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory while decoding"
    return f"decoder failed: {type(exc).__name__}: {exc}"


def scan_file(path: Path, spec: WindowSpec, out: DecodedFile,
              take: Callable[[int, np.ndarray], bool], source: AudioSource | None = None) -> bool:
    """The one window loop: decode ``path`` into ``out``'s window bounds, levels and silence flags.

    Each non-silent window is handed to ``take(index, audio)`` as it is cut (``index`` counts
    every window, silent ones included); ``take`` returning False stops the scan. The main
    process (streaming into the encoder queue) and the workers (collecting whole files) both
    run this loop, so a file gives the same windows whichever process cut it. The file is opened
    once (header and samples from one handle) unless ``source`` is given open; ``out.info`` is
    its header when None, and otherwise kept (the header a worker read before handing it back).

    Never raises for a bad file: the reason is in ``out.error``.

    Returns:
        False when ``take`` stopped the scan, else True (also when the file failed).
    """
    starts: list[int] = []
    ends: list[int] = []
    levels: list[float] = []
    silent: list[bool] = []
    complete = True
    opened = None
    try:
        if source is None:
            source = opened = open_audio(path)
        if out.info is None:
            out.info = source.info
        else:
            source.info = out.info
        copies = copy_stream(out.info) if spec.copies else None  # content-identity frames from the same decode
        for w, level, quiet in iter_windows(path, spec, out.report, out.info, copies.add if copies else None,
                                            source=source):
            starts.append(w.start)
            ends.append(w.end)
            levels.append(level)
            silent.append(quiet)
            if not quiet and not take(len(starts) - 1, w.audio):
                complete = False
                break
        if complete and copies is not None:
            out.copy_frames = copies.finish()
    except Exception as exc:  # a bad file is a row in the errors table, whatever it raised
        out.error = decode_failure(exc)
    finally:
        if opened is not None:
            opened.close()
    out.starts = np.array(starts, np.int64)
    out.ends = np.array(ends, np.int64)
    out.levels = np.array(levels, np.float64)
    out.silent = np.array(silent, bool)
    return complete


def decode_file(path: Path, spec: WindowSpec) -> DecodedFile:
    """Decode and cut one file, or mark it ``long`` when its windows exceed ``spec.long_samples``.

    Never raises for a bad file: the reason is in ``error``.
    """
    budget = spec.long_samples or LONG_FILE_SAMPLES
    out = DecodedFile()
    try:
        source = open_audio(path)  # header and samples from one handle
    except Exception as exc:
        out.error = decode_failure(exc)
        return out
    with source:
        out.info = source.info
        if spec.window_samples_of(out.info) > budget:
            return DecodedFile(info=out.info, long=True)
        chunks: list[np.ndarray] = []
        total = [0]

        def keep(_: int, audio: np.ndarray) -> bool:
            chunks.append(audio)
            total[0] += audio.size
            return total[0] <= budget  # over it: the header under-stated the length

        complete = scan_file(path, spec, out, keep, source=source)
    if not complete:
        return DecodedFile(info=out.info, long=True)
    if out.error is None:
        out.audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return out


def pool_decoded(d: DecodedFile, pooling: str) -> np.ndarray | None:
    """The file vector of an embedded file: its non-silent windows' vectors pooled, the one place
    ingest pools a file (in a worker or in the main process).

    Returns:
        ``(P,)`` float32, or None for a silent file, a failed window, or a pooling without
        file vectors.
    """
    from retrieval.pooling import pool_file

    if d.vectors is None or not len(d.vectors) or any(d.window_errors or ()):
        return None
    return pool_file(d.vectors, d.counts, pooling)


def copy_stream(info: AudioInfo) -> Any:
    """A :class:`retrieval.copies.features.CopyStream` for a file with this header (imported late)."""
    from retrieval.copies.features import CopyStream

    return CopyStream(info.sample_rate, info.channels)


def decode_task(paths: Sequence[str], spec: WindowSpec) -> list[DecodedFile]:
    """A worker's task: decode ``paths`` (and embed them when ``spec.embed_recipe`` is set).

    Once the task's windows reach ``spec.task_samples`` samples, the remaining files come
    back ``deferred`` (the pool submits them again).
    """
    keep_freed_memory()  # once per process: a worker's batches reuse the heap instead of faulting it in again
    results: list[DecodedFile] = []
    used = 0
    for p in paths:
        if used >= (spec.task_samples or TASK_SAMPLES):
            results.append(DecodedFile(deferred=True))
            continue
        d = decode_file(Path(p), spec)
        used += d.audio.size
        results.append(d)
    if spec.embed_recipe is not None:
        _embed_in_worker(results, spec)
    return results


_ENCODER: list[Any] = []  # [((recipe, device), encoder)]: the last encoder this worker built


def worker_encoder(spec: WindowSpec) -> Any:
    """The encoder of ``spec.embed_recipe`` on ``spec.device``, built once per process and kept."""
    from retrieval.configure import encoder_for

    recipe = spec.embed_recipe
    if not _ENCODER or _ENCODER[0][0] != (recipe, spec.device):
        _ENCODER[:] = [((recipe, spec.device), encoder_for(recipe, spec.device))]
    return _ENCODER[0][1]


def _embed_in_worker(results: list[DecodedFile], spec: WindowSpec) -> None:
    """Embed every non-silent window of ``results`` in one sorted pass; audio is dropped after."""
    from retrieval.embed import Batching, embed_arrays

    recipe = spec.embed_recipe
    encoder = worker_encoder(spec)
    live = [d for d in results if d.error is None and not d.long and not d.deferred]
    windows = [w for d in live for w in d.windows()]
    # (w, P) vectors, (w,) counts and (w,) errors at once; a failed window has a zero row and count 0
    vectors, counts, errors = embed_arrays(encoder, windows, recipe.pooling, Batching(spec.batch_size))
    pos = 0
    for d in live:
        k = int(np.count_nonzero(~d.silent))
        d.vectors = vectors[pos:pos + k].copy()  # its own small array: what is sent back is this file's
        d.counts = counts[pos:pos + k].copy()
        d.window_errors = errors[pos:pos + k]
        pos += k
        d.file_vector = pool_decoded(d, recipe.pooling)
        d.audio = np.zeros(0, np.float32)


def group_files(items: Iterable[T], size_of: Any, files_per_task: int = FILES_PER_TASK,
                task_bytes: int = TASK_BYTES) -> Iterator[list[T]]:
    """Consecutive items in groups of at most ``files_per_task`` and about ``task_bytes`` input bytes."""
    group: list[T] = []
    used = 0
    for item in items:
        size = max(int(size_of(item)), 0)
        if group and (len(group) >= files_per_task or used + size > task_bytes):
            yield group
            group, used = [], 0
        group.append(item)
        used += size
    if group:
        yield group


def _worker_init() -> None:
    """Runs once in each worker: one BLAS thread, and exit when the parent process dies."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    parent = mp.parent_process()
    if parent is not None:
        def watch() -> None:
            from multiprocessing.connection import wait

            wait([parent.sentinel])
            os._exit(1)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _warm() -> int:
    return os.getpid()


def _context() -> mp.context.BaseContext:
    """The fork server, preloading this module and the encoders workers may run; else spawn.

    The fork server starts with the first pool of the process and serves every later one,
    so its preload list is fixed: it holds every encoder whose registry entry sets
    ``embeds_in_workers`` (a second or two of imports, paid once, instead of once per worker).
    """
    if "forkserver" in mp.get_all_start_methods():
        from retrieval.encoders.registry import entry, worker_embedded

        ctx = mp.get_context("forkserver")
        encoders = [entry(n) for n in worker_embedded()]
        ctx.set_forkserver_preload([__name__, *(e.target.partition(":")[0] for e in encoders),
                                    *(m for e in encoders for m in e.worker_preload)])
        return ctx
    return mp.get_context("spawn")


def prestart() -> None:
    """Boot the fork server now, without waiting for it: its imports (a quarter of a second or
    more) then run on another core while the caller discovers and plans, instead of blocking
    the first :meth:`DecodePool.warm`. Does nothing where there is no fork server (spawn)."""
    if _context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


class DecodePool:
    """Worker processes that run :func:`decode_task`; results come back in submission order.

    Use as a context manager. The task function is looked up when a task is submitted, so
    a test may replace :func:`decode_task` with another module-level function.

    Args:
        workers: processes (>= 1).
        on_warning: called with a line when the workers cannot run at all and the main
            process takes over the decoding.
    """

    def __init__(self, workers: int, on_warning: Callable[[str], None] | None = None,
                 journal: Path | None = None) -> None:
        if workers < 1:
            raise InputError(f"a decode pool needs at least 1 worker; got {workers}")
        self.workers = workers
        #: where the paths of a group decoded in this process are written first (None: nowhere,
        #: and this process decodes nothing itself)
        self.journal = journal
        #: paths a run that died left in the journal: only the workers decode them
        self.suspects = _read_journal(journal)
        self.max_in_flight = IN_FLIGHT_PER_WORKER * workers
        self.restarts = 0
        self.on_warning = on_warning or (lambda line: log.warning(line))
        self._executor: ProcessPoolExecutor | None = None
        self._broken = False

    def __enter__(self) -> DecodePool:
        self._executor = self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self.journal is not None and exc[0] is None:  # a clean end: nothing was left mid-decode
            self.journal.unlink(missing_ok=True)

    def warm(self) -> None:
        """Start every worker now (in the background), so they are ready when work arrives."""
        assert self._executor is not None, "use DecodePool as a context manager"
        for _ in range(self.workers):
            self._executor.submit(_warm)

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=_context(), initializer=_worker_init)

    def _restart(self) -> None:
        assert self._executor is not None
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._executor = self._start()
        self._broken = False
        self.restarts += 1

    def _usable(self) -> str | None:
        """None if a fresh pool runs a trivial task; else why not."""
        if self._broken:
            self._restart()
        try:
            self._submit_fn(_warm).result(timeout=HEALTH_TIMEOUT_S)
            return None
        except Exception as exc:  # whatever stops a worker from starting
            self._broken = True
            return f"{type(exc).__name__}: {exc}"

    def _submit_fn(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Submit; on a pool that cannot take work, a future holding that failure."""
        assert self._executor is not None, "use DecodePool as a context manager"
        try:
            return self._executor.submit(fn, *args)
        except Exception as exc:  # BrokenProcessPool after a worker died, or the fork server failing
            failed: Future = Future()
            failed.set_exception(exc)
            return failed

    def _submit(self, group: list[tuple[str, T]], spec: WindowSpec) -> Future:
        return self._submit_fn(_task_function(), [p for p, _ in group], spec)

    def results(self, groups: Iterable[list[tuple[str, T]]],
                spec: WindowSpec) -> Iterator[tuple[T, DecodedFile | None]]:
        """Decode each group's ``(path, item)`` pairs; yield ``(item, DecodedFile)`` in input order.

        ``None`` instead of a :class:`DecodedFile` means the workers cannot run at all (a worker
        that dies before doing anything, a fork server that fails): the caller decodes that
        file itself, and every later one.
        """
        source = iter(groups)
        pending: deque[tuple[list[tuple[str, T]], Future]] = deque()
        here = _decodes_here(spec) and self.journal is not None
        local: set[Future] = set()  # futures of groups this process decoded (not the workers' to bound)

        def fill() -> None:
            while len(pending) - sum(f in local for _, f in pending) < self.max_in_flight:
                group = next(source, None)
                if group is None:
                    return
                pending.append((group, self._submit(group, spec)))

        def help_out() -> bool:
            """Decode the next group in this process while the head of the line is not ready."""
            if not here or pending[0][1].done() or len(local) >= self.max_in_flight:
                return False
            group = next(source, None)
            if group is None:
                return False
            if self.suspects.intersection(p for p, _ in group):  # it may be what stopped a run here
                pending.append((group, self._submit(group, spec)))
                return True
            _write_journal(self.journal, [p for p, _ in group])
            done = _run_here(group, spec)
            _write_journal(self.journal, [])
            local.add(done)
            pending.append((group, done))
            return True

        def hand_back(pairs: list[tuple[str, T]], why: str) -> Iterator[tuple[T, None]]:
            self.on_warning(f"decoding workers cannot run ({why}); decoding in the main process instead")
            for _, item in pairs:
                yield item, None
            for group in source:
                for _, item in group:
                    yield item, None

        fill()
        while pending:
            if help_out():
                continue
            group, future = pending[0]
            try:
                decoded = self._wait(future)
            except Exception as exc:
                # A dead worker fails every future of its pool (BrokenProcessPool); any other
                # failure of a task is not about one file either. Re-run the files in flight
                # one at a time to find the culprit, if there is one.
                suspects = [pair for g, _ in pending for pair in g] if isinstance(exc, BrokenProcessPool) else group
                self._broken = isinstance(exc, BrokenProcessPool)
                if self._broken:  # groups decoded here go too: re-run alone, they give the same files
                    pending.clear()
                    local.clear()
                else:
                    pending.popleft()
                    local.discard(future)
                log.warning("a decoding task failed (%s: %s); re-running %d files one at a time",
                            type(exc).__name__, exc, len(suspects))
                for k, (path, item) in enumerate(suspects):
                    d = self._alone(path, spec)
                    if isinstance(d, str):
                        yield from hand_back([*suspects[k:], *(p for g, _ in pending for p in g)], d)
                        return
                    yield item, d
                fill()
                continue
            pending.popleft()
            local.discard(future)
            rest = [pair for pair, d in zip(group, decoded) if d.deferred]
            if rest:  # next in line, ahead of everything already submitted
                pending.appendleft((rest, self._submit(rest, spec)))
            fill()
            for (_, item), d in zip(group, decoded):
                if not d.deferred:  # deferred files are a suffix of the group
                    yield item, d

    def _alone(self, path: str, spec: WindowSpec) -> DecodedFile | str:
        """Decode one file in its own task on a pool known to work.

        Returns its result, an error row if its task fails (a worker that dies on it), or
        the reason the pool cannot run at all (a ``str``).
        """
        why = self._usable()
        if why is not None:
            return why
        try:
            return self._wait(self._submit([(path, None)], spec))[0]
        except _Hung as exc:
            return DecodedFile(error=str(exc))
        except BrokenProcessPool:
            self._broken = True
            return DecodedFile(error="the decoding process died while reading this file (crashed or was killed)")
        except Exception as exc:
            return DecodedFile(error=decode_failure(exc))


    def _wait(self, future: Future) -> Any:
        """``future``'s result, waiting at most :data:`TASK_TIMEOUT_S`.

        Raises:
            _Hung: the task did not finish in time; the pool's workers were killed, so every
                other future of the pool fails with ``BrokenProcessPool``.
        """
        limit = TASK_TIMEOUT_S
        try:
            return future.result(timeout=limit)
        except TaskTimeout:
            self._kill_workers()
            self._broken = True
            raise _Hung(f"decoding did not finish within {limit:g} s (the decoder hung on this file); "
                        "its worker was stopped and the file skipped") from None

    def _kill_workers(self) -> None:
        """Kill every worker process of the pool (concurrent.futures has no public way to)."""
        processes = getattr(self._executor, "_processes", None) or {}
        for proc in list(processes.values()):
            proc.kill()
        log.warning("a decoding task hung for over %g s; its workers were stopped", TASK_TIMEOUT_S)


def _decodes_here(spec: WindowSpec) -> bool:
    """Whether the main process decodes (and embeds) groups itself while it waits on the workers:
    for encoders the workers run (``spec.embed_recipe``: numpy only, bit-exact in any process),
    with the real task function (a test's stand-in runs in the workers only)."""
    return spec.embed_recipe is not None and _task_function() is decode_task


def _read_journal(journal: Path | None) -> set[str]:
    """Paths a run that died left in ``journal`` (empty when there is none)."""
    try:
        return set(filter(None, journal.read_text(encoding="utf-8").splitlines())) if journal else set()
    except (OSError, UnicodeDecodeError):
        return set()


def _write_journal(journal: Path | None, paths: Sequence[str]) -> None:
    """Replace ``journal``'s content with ``paths``, one per line (no fsync: it must outlive this
    process crashing, not the machine)."""
    if journal is not None:
        journal.write_text("".join(f"{p}\n" for p in paths), encoding="utf-8", errors="surrogateescape")


def _run_here(group: list[tuple[str, Any]], spec: WindowSpec) -> Future:
    """:func:`decode_task` on ``group`` in this process, as a finished future (its failure, if it raises)."""
    done: Future = Future()
    try:
        done.set_result(decode_task([p for p, _ in group], spec))
    except Exception as exc:  # handled as a worker's failed task: its files are re-run one at a time
        done.set_exception(exc)
    return done


class _Hung(BrokenProcessPool):
    """A task outlived :data:`TASK_TIMEOUT_S` and its pool's workers were killed."""


def _task_function() -> Any:
    return globals()["decode_task"]
