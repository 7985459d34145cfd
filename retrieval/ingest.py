"""Orchestration only: discover -> plan -> decode -> embed -> pool -> write.

Ingest is incremental and crash-safe:

* files whose size and mtime are unchanged are skipped without reading them;
* a file with new bytes but a known content hash is a move (its row is re-pointed)
  or a copy (its vectors are duplicated), never re-embedded;
* files gone from disk lose their rows and vectors; files under a folder that cannot be
  listed are not gone: the folder gets an error row and its files keep theirs;
* new and changed files are embedded and committed every ``commit_every`` files, each
  file in one transaction with all its vectors, so ``kill -9`` loses at most one batch
  and a re-run resumes with no duplicates;
* at the end the FAISS indexes follow DuckDB (:meth:`Store.sync_vectors`): updated in
  place while the window vectors added plus removed since the post-processing was fitted
  stay within :data:`~retrieval.store.store.REFIT_CHANGE_SHARE` of those it was fitted on,
  otherwise (or with ``refit``) the post-processing is refitted and both indexes rebuilt.
  A run that dies first leaves them to the next open or run, which repairs them.

Determinism: an in-place update keeps the fitted transform, so the search vectors of rows
already indexed do not change and new rows go through the same transform; a refit (past
the threshold, or asked for) changes every search vector, old rows' included. Results for
a given DuckDB state therefore depend on when the post-processing was last fitted, which
``retrieve info`` shows ("postprocess fit").

Bad input never stops the run: each failure becomes a row in ``errors`` and a
warning line, and the summary counts it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from retrieval import pipeline
from retrieval.audio.decode import AudioInfo, DecodeReport, probe, truncation
from retrieval.audio.discover import FoundFile, discover, under
from retrieval.audio.paths import to_stored
from retrieval.configure import Choices, resolve
from retrieval.embed import Batching, embed_each, single_threaded_blas
from retrieval.encoders.base import Encoder
from retrieval.errors import InputError
from retrieval.labels import folder_label, read_labels_csv
from retrieval.pipeline import (WORKER_EMBEDDED, DecodedFile, DecodePool, WindowSpec, decode_failure,
                                group_files, iter_windows)
from retrieval.pooling import pool_file
from retrieval.recipe import Recipe
from retrieval.store import ErrorRow, FileRow, Store

log = logging.getLogger(__name__)

#: Bytes read per step while hashing file contents.
HASH_CHUNK = 1 << 20


@dataclass
class IngestSummary:
    """What one ``retrieve index`` run did. ``segments`` counts window vectors written."""

    files_indexed: int = 0
    files_unchanged: int = 0
    files_moved: int = 0
    files_removed: int = 0
    files_failed: int = 0
    files_silent: int = 0
    warnings: int = 0
    segments: int = 0
    audio_seconds: float = 0.0
    seconds: float = 0.0
    index: str = ""
    vectors_update: str = ""  # what Store.sync_vectors did to FAISS, in words

    @property
    def realtime_factor(self) -> float:
        return self.audio_seconds / self.seconds if self.seconds else 0.0

    def to_json(self) -> str:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        d["audio_seconds"] = round(self.audio_seconds, 3)
        d["realtime_factor"] = round(self.realtime_factor, 1)
        return json.dumps(d)


@dataclass
class IngestOptions:
    """Run settings that do not change vectors.

    Attributes:
        labels_csv: CSV of metadata to attach (kept in the manifest and re-applied on later runs).
        commit_every: files per transaction.
        batch_size: windows per encoder call.
        progress: show a progress bar on stderr.
        workers: decoding processes beside the encoder (0 decodes in the main process);
            see :mod:`retrieval.pipeline`. Vectors and rows do not depend on it.
        index_type: FAISS index kind for search (``auto``, ``flat``, ``hnsw``, ``ivfpq``);
            None keeps the index's recorded kind (``auto`` for a new index).
        refit: refit the post-processing and rebuild FAISS even when the change since the
            last fit is small enough to update the indexes in place.
        on_warning: called with each warning line (the CLI prints them).
    """

    labels_csv: Path | None = None
    commit_every: int = 64
    batch_size: int = 16
    progress: bool = False
    workers: int = 0
    index_type: str | None = None
    refit: bool = False
    on_warning: Callable[[str], None] | None = None


def check_device(device: str) -> None:
    """Refuse a torch device this machine does not have, before any model is loaded.

    Raises:
        InputError: ``cuda`` without a usable GPU (or an index past the last one), or an
            unknown device string; the message says what is available.
    """
    if device == "cpu":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"unknown device {device!r} ({exc}); pass --device cpu or --device cuda") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise InputError(f"--device {device} was requested but {why} (torch {torch.__version__}); "
                             "pass --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise InputError(f"--device {device}: this machine has {count} CUDA device(s), "
                             f"cuda:0..cuda:{count - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {device} was requested but MPS is not available here; pass --device cpu")


def content_hash(path: Path) -> str:
    """blake2b-128 of the file's bytes, hex.

    Opened without blocking and checked to be a regular file, so a FIFO or a device that
    replaced the file since discovery raises instead of blocking (or reading forever).

    Raises:
        OSError: the file cannot be opened or read, or is not a regular file.
    """
    h = hashlib.blake2b(digest_size=16)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class _Plan:
    unchanged: int = 0
    to_embed: list[tuple[FoundFile, str, int | None]] = field(default_factory=list)  # (file, hash, old id)
    moved: list[tuple[int, FoundFile]] = field(default_factory=list)
    copies: list[tuple[int, FoundFile]] = field(default_factory=list)
    removed: list[tuple[int, str]] = field(default_factory=list)
    touched: list[tuple[int, FoundFile]] = field(default_factory=list)  # same bytes, new mtime
    errors: list[ErrorRow] = field(default_factory=list)


_NOT_POOLED = object()


class _FileJob:
    """A file being embedded: its windows' bounds, levels and (once embedded) vectors."""

    def __init__(self, found: FoundFile, digest: str, old_id: int | None, info: AudioInfo) -> None:
        self.found, self.digest, self.old_id, self.info = found, digest, old_id, info
        self.report = DecodeReport()
        # lists while this process streams the file; a worker's arrays when it decoded it
        self.starts: list[int] | np.ndarray = []
        self.ends: list[int] | np.ndarray = []
        self.levels: list[float] | np.ndarray = []
        self.silent: list[bool] | np.ndarray = []
        self.vectors: dict[int, np.ndarray] = {}
        self.counts: dict[int, int] = {}
        self.file_vector: np.ndarray | None | object = _NOT_POOLED  # pooled by a worker, when it embedded
        self.pending = 0  # windows queued for the encoder
        self.decoded = False
        self.error: str | None = None


