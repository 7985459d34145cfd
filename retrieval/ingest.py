"""Orchestration only: discover -> plan -> decode -> embed -> pool -> write.

Ingest is incremental and crash-safe:

* files whose size and mtime are unchanged are skipped without reading them;
* a file with new bytes but a known content hash is a move (its row is re-pointed)
  or a copy (its vectors are duplicated), never re-embedded;
* files gone from disk lose their rows and vectors, and their rows in ``errors``; files
  under a folder that cannot be listed are not gone: the folder gets an error row and its
  files keep theirs;
* an index may hold several corpus roots (``retrieve index A B``); a file's identity is
  its root plus its path relative to that root, and a run touches only the roots it names;
* nothing is changed by a run that would lose much: a folder that is not one of the
  index's roots is refused (add it beside them, or ``replace``), a root of the index that
  is empty or gone (an unmounted share) is refused, and so is a run that would remove more
  than :data:`MAX_REMOVAL_SHARE` of the indexed files unless ``allow_removals``;
  ``dry_run`` reports the plan (:class:`IngestPlan`) and writes nothing;
* every option, the encoder and its weights and the labels CSV are checked before the
  index folder is created, and a first run that fails before writing a file removes what
  it created;
* new and changed files are embedded and committed in batches (``commit_every`` files, or by
  default :func:`batch_full`'s files and seconds of audio), each file in one transaction
  with all its vectors, so ``kill -9`` loses at most one batch
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
import math
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from retrieval import pipeline
from retrieval.allocator import keep_freed_memory
from retrieval.audio.decode import truncation
from retrieval.audio.discover import FoundFile, discover, under
from retrieval.audio.paths import to_os, to_stored
from retrieval.configure import Choices, resolve
from retrieval.embed import Batching, embed_each, single_threaded_blas
from retrieval.encoders.base import Encoder
from retrieval.errors import InputError
from retrieval.labels import folder_label, read_labels_csv
from retrieval.options import INDEX_TYPE_CHOICES, IndexTypeChoice, check_choice
from retrieval.store.store import DB_NAME
from retrieval.pipeline import HERE_JOURNAL, DecodedFile, DecodePool, WindowSpec, group_files, pool_decoded, scan_file
from retrieval.recipe import Recipe
from retrieval.spare_cores import SpareCores, allowed_cpus
from retrieval.store import ErrorRow, FileRow, Store

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

#: Bytes read per step while hashing file contents.
HASH_CHUNK = 1 << 20
#: A run that would remove more than this share of the indexed files stops before changing
#: anything and asks for ``allow_removals`` (``--allow-removals``).
MAX_REMOVAL_SHARE = 0.20
#: Paths listed per kind of change in a plan's words (JSON lists them all).
PLAN_SHOWN = 20


@dataclass
class IngestSummary:
    """What one ``retrieve index`` run did. ``windows`` counts window vectors written."""

    files_indexed: int = 0
    files_unchanged: int = 0
    files_moved: int = 0
    files_removed: int = 0
    files_failed: int = 0
    files_silent: int = 0
    warnings: int = 0
    windows: int = 0
    audio_seconds: float = 0.0
    seconds: float = 0.0
    index: str = ""
    vectors_update: str = ""  # what Store.sync_vectors did to FAISS, in words
    roots: list[str] = field(default_factory=list)  # the index's corpus roots after the run
    plan: dict | None = None  # with dry_run: IngestPlan.to_dict(); nothing was written

    @property
    def segments(self) -> int:
        """Deprecated name of :attr:`windows` (:mod:`retrieval.legacy`)."""
        import warnings

        warnings.warn("IngestSummary.segments is deprecated; use .windows", DeprecationWarning, stacklevel=2)
        return self.windows

    @property
    def realtime_factor(self) -> float:
        return self.audio_seconds / self.seconds if self.seconds else 0.0

    def to_json(self) -> str:
        from retrieval.legacy import INFO_KEYS, with_legacy_keys

        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        d["audio_seconds"] = round(self.audio_seconds, 3)
        d["realtime_factor"] = round(self.realtime_factor, 1)
        return json.dumps(with_legacy_keys(d, INFO_KEYS))


#: Files per transaction of a local run when ``--commit-every`` is not given, once they hold
#: :data:`COMMIT_AUDIO_S` of audio (or :data:`COMMIT_MAX_FILES` files, whichever comes first).
COMMIT_EVERY = 64
#: Seconds of audio a default transaction holds at least: a commit costs about 10-20 ms
#: whatever it holds (DuckDB's commit, the counters, a checkpoint every few), so 64 short clips
#: (FSDD's 64 files hold 28 s, a few milliseconds of log-mel work each) spent more on commits
#: than on embedding. Files of 4 s and more commit every 64 as before. A kill loses at most one
#: transaction: 4 minutes of audio (under a second of log-mel work; about 40 s for wav2vec2 on
#: 2 cores) or 64 files, whichever is more.
COMMIT_AUDIO_S = 240.0
#: Files a default transaction holds at most, however short (or silent, or failed) they are.
COMMIT_MAX_FILES = 1024


@dataclass
class IngestOptions:
    """Run settings that do not change vectors.

    Attributes:
        labels_csv: CSV of metadata to attach (kept in the manifest and re-applied on later runs).
        commit_every: files per transaction; None: :data:`COMMIT_EVERY` files holding at least
            :data:`COMMIT_AUDIO_S` of audio (at most :data:`COMMIT_MAX_FILES`) here, and on Ray
            (``embedder``) a shard closes by size and age instead
            (:func:`retrieval.ray_ingest.merge_stream`).
        batch_size: windows per encoder call.
        progress: show a progress bar on stderr.
        workers: decoding processes beside the encoder (0 decodes in the main process);
            see :mod:`retrieval.pipeline`. None picks with :func:`auto_workers` (the CLI's
            default). The library's default stays 0 because workers re-import the calling
            script: one that starts them needs the ``if __name__ == "__main__":`` guard.
            Vectors and rows do not depend on it.
        index_type: FAISS index kind for search (:data:`~retrieval.options.INDEX_TYPE_CHOICES`:
            ``auto``, ``flat``, ``hnsw``, ``ivfpq``; checked when the object is built); None keeps
            the index's recorded kind (``auto`` for a new index).
        refit: refit the post-processing and rebuild FAISS even when the change since the
            last fit is small enough to update the indexes in place.
        on_warning: called with each warning line (the CLI prints them).
        labels_key: the labels CSV's column of file paths; None looks for ``file`` or ``path``.
        replace: the corpus roots of this run replace the index's (their files are matched
            by content, so a moved corpus keeps its vectors); otherwise a folder that is not
            one of the index's roots is refused unless the run also names one that is.
        allow_removals: let the run remove more than :data:`MAX_REMOVAL_SHARE` of the
            indexed files, or every file of a root that is now empty.
        dry_run: plan only: ``summary.plan`` says what would change; nothing is written.
        embedder: decodes, embeds and commits the planned files in place of this process
            (called as :func:`_embed_all` is, e.g. :class:`retrieval.ray_ingest.RayEngine`);
            None embeds here. Planning, the store writes and FAISS are the same either way.
        copies: also compute copy frames (``retrieve duplicates``, ``locate --match copy``) from
            the same decode; recorded in the recipe (outside its hash) and kept on by later runs.
    """

    labels_csv: Path | None = None
    commit_every: int | None = None
    batch_size: int = 16
    progress: bool = False
    workers: int | None = 0
    index_type: IndexTypeChoice | None = None
    refit: bool = False
    on_warning: Callable[[str], None] | None = None
    labels_key: str | None = None
    replace: bool = False
    allow_removals: bool = False
    dry_run: bool = False
    copies: bool = False
    embedder: Callable[..., None] | None = None

    def __post_init__(self) -> None:
        if self.index_type is not None:
            check_choice("index type", self.index_type, INDEX_TYPE_CHOICES)


def check_options(choices: Choices, options: IngestOptions) -> None:
    """Refuse out-of-range settings in the user's units, before anything is read or created.

    Raises:
        InputError: a window or hop that is not a positive finite number of seconds, a hop
            longer than the window, a NaN or +inf silence level, or a batch size, commit
            interval or worker count out of range. The message names the option.
    """
    for name, value in (("--window-s", choices.window_s), ("--hop-s", choices.hop_s)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise InputError(f"{name} must be a positive number of seconds; got {value:g}")
    if choices.window_s is not None and choices.hop_s is not None and choices.hop_s > choices.window_s:
        raise InputError(f"--hop-s ({choices.hop_s:g} s) must not exceed --window-s ({choices.window_s:g} s)")
    if choices.silence_db is not None and (math.isnan(choices.silence_db) or choices.silence_db == math.inf):
        raise InputError(f"--silence-db must be a level in dBFS such as -60 (or use --keep-silent); "
                         f"got {choices.silence_db:g}")
    for name, value in (("--batch-size", options.batch_size), ("--commit-every", options.commit_every)):
        if value is not None and value < 1:
            raise InputError(f"{name} must be at least 1; got {value}")
    if options.workers is not None and options.workers < 0:
        raise InputError(f"workers must be 0 (decode in this process) or more; got {options.workers}")


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


@dataclass(frozen=True)
class RootedFile(FoundFile):
    """A discovered file and the corpus root (absolute, as recorded in the index) it was found under."""

    root: str = ""


def _rooted(f: FoundFile, root: str) -> RootedFile:
    return RootedFile(**{name: getattr(f, name) for name in _FOUND_FIELDS}, root=root)


Key = tuple[str, str]  # (root, path relative to it): a file's identity
_FOUND_FIELDS = tuple(fl.name for fl in fields(FoundFile))


@dataclass
class _Plan:
    unchanged: int = 0
    to_embed: list[tuple[RootedFile, str, int | None]] = field(default_factory=list)  # (file, hash, old id)
    moved: list[tuple[int, RootedFile]] = field(default_factory=list)
    copies: list[tuple[int, RootedFile]] = field(default_factory=list)
    removed: list[tuple[int, Key]] = field(default_factory=list)
    touched: list[tuple[int, RootedFile]] = field(default_factory=list)  # same bytes, new mtime
    errors: list[ErrorRow] = field(default_factory=list)
    stale_errors: list[Key] = field(default_factory=list)  # error rows of files no longer on disk
    sources: dict[int, Key] = field(default_factory=dict)  # moved file id -> where it was
    indexed: int = 0  # files in the index before the run
    scanned_roots: list[str] = field(default_factory=list)  # roots discovery walked this run


@dataclass
class IngestPlan:
    """What a run would do, by kind of change: lists of paths (unchanged files only counted).

    Paths are relative to their root, or absolute when the run involves several roots.

    ``refused`` holds the reason the run would stop before changing anything, if it would.
    """

    roots: list[str]
    new: list[str]
    changed: list[str]
    moved: list[str]  # "old -> new"
    copied: list[str]
    removed: list[str]
    failed: list[str]
    unchanged: int
    indexed: int
    refused: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        """The plan in words: one count line, then up to :data:`PLAN_SHOWN` paths per kind."""
        kinds = ("new", "changed", "moved", "copied", "removed", "failed")
        out = [", ".join(f"{len(getattr(self, k))} {k}" for k in kinds) + f", {self.unchanged} unchanged "
               f"(of {self.indexed} indexed; roots: {', '.join(self.roots)})"]
        for k in kinds:
            items = getattr(self, k)
            out += [f"  {k}: {p}" for p in items[:PLAN_SHOWN]]
            if len(items) > PLAN_SHOWN:
                out.append(f"  {k}: ... and {len(items) - PLAN_SHOWN} more (--json lists every one)")
        if self.refused:
            out.append(f"refused: {self.refused}")
        return out


def _describe(plan: _Plan, roots: list[str], several: bool) -> IngestPlan:
    def name(root: str, rel: str) -> str:
        return str(Path(root) / rel) if several else rel

    return IngestPlan(
        roots=roots,
        new=[name(f.root, f.rel_path) for f, _, old in plan.to_embed if old is None],
        changed=[name(f.root, f.rel_path) for f, _, old in plan.to_embed if old is not None],
        moved=[f"{name(*plan.sources[fid])} -> {name(f.root, f.rel_path)}" for fid, f in plan.moved],
        copied=[name(f.root, f.rel_path) for _, f in plan.copies],
        removed=sorted(name(*key) for _, key in plan.removed),
        failed=[name(e.root or "", e.path) for e in plan.errors],
        unchanged=plan.unchanged, indexed=plan.indexed,
    )


@dataclass
class _FileJob:
    """A file being ingested: which file it is, and its one record, a :class:`DecodedFile`.

    The record comes from a worker (``--workers N``) or from :func:`scan_file` run here; the
    vectors the main process computes for its windows collect in ``embedded`` until the
    file is committed, when :func:`_finish` moves them into the record.
    """

    found: RootedFile
    digest: str
    old_id: int | None
    file: DecodedFile
    embedded: dict[int, tuple[np.ndarray, int]] = field(default_factory=dict)  # window index -> (vector, frames)
    had_errors: bool = True  # may have error rows from before this run, which its commit clears


def ingest(corpus: Path | Sequence[Path], index_dir: Path, choices: Choices | None = None,
           options: IngestOptions | None = None) -> IngestSummary:
    """Index (or update the index of) every audio file under ``corpus`` (one folder or several) into ``index_dir``.

    Paths are kept relative to their root. On an existing index only the roots named are
    scanned; the others are left as they are (``options.replace`` drops them). FAISS then
    follows DuckDB in place, or by a refit and rebuild (see the module docstring for when,
    and for what each does to the search vectors of rows already indexed);
    :attr:`IngestSummary.vectors_update` says which happened.

    Raises:
        InputError: a bad option or labels CSV, a missing or empty corpus, a folder that is
            not one of the index's roots, or a run that would remove too much; nothing is
            changed (and nothing created) when it is raised.
    """
    t0 = time.perf_counter()
    keep_freed_memory()
    options = options or IngestOptions()
    # what auto_workers reads, from now to when it chooses (after discovery); only it reads it
    idle = SpareCores() if options.workers is None else None
    index_dir = Path(index_dir)
    roots = _as_roots(corpus if _named(corpus) else _roots_of(index_dir))
    choices = choices or Choices()
    check_options(choices, options)
    check_device(choices.device)
    warn = options.on_warning or (lambda line: log.warning(line))
    labels = None if options.labels_csv is None else read_labels_csv(Path(options.labels_csv), options.labels_key)
    summary = IngestSummary(index=str(index_dir))
    first = not (index_dir / DB_NAME).is_file()
    resolved, found = None, None
    if first:
        found = _discover(roots, roots)
        if not found:
            raise InputError(f"no audio files under {', '.join(roots)}; nothing to index "
                             "(looked for .wav, .flac, .mp3, .ogg, ... recursively)")
        if _pool_likely(options, found, choices.encoder or "logmel", idle):
            pipeline.prestart()  # the fork server imports while this process plans and opens the store
        if options.dry_run:
            plan = _plan({}, found, set(roots), {})
            summary.plan = _describe(plan, roots, len(roots) > 1).to_dict()
            summary.roots = roots
            summary.seconds = time.perf_counter() - t0
            return summary
        resolved = resolve(choices, None)  # encoder, weights, window and hop: checked before the folder exists
    before = set(index_dir.iterdir()) if index_dir.is_dir() else None
    try:
        _ingest_into(index_dir, roots, choices, options, labels, resolved, found, summary, warn, idle)
    except BaseException:
        if first and summary.files_indexed + summary.files_silent == 0:
            _remove_created(index_dir, before)
        raise
    summary.seconds = time.perf_counter() - t0
    return summary


def _ingest_into(index_dir: Path, roots: list[str], choices: Choices, options: IngestOptions,
                 labels: pa.Table | None, resolved: tuple[Encoder, Recipe] | None, found: list[RootedFile] | None,
                 summary: IngestSummary, warn: Callable[[str], None], idle: SpareCores | None) -> None:
    """The run on an open store; ``resolved`` and ``found`` are given when a first run checked them already;
    ``idle`` is the reading of idle cores :func:`auto_workers` chooses by (None when ``--workers`` is set)."""
    # a dry run only reads: it does not take the write lock
    opened = Store.open(index_dir) if options.dry_run else Store.create(index_dir)
    with opened as store, ExitStack() as stack:
        stored = store.recipe
        known = store.db.known_files()
        stored_roots = store.db.roots()
        all_roots, scope = _check_roots(roots, stored_roots if known else [], index_dir, options)
        found = found if found is not None else _discover(roots, roots)
        counts: dict[str, int] = {}
        for key in known:
            counts[key[0]] = counts.get(key[0], 0) + 1
        stale = {r: store.db.error_paths(r) for r in scope}
        plan = _plan(known, found, scope, stale)  # reads only: nothing is written before the checks
        refused = _refusal(plan, roots, found, counts, store.root, options)
        if options.dry_run:
            described = _describe(plan, all_roots, len(scope | set(all_roots)) > 1)
            described.refused = refused
            summary.plan = described.to_dict()
            summary.roots = all_roots
            return
        if refused:
            raise InputError(refused)
        stored_labels = store.db.get("labels_csv")
        if labels is None and stored_labels:
            labels = _stored_labels(Path(stored_labels), store.db.get("labels_key"), warn)
        workers = options.workers
        if workers is None:
            name = resolved[1].encoder if resolved else choices.encoder or (stored.encoder if stored else "logmel")
            workers = auto_workers(name, len(plan.to_embed), spare=idle.spare if idle else None,
                                   size_bytes=sum(max(f.size, 0) for f, _, _ in plan.to_embed))
        pool = _start_pool(stack, workers, warn, store.root / HERE_JOURNAL) if plan.to_embed and not options.embedder else None
        encoder, recipe = resolved or resolve(choices, stored)
        if options.copies or (stored is not None and stored.copies):
            recipe = replace(recipe, copies=True)
        with store.db.transaction():
            repointed = store.set_recipe(recipe)  # a moved checkpoint with the same digest: say so
            if options.index_type is not None:
                store.set_index_type(options.index_type)  # FAISS kind for this and later builds (retrieve info)
            store.db.set_roots(all_roots)
            if options.labels_csv is not None:
                store.db.set("labels_csv", str(Path(options.labels_csv).resolve()))
                store.db.set("labels_key", options.labels_key or "")
        if repointed:
            warn(repointed)
        summary.roots = all_roots

        summary.files_unchanged = plan.unchanged
        _apply_plan(store, plan, summary, warn)
        (options.embedder or _embed_all)(store, encoder, recipe, plan.to_embed, options, summary, warn, pool)
        if recipe.copies:  # files indexed before --copies, and byte-identical copies
            from retrieval.copies.frames import fill_missing

            fill_missing(store, warn)
        _attach_labels(store, labels, warn)
        # One BLAS thread: a refit's whitening SVD of FSDD's vectors takes 0.1 s so, 1-3 s with
        # OpenBLAS's threads on a busy 2-core machine (measured; see retrieval.embed).
        with single_threaded_blas():
            summary.vectors_update = store.sync_vectors(refit=options.refit)
        store.db.checkpoint()


def _named(corpus: Path | Sequence[Path]) -> bool:
    return isinstance(corpus, (str, os.PathLike)) or len(corpus) > 0


def _roots_of(index_dir: Path) -> list[str]:
    """Every root of an existing index: what a run naming no folder updates."""
    if not (index_dir / DB_NAME).is_file():
        raise InputError(f"no corpus folder given and no index at {index_dir} to take its folders from; "
                         "name at least one folder")
    with Store.open(index_dir) as store:
        return store.db.roots()


def _as_roots(corpus: Path | Sequence[Path]) -> list[str]:
    """The corpus roots as absolute paths, checked: each exists, none twice, none inside another."""
    items = [corpus] if isinstance(corpus, (str, os.PathLike)) else list(corpus)
    if not items:
        raise InputError("no corpus folder given; name at least one")
    roots: list[str] = []
    for item in items:
        p = Path(item)
        if not p.exists():
            raise InputError(f"corpus {p} does not exist")
        r = to_stored(str(p.resolve()))  # any bytes, as valid UTF-8 (retrieval.audio.paths)
        if r not in roots:
            roots.append(r)
    for a in roots:
        for b in roots:
            if a != b and Path(a) in Path(b).parents:
                raise InputError(f"corpus {b} is inside corpus {a}; name only {a}")
    return roots


def _check_roots(roots: list[str], stored: list[str], index_dir: Path,
                 options: IngestOptions) -> tuple[list[str], set[str]]:
    """``(the index's roots after the run, roots whose known files may be removed or moved)``.

    ``stored`` is empty for a new index, or one that holds no files (its roots then go).

    Raises:
        InputError: none of ``roots`` is one of the index's roots, and ``replace`` was not given.
    """
    if not stored:
        return roots, set(roots)
    if options.replace:
        return roots, set(roots) | set(stored)
    if not set(roots) & set(stored):
        was = ", ".join(stored)
        both = " ".join(stored + roots)
        raise InputError(
            f"index {index_dir} holds corpus {was}, not {', '.join(roots)}; nothing was changed. "
            f"To add it beside the old one: `retrieve index {both} --index {index_dir}`; to replace the old one "
            f"(files found again by content keep their vectors): add --replace")
    return stored + [r for r in roots if r not in stored], set(roots)


def _discover(roots: list[str], scan: list[str]) -> list[RootedFile]:
    return [_rooted(f, r) for r in scan for f in discover(Path(to_os(r)))]


def _refusal(plan: _Plan, roots: list[str], found: list[RootedFile], counts: dict[str, int], index_dir: Path,
             options: IngestOptions) -> str | None:
    """Why this run must stop before changing anything (an emptied root, too many removals), or None."""
    if options.allow_removals:
        return None
    seen = {f.root for f in found}
    for r in roots:
        if counts.get(r) and r not in seen:
            return (f"corpus {r} holds no audio files now, but index {index_dir} has {counts[r]} files from it "
                    "(an unmounted share, or an emptied folder?); nothing was changed. If they are gone for good, "
                    "re-run with --allow-removals")
    if plan.indexed and len(plan.removed) > MAX_REMOVAL_SHARE * plan.indexed:
        return (f"this run would remove {len(plan.removed)} of the {plan.indexed} indexed files "
                f"({len(plan.removed) / plan.indexed:.0%}, more than {MAX_REMOVAL_SHARE:.0%}); nothing was changed. "
                "See them with --dry-run; if they are gone for good, re-run with --allow-removals")
    return None


def _remove_created(index_dir: Path, before: set[Path] | None) -> None:
    """Remove what a failed first run created in ``index_dir`` (the folder too, if it made it)."""
    import shutil

    if not index_dir.is_dir():
        return
    for p in index_dir.iterdir():
        if before is None or p not in before:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
    if before is None:
        try:
            index_dir.rmdir()
        except OSError:
            pass


def _stored_labels(csv: Path, key: str | None, warn: Callable[[str], None]) -> pa.Table | None:
    """The labels CSV recorded with the index, re-read; a missing or now-unreadable one is a warning."""
    if not csv.is_file():
        warn(f"labels CSV {csv} recorded with this index is gone; metadata left as it was "
             "(pass --labels to point at its new place)")
        return None
    try:
        return read_labels_csv(csv, key or None)
    except InputError as exc:
        warn(f"{exc}; metadata left as it was (pass --labels with a fixed CSV)")
        return None


#: Files to embed below which ``auto_workers`` decodes in the main process: starting a pool
#: (a fork server, then the workers, about 0.5-1 s of CPU) costs more than it saves on a few files.
AUTO_WORKERS_MIN_FILES = 64
#: ... and bytes of them: on a quiet 2-core machine a pool cost 0.2-0.3 s on 100 and 300 FSDD
#: clips (under 5 MB), broke even on all 3,000 (27 MB) and saved 3 s on an hour of 44.1 kHz
#: stereo (607 MB), about 5 ms per MB (``docs/bench_ingest.md``).
AUTO_WORKERS_MIN_BYTES = 64 << 20
#: Most workers ``auto_workers`` starts.
AUTO_WORKERS_MAX = 8


def auto_workers(encoder: str, files: int, cores: int | None = None,
                 spare: float | Callable[[], float | None] | None = None, size_bytes: int | None = None) -> int:
    """Decoding processes for a run that leaves ``--workers`` unset.

    * 0 for fewer than :data:`AUTO_WORKERS_MIN_FILES` files to embed, for files holding fewer
      than :data:`AUTO_WORKERS_MIN_BYTES` together (``size_bytes``; None: not counted), or on
      one core;
    * an encoder the workers run themselves (``embeds_in_workers``: the log-mel baseline) gets
      one worker per core that stands idle (``spare``, :mod:`retrieval.spare_cores`: rounded
      down, with :data:`SPARE_SLACK` of slack), at most one per usable core but one and at
      most :data:`AUTO_WORKERS_MAX`. The main process keeps its own core for writing the
      rows (discovery, hashing, DuckDB commits) and decodes in what writing leaves of it,
      running the next group itself whenever the workers' result in line is late
      (:mod:`retrieval.pipeline`). Measured on 2 cores, one worker against none: quiet,
      60 minutes of 44.1 kHz stereo in 30 s files 5.0-6.5 s against 8.2-9.7 s, FSDD no
      slower; with another process spinning on one core, the long files 0-15 % faster and
      FSDD 0-50 % slower, at load 5-6 both slower (``docs/bench_ingest.md``). Where the idle
      cores cannot be read (``spare`` None), workers start only where at least two fit
      beside the main process (3 cores and more), as before the reading existed;
    * a model encoder gets one worker: decoding is a small part of its cost, and its torch
      threads keep the cores (see :func:`torch_threads_for`).

    ``spare`` may be a function that reads the idle cores (:meth:`SpareCores.spare`); it is
    called only when the answer depends on it. Vectors do not depend on the choice
    (``tests/test_pipeline.py``).
    """
    cores = cores or _usable_cores()
    too_little = files < AUTO_WORKERS_MIN_FILES or (size_bytes is not None and size_bytes < AUTO_WORKERS_MIN_BYTES)
    if too_little or cores < 2:
        return 0
    if not embeds_in_workers(encoder):
        return 1
    cap = min(cores - 1, AUTO_WORKERS_MAX)
    if callable(spare):
        spare = spare()
    if spare is None:
        return cap if cap >= 2 else 0
    return max(0, min(cap, math.floor(spare + SPARE_SLACK)))


#: Added to the idle cores read before rounding down: a quiet core reads 0.8-1.0 idle (the
#: kernel's own work, the reading's coarse ticks); one taken by another process reads near 0.
SPARE_SLACK = 0.25


def _pool_likely(options: IngestOptions, found: list[RootedFile], encoder: str, idle: SpareCores | None) -> bool:
    """Whether a first run of the ``found`` files with ``encoder`` will start decoding workers (so
    their fork server may boot ahead): ``--workers`` above 0, or left unset and
    :func:`auto_workers` starting some (with the same reading of ``idle`` as the run's choice)."""
    if options.dry_run or options.embedder is not None:
        return False
    if options.workers is not None:
        return options.workers > 0
    readable = [f for f in found if f.error is None and not f.folder]
    return auto_workers(encoder, len(readable), spare=idle.spare if idle else None,
                        size_bytes=sum(f.size for f in readable)) > 0


def _start_pool(stack: ExitStack, workers: int, warn: Callable[[str], None],
                journal: Path) -> DecodePool | None:
    """Start the decoding workers now, so they boot while the encoder loads; ``journal`` is the
    pool's record of what the main process decodes itself (see :data:`pipeline.HERE_JOURNAL`)."""
    if workers <= 0:
        return None
    pool = stack.enter_context(DecodePool(workers, on_warning=warn, journal=journal))
    pool.warm()
    return pool


def _plan(known: dict[Key, tuple[int, int, float, str]], found: list[RootedFile], scope: set[str],
          error_paths: dict[str, set[str]]) -> _Plan:
    """Sort every discovered file into unchanged / moved / copied / to embed, and find removals.

    ``known`` maps ``(root, path)`` to ``(file_id, size, mtime, content_hash)``. Only files
    under a root in ``scope`` can be removed or be the source of a move; files under the
    index's other roots count as present, and so do files under a folder that could not be
    listed (unknown, not gone). ``error_paths`` holds, per root, the paths with error rows
    (those no longer on disk go).
    """
    plan = _Plan(indexed=len(known), scanned_roots=sorted(scope))
    present = {(f.root, f.rel_path) for f in found if not f.folder}
    unlisted = [(f.root, f.rel_path) for f in found if f.folder and f.error is not None]
    present |= {k for k in known if any(k[0] == r and under(k[1], d) for r, d in unlisted)}
    gone = [k for k in known if k[0] in scope and k not in present]
    missing_by_hash: dict[str, tuple[int, Key]] = {known[k][3]: (known[k][0], k) for k in gone if known[k][3]}
    present_by_hash = {v[3]: v[0] for k, v in known.items() if (k[0] not in scope or k in present) and v[3]}
    for f in found:
        key = (f.root, f.rel_path)
        if f.note is not None:
            plan.errors.append(ErrorRow(f.rel_path, "warning", "discover", f.note, f.size, f.mtime, f.root))
        if f.error is not None:
            plan.errors.append(ErrorRow(f.rel_path, "error", "discover", f.error, f.size, f.mtime, f.root))
            continue
        if f.folder:
            continue
        k = known.get(key)
        if k is not None and k[1] == f.size and k[2] == f.mtime:
            plan.unchanged += 1
            continue
        try:
            digest = content_hash(f.path)
        except OSError as exc:
            plan.errors.append(ErrorRow(f.rel_path, "error", "read", f"cannot read: {exc.strerror or exc}",
                                        f.size, f.mtime, f.root))
            continue
        if k is not None and k[3] == digest:
            plan.touched.append((k[0], f))
            plan.unchanged += 1
        elif k is None and digest in missing_by_hash:
            file_id, source = missing_by_hash.pop(digest)
            plan.moved.append((file_id, f))
            plan.sources[file_id] = source
        elif k is None and digest in present_by_hash:
            plan.copies.append((present_by_hash[digest], f))
        else:
            plan.to_embed.append((f, digest, k[0] if k else None))
    errored = {(e.root, e.path) for e in plan.errors}
    claimed = {fid for fid, _ in plan.moved}
    plan.removed = [(known[k][0], k) for k in gone if k not in errored and known[k][0] not in claimed]
    plan.stale_errors = [(r, p) for r, paths in error_paths.items() for p in sorted(paths) if (r, p) not in present]
    return plan


def _apply_plan(store: Store, plan: _Plan, summary: IngestSummary, warn: Callable[[str], None]) -> None:
    """Removals, moves, copies and discovery errors, in one transaction."""
    db = store.db
    with db.transaction():
        db.delete_files(fid for fid, _ in plan.removed)
        db.clear_discovery_errors(plan.scanned_roots)  # discovery reruns in full on these: its rows are replaced
        _clear_errors(db, [k for _, k in plan.removed] + plan.stale_errors + [(e.root, e.path) for e in plan.errors])
        for fid, f in plan.touched + plan.moved:  # same bytes: new mtime, or a new path too
            db.update_file_location(fid, f.rel_path, f.size, f.mtime, folder_label(f.rel_path), f.root)
        for src, f in plan.copies:
            summary.windows += db.copy_file(src, f.rel_path, f.size, f.mtime, folder_label(f.rel_path), f.root)
        _clear_errors(db, [(f.root, f.rel_path) for _, f in plan.moved + plan.copies])
        db.add_errors(plan.errors)
        if plan.removed or plan.moved or plan.copies:
            db.bump_generation()
    for e in plan.errors:
        warn(f"skipped {e.path}: {e.reason}" if e.severity == "error" else f"{e.path}: {e.reason}")
    summary.files_removed = len(plan.removed)
    summary.files_moved = len(plan.moved)
    summary.files_indexed += len(plan.copies)
    summary.files_failed += sum(e.severity == "error" for e in plan.errors)
    summary.warnings += sum(e.severity == "warning" for e in plan.errors)


def _clear_errors(db, keys: list[tuple[str | None, str]]) -> None:
    """Delete the error rows of ``(root, path)`` keys, one statement per root."""
    by_root: dict[str | None, list[str]] = {}
    for root, path in keys:
        by_root.setdefault(root, []).append(path)
    for root, paths in by_root.items():
        db.clear_errors(paths, root)


def _embed_all(store: Store, encoder: Encoder, recipe: Recipe, todo: list[tuple[RootedFile, str, int | None]],
               options: IngestOptions, summary: IngestSummary, warn: Callable[[str], None],
               pool: DecodePool | None = None) -> None:
    """Decode, embed and commit every file in ``todo``, a :func:`batch_full` batch per transaction.

    Files are consumed in ``todo`` order whatever decoded them, and the encoder queue is
    flushed at the same points, so ``--workers N`` writes the same rows and the same
    vectors as ``--workers 0``.
    """
    open_jobs: list[_FileJob] = []  # decoded, not yet committed
    open_samples = [0]  # decoded samples (at the recipe's rate) of open_jobs
    queue: list[tuple[_FileJob, int, np.ndarray]] = []
    queued = [0]  # samples in the queue
    batching = Batching(options.batch_size)
    bar = _progress(len(todo), options.progress)
    embed_in_workers = pool is not None and embeds_in_workers(recipe.encoder)
    # files whose old error rows a commit must clear: those with rows now (one query, not one per commit)
    had_errors = {(r, p) for r in {f.root for f, _, _ in todo} for p in store.db.error_paths(r)}
    spec = WindowSpec(recipe.sample_rate, recipe.window_samples, recipe.hop_samples, recipe.silence_db,
                      embed_recipe=recipe if embed_in_workers else None, batch_size=options.batch_size,
                      long_samples=pipeline.LONG_FILE_SAMPLES, task_samples=pipeline.TASK_SAMPLES,
                      copies=recipe.copies)

    def flush() -> None:
        if queue:
            _embed_queue(encoder, recipe.pooling, queue, batching)
            queue.clear()
            queued[0] = 0

    def enqueue(job: _FileJob, index: int, audio: np.ndarray) -> bool:
        queue.append((job, index, audio))
        queued[0] += audio.size
        if len(queue) >= QUEUE_BATCHES * options.batch_size or queued[0] >= QUEUE_SAMPLES:
            flush()
        return True

    def commit() -> None:
        flush()
        if open_jobs:
            _commit(store, recipe, open_jobs, summary, warn)
            bar.update(len(open_jobs))
            open_jobs.clear()
            open_samples[0] = 0

    with _torch_threads():
        for (f, digest, old_id), pre in _decoded(todo, spec, pool):
            if pre is None or pre.long:  # this process decodes it, streaming its windows into the queue
                job = _FileJob(f, digest, old_id, DecodedFile(info=pre.info if pre is not None else None))
                scan_file(f.path, spec, job.file, lambda index, audio, job=job: enqueue(job, index, audio))
            else:
                job = _FileJob(f, digest, old_id, pre)
                if pre.error is None and pre.vectors is None:  # decoded by a worker, embedded here
                    for index, audio in zip(np.flatnonzero(~pre.silent).tolist(), pre.windows()):
                        enqueue(job, index, audio)
                    pre.audio = _NO_AUDIO  # the queue holds views of it for as long as it needs them
            job.had_errors = (f.root, f.rel_path) in had_errors
            open_jobs.append(job)
            open_samples[0] += job.file.report.out_samples
            if batch_full(len(open_jobs), open_samples[0] / recipe.sample_rate, options.commit_every):
                commit()
        commit()
    bar.close()
    if batching.halvings:
        warn(f"the encoder ran out of memory; batch size lowered from {options.batch_size} to {batching.size}")


def batch_full(files: int, audio_s: float, commit_every: int | None) -> bool:
    """Whether a batch of ``files`` decoded files holding ``audio_s`` seconds of audio is committed now.

    ``commit_every`` (``--commit-every``) counts files alone; None commits at
    :data:`COMMIT_EVERY` files holding :data:`COMMIT_AUDIO_S` of audio, or at
    :data:`COMMIT_MAX_FILES` files. Decided from decoded lengths, never from time, so the commit
    points (and the encoder batches they flush) are the same on every run.
    """
    if commit_every:
        return files >= commit_every
    return files >= COMMIT_MAX_FILES or (files >= COMMIT_EVERY and audio_s >= COMMIT_AUDIO_S)


def adopt_decoded(entry: tuple[RootedFile, str, int | None], pre: DecodedFile) -> _FileJob:
    """A planned ``(file, hash, old id)`` and what another process decoded and embedded, as a job to commit.

    For engines that embed elsewhere (:mod:`retrieval.ray_ingest`); ``pre`` must hold vectors.
    """
    f, digest, old_id = entry
    if pre.long or (pre.error is None and pre.vectors is None):
        raise ValueError("adopt_decoded needs a DecodedFile with vectors; its windows were not embedded")
    return _FileJob(f, digest, old_id, pre)


#: The encoder queue is flushed at this many batches of windows ...
QUEUE_BATCHES = 8
#: ... or this many queued samples (64 MB of float32), whichever comes first.
QUEUE_SAMPLES = 16_000_000
_NO_AUDIO = np.zeros(0, np.float32)


def embeds_in_workers(encoder: str) -> bool:
    """Whether decoding workers also run ``encoder`` (its registry entry says so: numpy only,
    no weights, bit-exact batch invariance), so the main process only writes."""
    from retrieval.encoders.registry import entry

    return entry(encoder).embeds_in_workers


def _decoded(todo: list[tuple[RootedFile, str, int | None]], spec: WindowSpec,
             pool: DecodePool | None) -> Iterator[tuple[tuple[RootedFile, str, int | None], DecodedFile | None]]:
    """``(entry, DecodedFile)`` per file in ``todo`` order; None asks the main process to stream it."""
    if pool is None:
        return ((entry, None) for entry in todo)
    groups = group_files(((str(e[0].path), e) for e in todo), lambda pair: pair[1][0].size)
    return pool.results(groups, spec)


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
    cpus = allowed_cpus()
    return len(cpus) if cpus else os.cpu_count() or 1


def _embed_queue(encoder: Encoder, pooling: str, queue: list[tuple[_FileJob, int, np.ndarray]],
                 batching: Batching) -> None:
    """Embed queued windows into their jobs; a batch that fails is retried window by window."""
    live = [(j, i, a) for j, i, a in queue if j.file.error is None]
    results = embed_each(encoder, [a for _, _, a in live], pooling, batching)
    for (job, idx, _), (vec, count, err) in zip(live, results):
        if err is not None:
            job.file.error = job.file.error or err
        else:
            job.embedded[idx] = (vec, int(count))


def _finish(job: _FileJob, recipe: Recipe) -> str | None:
    """Complete ``job.file`` for its row: vectors and file vector of windows embedded here, and the
    first failure of a window a worker embedded. Returns why the file cannot be indexed, or None."""
    d = job.file
    if d.error is None and d.window_errors:
        d.error = next((e for e in d.window_errors if e is not None), None)
    if d.error is None and d.report.out_samples == 0:
        d.error = "holds no audio samples"
    if d.error is not None or d.vectors is not None:  # a worker embedded and pooled it
        return d.error
    loud = np.flatnonzero(~d.silent).tolist()
    d.vectors = np.zeros((len(loud), recipe.dim), np.float32)
    d.counts = np.zeros(len(loud), np.int64)
    for k, i in enumerate(loud):
        d.vectors[k], d.counts[k] = job.embedded[i]
    job.embedded.clear()
    d.file_vector = pool_decoded(d, recipe.pooling)
    return None


def _commit(store: Store, recipe: Recipe, jobs: list[_FileJob], summary: IngestSummary,
            warn: Callable[[str], None]) -> None:
    """Write ``jobs`` (rows, vectors, error rows) in one transaction, clearing the old error rows of
    those that may have some (``_FileJob.had_errors``)."""
    rows: list[FileRow] = []
    errors: list[ErrorRow] = []
    replaced: list[int] = []
    for job in jobs:
        f, d = job.found, job.file
        if job.old_id is not None:
            replaced.append(job.old_id)
        error = _finish(job, recipe)
        cut = truncation(d.info, d.report) if error is None else None
        if cut is not None and cut[0] == "error":
            error = cut[1]
        if error is not None:
            errors.append(ErrorRow(f.rel_path, "error", "decode", error, f.size, f.mtime, f.root))
            summary.files_failed += 1
            warn(f"skipped {f.rel_path}: {error}")
            continue
        row = _file_row(job, recipe)
        if cut is not None:  # a warning: indexed as what it holds
            errors.append(ErrorRow(f.rel_path, "warning", "decode", cut[1], f.size, f.mtime, f.root))
            warn(f"{f.rel_path}: {cut[1]}")
        if d.report.nonfinite:
            reason = f"{d.report.nonfinite} NaN/Inf samples replaced by 0"
            errors.append(ErrorRow(f.rel_path, "warning", "decode", reason, f.size, f.mtime, f.root))
            warn(f"{f.rel_path}: {reason}")
        if row.status == "silent":
            reason = f"silent throughout (loudest window {d.levels.max():.1f} dBFS < {recipe.silence_db} dBFS)"
            errors.append(ErrorRow(f.rel_path, "warning", "level", reason, f.size, f.mtime, f.root))
            warn(f"{f.rel_path}: {reason}")
            summary.files_silent += 1
        else:
            summary.files_indexed += 1
        summary.audio_seconds += row.n_samples / recipe.sample_rate
        rows.append(row)
    summary.warnings += sum(e.severity == "warning" for e in errors)
    db = store.db
    with db.transaction():
        db.delete_files(replaced)
        _clear_errors(db, [(j.found.root, j.found.rel_path) for j in jobs if j.had_errors])
        _, n_vectors = db.insert_files(rows, recipe.dim)
        if recipe.copies:
            _put_copy_frames(store, jobs)
        db.add_errors(errors)
        db.bump_generation()
    summary.windows += n_vectors - sum(r.file_vector is not None for r in rows)


def _put_copy_frames(store: Store, jobs: list[_FileJob]) -> None:
    """Store the copy frames of the committed jobs (inside the caller's transaction)."""
    from retrieval.copies.features import FEATURE_VERSION
    from retrieval.store.copies import CopyStore

    done = [j for j in jobs if j.file.error is None and j.file.copy_frames is not None]
    if done:
        cs = CopyStore(store.db)
        ids = cs.ids_of([(j.found.root, j.found.rel_path) for j in done])
        cs.put_frames([(ids[(j.found.root, j.found.rel_path)], j.file.copy_frames) for j in done
                       if (j.found.root, j.found.rel_path) in ids], FEATURE_VERSION)


def _file_row(job: _FileJob, recipe: Recipe) -> FileRow:
    """The ``files`` row and its window rows of a finished job (silent windows get zero vectors)."""
    d, f = job.file, job.found
    vectors = np.zeros((len(d.starts), recipe.dim), np.float32)
    counts = np.zeros(len(d.starts), np.int64)
    vectors[~d.silent] = d.vectors
    counts[~d.silent] = d.counts
    return FileRow(
        path=f.rel_path, size=f.size, mtime=f.mtime, content_hash=job.digest,
        duration_s=d.info.duration_s, sample_rate=d.info.sample_rate, channels=d.info.channels,
        format=d.info.format, n_samples=d.report.out_samples,
        status="silent" if d.silent.all() else "ok", label=folder_label(f.rel_path),
        starts=d.starts, ends=d.ends, rms_db=d.levels.astype(np.float32), silent=d.silent, n_frames=counts,
        window_vectors=vectors, file_vector=d.file_vector, root=f.root,
    )


def _attach_labels(store: Store, table: pa.Table | None, warn: Callable[[str], None]) -> None:
    """Attach the rows of a labels CSV read (and checked) before the run; None does nothing."""
    if table is None:
        return
    with store.db.transaction():
        matched = store.db.attach_metadata(table)
    if matched < table.num_rows:
        warn(f"{table.num_rows - matched} of {table.num_rows} rows in the labels CSV match no indexed file")


def _progress(total: int, enabled: bool):  # -> tqdm-like
    from retrieval import progress

    return progress.bar(total=total, desc="embedding", unit="file", enabled=enabled)


#: Commits a batch of jobs (from :func:`adopt_decoded`) in one transaction, as local ingest does.
commit_jobs = _commit
