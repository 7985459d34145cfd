"""Orchestration only: discover -> plan -> decode -> embed -> pool -> write.

Ingest is incremental and crash-safe:

* files whose size and mtime are unchanged are skipped without reading them;
* a file with new bytes but a known content hash is a move (its row is re-pointed)
  or a copy (its vectors are duplicated), never re-embedded;
* files gone from disk lose their rows and vectors;
* new and changed files are embedded and committed every ``commit_every`` files, each
  file in one transaction with all its vectors, so ``kill -9`` loses at most one batch
  and a re-run resumes with no duplicates. FAISS is rebuilt from DuckDB at the end (or
  on the next open, if the run died first).

Bad input never stops the run: each failure becomes a row in ``errors`` and a
warning line, and the summary counts it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from retrieval.audio.decode import AudioInfo, DecodeReport, probe, stream
from retrieval.audio.discover import FoundFile, discover
from retrieval.audio.windows import cut_stream, rms_db
from retrieval.configure import Choices, resolve
from retrieval.embed import embed_windows
from retrieval.encoders.base import Encoder
from retrieval.errors import AudioError, InputError, RetrievalError
from retrieval.labels import folder_label, read_labels_csv
from retrieval.pooling import pool_file
from retrieval.recipe import Recipe
from retrieval.store import LEVELS, ErrorRow, FileRow, Store

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
        workers: decoding processes beside the encoder (0 decodes in the main process).
        index_type: FAISS index kind for search (``auto``, ``flat``, ``hnsw``, ``ivfpq``).
        on_warning: called with each warning line (the CLI prints them).
    """

    labels_csv: Path | None = None
    commit_every: int = 64
    batch_size: int = 16
    progress: bool = False
    workers: int = 0
    index_type: str = "auto"
    on_warning: Callable[[str], None] | None = None


def content_hash(path: Path) -> str:
    """blake2b-128 of the file's bytes, hex."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
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


class _FileJob:
    """A file being embedded: its windows' bounds, levels and (once embedded) vectors."""

    def __init__(self, found: FoundFile, digest: str, old_id: int | None, info: AudioInfo) -> None:
        self.found, self.digest, self.old_id, self.info = found, digest, old_id, info
        self.report = DecodeReport()
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.levels: list[float] = []
        self.silent: list[bool] = []
        self.vectors: dict[int, np.ndarray] = {}
        self.counts: dict[int, int] = {}
        self.pending = 0  # windows queued for the encoder
        self.decoded = False
        self.error: str | None = None


def ingest(corpus: Path, index_dir: Path, choices: Choices | None = None,
           options: IngestOptions | None = None) -> IngestSummary:
    """Index (or update the index of) every audio file under ``corpus`` into ``index_dir``."""
    t0 = time.perf_counter()
    corpus = Path(corpus)
    if not corpus.exists():
        raise InputError(f"corpus {corpus} does not exist")
    choices = choices or Choices()
    options = options or IngestOptions()
    summary = IngestSummary(index=str(index_dir))
    warn = options.on_warning or (lambda line: log.warning(line))
    with Store.create(Path(index_dir)) as store:
        encoder, recipe = resolve(choices, store.recipe)
        store.db.begin()
        store.set_recipe(recipe)
        old_root = store.db.get("corpus_root")
        store.db.set("corpus_root", str(corpus.resolve()))
        if options.labels_csv is not None:
            store.db.set("labels_csv", str(Path(options.labels_csv).resolve()))
        store.db.commit()
        if old_root and old_root != str(corpus.resolve()):
            warn(f"corpus root changed from {old_root} to {corpus.resolve()}; paths are matched relative to it")

        plan = _plan(store, list(discover(corpus)))
        summary.files_unchanged = plan.unchanged
        _apply_plan(store, plan, summary, warn)
        _embed_all(store, encoder, recipe, plan.to_embed, options, summary, warn)
        _attach_labels(store, warn)
        if store.db.get("generation") != store.db.get("fitted_generation"):
            store.db.begin()
            store.refit_postprocess()
            store.db.set("fitted_generation", store.db.get("generation") or "0")
            store.db.commit()
            store.rebuild_all()
        else:
            for level in LEVELS:
                store.vectors(level)  # repairs a stale FAISS file left by a killed run
        store.db.checkpoint()
    summary.seconds = time.perf_counter() - t0
    return summary