def ingest(corpus: Path, index_dir: Path, choices: Choices | None = None,
           options: IngestOptions | None = None) -> IngestSummary:
    """Index (or update the index of) every audio file under ``corpus`` into ``index_dir``.

    FAISS then follows DuckDB in place, or by a refit and rebuild (see the module docstring
    for when, and for what each does to the search vectors of rows already indexed);
    :attr:`IngestSummary.vectors_update` says which happened.
    """
    t0 = time.perf_counter()
    corpus = Path(corpus)
    if not corpus.exists():
        raise InputError(f"corpus {corpus} does not exist")
    choices = choices or Choices()
    options = options or IngestOptions()
    if options.workers < 0:
        raise InputError(f"workers must be 0 (decode in this process) or more; got {options.workers}")
    check_device(choices.device)
    summary = IngestSummary(index=str(index_dir))
    warn = options.on_warning or (lambda line: log.warning(line))
    with Store.create(Path(index_dir)) as store, ExitStack() as stack:
        stored = store.recipe
        plan = _plan(store, list(discover(corpus)))  # reads only: nothing is written before the recipe check
        pool = _start_pool(stack, options.workers, warn) if plan.to_embed else None
        encoder, recipe = resolve(choices, stored)
        store.db.begin()
        store.set_recipe(recipe)
        if options.index_type is not None:
            store.set_index_type(options.index_type)  # FAISS kind for this and later builds (retrieve info)
        old_root = store.db.get("corpus_root")
        root = to_stored(str(corpus.resolve()))  # any bytes, as valid UTF-8 (retrieval.audio.paths)
        store.db.set("corpus_root", root)
        if options.labels_csv is not None:
            store.db.set("labels_csv", str(Path(options.labels_csv).resolve()))
        store.db.commit()
        if old_root and old_root != root:
            warn(f"corpus root changed from {old_root} to {root}; paths are matched relative to it")

        summary.files_unchanged = plan.unchanged
        _apply_plan(store, plan, summary, warn)
        _embed_all(store, encoder, recipe, plan.to_embed, options, summary, warn, pool)
        _attach_labels(store, warn)
        # One BLAS thread: a refit's whitening SVD of FSDD's vectors takes 0.1 s so, 1-3 s with
        # OpenBLAS's threads on a busy 2-core machine (measured; see retrieval.embed).
        with single_threaded_blas():
            summary.vectors_update = store.sync_vectors(refit=options.refit)
        store.db.checkpoint()
    summary.seconds = time.perf_counter() - t0
    return summary


def _start_pool(stack: ExitStack, workers: int, warn: Callable[[str], None]) -> DecodePool | None:
    """Start the decoding workers now, so they boot while the encoder loads."""
    if workers <= 0:
        return None
    pool = stack.enter_context(DecodePool(workers, on_warning=warn))
    pool.warm()
    return pool


def _plan(store: Store, found: list[FoundFile]) -> _Plan:
    """Sort every discovered file into unchanged / moved / copied / to embed, and find removals."""
    plan = _Plan()
    known = store.db.known_files()
    present = {f.rel_path for f in found if not f.folder}
    # Files under a folder that cannot be listed are unknown, not gone: neither removed nor moved.
    unlisted = [f.rel_path for f in found if f.folder and f.error is not None]
    present |= {p for p in known if any(under(p, d) for d in unlisted)}
    missing_by_hash: dict[str, tuple[int, str]] = {
        v[3]: (v[0], p) for p, v in known.items() if p not in present and v[3]
    }
    present_by_hash = {v[3]: v[0] for p, v in known.items() if p in present and v[3]}
    for f in found:
        if f.note is not None:
            plan.errors.append(ErrorRow(f.rel_path, "warning", "discover", f.note, f.size, f.mtime))
        if f.error is not None:
            plan.errors.append(ErrorRow(f.rel_path, "error", "discover", f.error, f.size, f.mtime))
            continue
        if f.folder:
            continue
        k = known.get(f.rel_path)
        if k is not None and k[1] == f.size and k[2] == f.mtime:
            plan.unchanged += 1
            continue
        try:
            digest = content_hash(f.path)
        except OSError as exc:
            plan.errors.append(ErrorRow(f.rel_path, "error", "read", f"cannot read: {exc.strerror or exc}",
                                        f.size, f.mtime))
            continue
        if k is not None and k[3] == digest:
            plan.touched.append((k[0], f))
            plan.unchanged += 1
        elif k is None and digest in missing_by_hash:
            file_id, _ = missing_by_hash.pop(digest)
            plan.moved.append((file_id, f))
        elif k is None and digest in present_by_hash:
            plan.copies.append((present_by_hash[digest], f))
        else:
            plan.to_embed.append((f, digest, k[0] if k else None))
    errored = {e.path for e in plan.errors}
    claimed = {fid for fid, _ in plan.moved}
    plan.removed = [(v[0], p) for p, v in known.items()
                    if p not in present and p not in errored and v[0] not in claimed]
    return plan