def _plan(store: Store, found: list[FoundFile]) -> _Plan:
    """Sort every discovered file into unchanged / moved / copied / to embed, and find removals."""
    plan = _Plan()
    known = store.db.known_files()
    present = {f.rel_path for f in found}
    missing_by_hash: dict[str, tuple[int, str]] = {
        v[3]: (v[0], p) for p, v in known.items() if p not in present and v[3]
    }
    present_by_hash = {v[3]: v[0] for p, v in known.items() if p in present and v[3]}
    for f in found:
        if f.error is not None:
            plan.errors.append(ErrorRow(f.rel_path, "error", "discover", f.error, f.size, f.mtime))
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
    db.clear_errors([p for _, p in plan.removed] + [e.path for e in plan.errors])
    for fid, f in plan.touched:
        db.update_file_location(fid, f.rel_path, f.size, f.mtime, folder_label(f.rel_path))
    for fid, f in plan.moved:
        db.update_file_location(fid, f.rel_path, f.size, f.mtime, folder_label(f.rel_path))
    for src, f in plan.copies:
        summary.segments += db.copy_file(src, f.rel_path, f.size, f.mtime, folder_label(f.rel_path))
    db.clear_errors([f.rel_path for _, f in plan.moved + plan.copies])
    db.add_errors(plan.errors)
    if plan.removed or plan.moved or plan.copies:
        db.bump_generation()
    db.commit()
    for e in plan.errors:
        warn(f"skipped {e.path}: {e.reason}")
    summary.files_removed = len(plan.removed)
    summary.files_moved = len(plan.moved)
    summary.files_indexed += len(plan.copies)
    summary.files_failed += len(plan.errors)


def _embed_all(store: Store, encoder: Encoder, recipe: Recipe, todo: list[tuple[FoundFile, str, int | None]],
               options: IngestOptions, summary: IngestSummary, warn: Callable[[str], None]) -> None:
    """Decode, embed and commit every file in ``todo``, ``commit_every`` files per transaction."""
    open_jobs: list[_FileJob] = []  # decoded, not yet committed
    queue: list[tuple[_FileJob, int, np.ndarray]] = []
    bar = _progress(len(todo), options.progress)

    def flush() -> None:
        if queue:
            _embed_queue(encoder, recipe.pooling, queue, options.batch_size)
            for job, _, _ in queue:
                job.pending -= 1
            queue.clear()

    def commit() -> None:
        flush()
        if open_jobs:
            _commit(store, recipe, open_jobs, summary, warn)
            bar.update(len(open_jobs))
            open_jobs.clear()

    for job in _jobs(todo, summary, warn):
        try:
            if job.error is not None:  # the header could not be read
                raise AudioError(job.error)
            for w in cut_stream(stream(job.found.path, recipe.sample_rate, report=job.report, info=job.info),
                                recipe.window_samples, recipe.hop_samples):
                level = rms_db(w.audio)
                silent = recipe.silence_db is not None and level < recipe.silence_db
                job.starts.append(w.start)
                job.ends.append(w.end)
                job.levels.append(level)
                job.silent.append(silent)
                if not silent:
                    job.pending += 1
                    queue.append((job, len(job.starts) - 1, w.audio))
                    if len(queue) >= 4 * options.batch_size:
                        flush()
        except AudioError as exc:
            job.error = job.error or str(exc)
        except MemoryError:
            job.error = "out of memory while decoding"
        job.decoded = True
        open_jobs.append(job)
        if len(open_jobs) >= options.commit_every:
            commit()
    commit()
    bar.close()


def _jobs(todo: list[tuple[FoundFile, str, int | None]], summary: IngestSummary,
          warn: Callable[[str], None]) -> Iterator[_FileJob]:
    for f, digest, old_id in todo:
        try:
            info = probe(f.path)
        except AudioError as exc:
            job = _FileJob(f, digest, old_id, AudioInfo(0, 0, 0, "unknown"))
            job.error = str(exc)
            job.decoded = True
            yield job
            continue
        yield _FileJob(f, digest, old_id, info)


def _embed_queue(encoder: Encoder, pooling: str, queue: list[tuple[_FileJob, int, np.ndarray]],
                 batch_size: int) -> None:
    """Embed queued windows into their jobs; a batch that fails is retried window by window."""
    live = [(j, i, a) for j, i, a in queue if j.error is None]
    try:
        vecs, counts = embed_windows(encoder, [a for _, _, a in live], pooling, batch_size)
        results = [(v, c, None) for v, c in zip(vecs, counts)]
    except (RetrievalError, RuntimeError, ValueError) as batch_exc:
        log.debug("batch failed (%s); retrying window by window", batch_exc)
        results = []
        for _, _, a in live:
            try:
                v, c = embed_windows(encoder, [a], pooling, 1)
                results.append((v[0], c[0], None))
            except (RetrievalError, RuntimeError, ValueError) as exc:
                results.append((None, 0, f"encoder failed: {exc}"))
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
        if job.error is not None:
            errors.append(ErrorRow(f.rel_path, "error", "decode", job.error, f.size, f.mtime))
            summary.files_failed += 1
            warn(f"skipped {f.rel_path}: {job.error}")
            continue
        row = _file_row(job, recipe)
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