def _apply_plan(store: Store, plan: _Plan, summary: IngestSummary, warn: Callable[[str], None]) -> None:
    """Removals, moves, copies and discovery errors, in one transaction."""
    db = store.db
    db.begin()
    db.delete_files(fid for fid, _ in plan.removed)
    db.clear_discovery_errors()  # discovery runs in full each time: its rows are replaced, not kept
    db.clear_errors([p for _, p in plan.removed] + [e.path for e in plan.errors])
    for fid, f in plan.touched + plan.moved:  # same bytes: new mtime, or a new path too
        db.update_file_location(fid, f.rel_path, f.size, f.mtime, folder_label(f.rel_path))
    for src, f in plan.copies:
        summary.segments += db.copy_file(src, f.rel_path, f.size, f.mtime, folder_label(f.rel_path))
    db.clear_errors([f.rel_path for _, f in plan.moved + plan.copies])
    db.add_errors(plan.errors)
    if plan.removed or plan.moved or plan.copies:
        db.bump_generation()
    db.commit()
    for e in plan.errors:
        warn(f"skipped {e.path}: {e.reason}" if e.severity == "error" else f"{e.path}: {e.reason}")
    summary.files_removed = len(plan.removed)
    summary.files_moved = len(plan.moved)
    summary.files_indexed += len(plan.copies)
    summary.files_failed += sum(e.severity == "error" for e in plan.errors)
    summary.warnings += sum(e.severity == "warning" for e in plan.errors)


def _embed_all(store: Store, encoder: Encoder, recipe: Recipe, todo: list[tuple[FoundFile, str, int | None]],
               options: IngestOptions, summary: IngestSummary, warn: Callable[[str], None],
               pool: DecodePool | None = None) -> None:
    """Decode, embed and commit every file in ``todo``, ``commit_every`` files per transaction.

    Files are consumed in ``todo`` order whatever decoded them, and the encoder queue is
    flushed at the same points, so ``--workers N`` writes the same rows and the same
    vectors as ``--workers 0``.
    """
    open_jobs: list[_FileJob] = []  # decoded, not yet committed
    queue: list[tuple[_FileJob, int, np.ndarray]] = []
    queued = [0]  # samples in the queue
    batching = Batching(options.batch_size)
    bar = _progress(len(todo), options.progress)
    embed_in_workers = pool is not None and recipe.encoder in WORKER_EMBEDDED
    spec = WindowSpec(recipe.sample_rate, recipe.window_samples, recipe.hop_samples, recipe.silence_db,
                      embed_recipe=recipe if embed_in_workers else None, batch_size=options.batch_size,
                      long_samples=pipeline.LONG_FILE_SAMPLES, task_samples=pipeline.TASK_SAMPLES)

    def flush() -> None:
        if queue:
            _embed_queue(encoder, recipe.pooling, queue, batching)
            for job, _, _ in queue:
                job.pending -= 1
            queue.clear()
            queued[0] = 0

    def enqueue(job: _FileJob, index: int, audio: np.ndarray) -> None:
        job.pending += 1
        queue.append((job, index, audio))
        queued[0] += audio.size
        if len(queue) >= QUEUE_BATCHES * options.batch_size or queued[0] >= QUEUE_SAMPLES:
            flush()

    def commit() -> None:
        flush()
        if open_jobs:
            _commit(store, recipe, open_jobs, summary, warn)
            bar.update(len(open_jobs))
            open_jobs.clear()

    with _torch_threads():
        for (f, digest, old_id), pre in _decoded(todo, spec, pool):
            job = _FileJob(f, digest, old_id, pre.info if pre is not None and pre.info else _NO_INFO)
            if pre is None or pre.long:
                _stream_into(job, spec, enqueue)
            else:
                _take(job, pre, enqueue)
            job.decoded = True
            open_jobs.append(job)
            if len(open_jobs) >= options.commit_every:
                commit()
        commit()
    bar.close()
    if batching.halvings:
        warn(f"the encoder ran out of memory; batch size lowered from {options.batch_size} to {batching.size}")


#: The encoder queue is flushed at this many batches of windows ...
QUEUE_BATCHES = 8
#: ... or this many queued samples (64 MB of float32), whichever comes first.
QUEUE_SAMPLES = 16_000_000
_NO_INFO = AudioInfo(0, 0, 0, "unknown")


def _decoded(todo: list[tuple[FoundFile, str, int | None]], spec: WindowSpec,
             pool: DecodePool | None) -> Iterator[tuple[tuple[FoundFile, str, int | None], DecodedFile | None]]:
    """``(entry, DecodedFile)`` per file in ``todo`` order; None asks the main process to stream it."""
    if pool is None:
        return ((entry, None) for entry in todo)
    groups = group_files(((str(e[0].path), e) for e in todo), lambda pair: pair[1][0].size)
    return pool.results(groups, spec)


def _stream_into(job: _FileJob, spec: WindowSpec, enqueue: Callable[[_FileJob, int, np.ndarray], None]) -> None:
    """Decode ``job``'s file here, block by block, queueing its windows as they come."""
    try:
        if job.info is _NO_INFO:
            job.info = probe(job.found.path)
        windows = iter_windows(job.found.path, spec, job.report, job.info)
    except Exception as exc:  # a bad file is an error row, whatever it raised
        job.error = decode_failure(exc)
        return
    while True:
        try:
            item = next(windows, None)
        except Exception as exc:
            job.error = job.error or decode_failure(exc)
            return
        if item is None:
            return
        w, level, silent = item
        job.starts.append(w.start)
        job.ends.append(w.end)
        job.levels.append(level)
        job.silent.append(silent)
        if not silent:
            enqueue(job, len(job.starts) - 1, w.audio)


def _take(job: _FileJob, pre: DecodedFile, enqueue: Callable[[_FileJob, int, np.ndarray], None]) -> None:
    """Adopt what a worker decoded (and, for worker-embedded encoders, embedded)."""
    job.report = pre.report
    if pre.error is not None:
        job.error = pre.error
        return
    job.starts, job.ends, job.levels, job.silent = pre.starts, pre.ends, pre.levels, pre.silent
    loud = np.flatnonzero(~pre.silent)
    if pre.vectors is not None:
        for k, idx in enumerate(loud.tolist()):
            err = pre.window_errors[k] if pre.window_errors else None
            if err is not None:
                job.error = err
            else:
                job.vectors[idx] = pre.vectors[k]
                job.counts[idx] = int(pre.counts[k])
        job.file_vector = pre.file_vector
        return
    for idx, audio in zip(loud.tolist(), pre.windows()):
        enqueue(job, idx, audio)


@contextmanager
def _torch_threads() -> Iterator[None]:
    """Hold torch's intra-op threads at :func:`torch_threads_for` while embedding; restore them after.

    Does nothing when torch is not loaded (the log-mel baseline never loads it).
    """
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(torch_threads_for(before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torch_threads_for(current: int, cores: int | None = None) -> int:
    """torch intra-op threads during ingest: the current setting, capped at the cores this process may use.

    torch's default counts the host's cores, which in a container or under ``taskset`` can
    exceed the cores the process may run on; oversubscribed OpenMP threads stall each other.
    The count does not depend on ``--workers``, for two reasons measured on 2 cores
    (``docs/bench_ingest.md``): the decode workers of a model encoder are idle over 99 % of
    the time, so giving up a torch thread for one costs far more than it saves (wav2vec2-base:
    6.5x realtime with one worker and 2 threads, 4.4x with 1 thread); and the thread count
    changes float rounding (BEATs: up to 5e-6), so tying it to ``--workers`` would make the
    vectors depend on it. On a machine crowded by other jobs fewer threads are faster (there,
    1 thread ran 2-6x faster than 2): set ``OMP_NUM_THREADS`` or ``torch.set_num_threads``.
    """
    cores = cores or _usable_cores()
    return max(1, min(current, cores))


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _embed_queue(encoder: Encoder, pooling: str, queue: list[tuple[_FileJob, int, np.ndarray]],
                 batching: Batching) -> None:
    """Embed queued windows into their jobs; a batch that fails is retried window by window."""
    live = [(j, i, a) for j, i, a in queue if j.error is None]
    results = embed_each(encoder, [a for _, _, a in live], pooling, batching)
    for (job, idx, _), (vec, count, err) in zip(live, results):
        if err is not None:
            job.error = err
        else:
            job.vectors[idx] = vec
            job.counts[idx] = int(count)


def _commit(store: Store, recipe: Recipe, jobs: list[_FileJob], summary: IngestSummary,
            warn: Callable[[str], None]) -> None:
    rows: list[FileRow] = []
    errors: list[ErrorRow] = []
    replaced: list[int] = []
    for job in jobs:
        f = job.found
        if job.old_id is not None:
            replaced.append(job.old_id)
        if job.error is None and job.report.out_samples == 0:
            job.error = "holds no audio samples"
        cut = truncation(job.info, job.report) if job.error is None else None
        if cut is not None and cut[0] == "error":
            job.error = cut[1]
        if job.error is not None:
            errors.append(ErrorRow(f.rel_path, "error", "decode", job.error, f.size, f.mtime))
            summary.files_failed += 1
            warn(f"skipped {f.rel_path}: {job.error}")
            continue
        row = _file_row(job, recipe)
        if cut is not None:  # a warning: indexed as what it holds
            errors.append(ErrorRow(f.rel_path, "warning", "decode", cut[1], f.size, f.mtime))
            warn(f"{f.rel_path}: {cut[1]}")
        if job.report.nonfinite:
            reason = f"{job.report.nonfinite} NaN/Inf samples replaced by 0"
            errors.append(ErrorRow(f.rel_path, "warning", "decode", reason, f.size, f.mtime))
            warn(f"{f.rel_path}: {reason}")
        if row.status == "silent":
            reason = f"silent throughout (loudest window {max(job.levels):.1f} dBFS < {recipe.silence_db} dBFS)"
            errors.append(ErrorRow(f.rel_path, "warning", "level", reason, f.size, f.mtime))
            warn(f"{f.rel_path}: {reason}")
            summary.files_silent += 1
        else:
            summary.files_indexed += 1
        summary.audio_seconds += row.n_samples / recipe.sample_rate
        rows.append(row)
    summary.warnings += sum(e.severity == "warning" for e in errors)
    db = store.db
    db.begin()
    try:
        db.delete_files(replaced)
        db.clear_errors([j.found.rel_path for j in jobs])
        _, n_vectors = db.insert_files(rows, recipe.dim)
        db.add_errors(errors)
        db.bump_generation()
        db.commit()
    except BaseException:
        db.rollback()
        raise
    summary.segments += n_vectors - sum(r.file_vector is not None for r in rows)


def _file_row(job: _FileJob, recipe: Recipe) -> FileRow:
    w = len(job.starts)
    silent = np.array(job.silent, bool)
    vectors = np.zeros((w, recipe.dim), np.float32)
    counts = np.zeros(w, np.int64)
    for i, v in job.vectors.items():
        vectors[i] = v
        counts[i] = job.counts[i]
    if job.file_vector is not _NOT_POOLED:
        file_vector = job.file_vector
    else:
        file_vector = pool_file(vectors[~silent], counts[~silent], recipe.pooling) if (~silent).any() else None
    f = job.found
    return FileRow(
        path=f.rel_path, size=f.size, mtime=f.mtime, content_hash=job.digest,
        duration_s=job.info.duration_s, sample_rate=job.info.sample_rate, channels=job.info.channels,
        format=job.info.format, n_samples=job.report.out_samples,
        status="silent" if silent.all() else "ok", label=folder_label(f.rel_path),
        starts=np.array(job.starts, np.int64), ends=np.array(job.ends, np.int64),
        rms_db=np.array(job.levels, np.float32), silent=silent, n_frames=counts,
        window_vectors=vectors, file_vector=file_vector,
    )


def _attach_labels(store: Store, warn: Callable[[str], None]) -> None:
    csv = store.db.get("labels_csv")
    if not csv:
        return
    if not Path(csv).is_file():
        warn(f"labels CSV {csv} recorded with this index is gone; metadata left as it was")
        return
    table = read_labels_csv(Path(csv))
    store.db.begin()
    matched = store.db.attach_metadata(table)
    store.db.commit()
    if matched < table.num_rows:
        warn(f"{table.num_rows - matched} of {table.num_rows} rows in {Path(csv).name} match no indexed file")


def _progress(total: int, enabled: bool):  # -> tqdm-like
    from tqdm import tqdm

    return tqdm(total=total, unit="file", disable=not enabled or total == 0, dynamic_ncols=True,
                desc="embedding", smoothing=0.1)
