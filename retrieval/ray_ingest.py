"""``retrieve index --engine ray``: plan on the driver, decode and embed on a Ray cluster, write on the driver.

The driver (the process running ``retrieve index``) discovers and plans exactly as local
ingest does (:mod:`retrieval.ingest`: new, changed, moved and removed files by content
hash) and loads the encoder once to fix the recipe. :class:`RayEngine` then takes the
files to embed:

1. **Shards first.** Complete shards left by an earlier run that was killed
   (``<index>/shards/part-XXXXX.parquet``, :mod:`retrieval.shards`) are merged for every
   file whose recipe hash, size, mtime and content hash still match; those files are not
   embedded again. Other shards are stale and deleted.
2. **Decode on CPU tasks.** A Ray Data dataset of the remaining paths is decoded and cut
   into windows by ``map_batches`` tasks running :func:`retrieval.pipeline.decode_file`
   (the same code local ingest runs, so the windows are identical). When the actors need
   no GPU, Ray Data's optimizer fuses this step into the actors (seen in its execution
   plan), so decoded audio never crosses the object store.
3. **Embed on an actor pool.** ``map_batches`` with a callable class, ``concurrency`` actors
   and ``num_gpus`` each: every actor builds the encoder once from the recipe and embeds
   and pools as local ingest does (long files are streamed block by block in the actor).
4. **Write on the driver.** Actors return their files as Arrow columns (windows and vectors
   in list columns). Results stream back in plan order (:func:`merge_stream`); every
   :data:`COMMIT_WINDOWS` windows, :data:`COMMIT_S` seconds or ``commit_every`` files (when
   given), whichever comes first, are written to a shard (temporary name, then renamed) and
   merged into DuckDB in one transaction by :func:`retrieval.shard_merge.commit_shard`,
   which decides per file what local ingest's commit decides and inserts the windows and
   vectors in bulk; the shard is then deleted. FAISS follows DuckDB at the end, as after
   local ingest (an IVF-PQ index is built from DuckDB in chunks, never every vector at once).

Faults: Ray retries the blocks of a task or actor that dies (Ray Data restarts pool actors),
and the driver merges each file once, by its place in the plan, so nothing is lost or
written twice. A killed driver leaves committed files (the next run sees them unchanged)
and complete shards (the next run merges them). A file that fails to decode comes back with
its error and becomes an ``errors`` row. An address that cannot be reached is a one-line
error naming it, before anything is written.

Paths: every worker opens the corpus at the driver's absolute paths, so the corpus must be
on a filesystem every node mounts at the same place; the engine checks that a worker can
open one sample file before starting and says so when it cannot.

``import ray`` happens only here, and only when the engine runs.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from retrieval.errors import InputError
from retrieval.pipeline import (FILES_PER_TASK, LONG_FILE_SAMPLES, DecodedFile, WindowSpec,
                                decode_file, pool_decoded, scan_file, worker_encoder, _embed_in_worker)
from retrieval.shard_merge import NEW, commit_shard
from retrieval.shards import SHARDS_DIR, complete_shards, decoded_table, next_number, read_table, remove_partial, \
    shard_table, write_shard

if TYPE_CHECKING:
    from retrieval.encoders.base import Encoder
    from retrieval.ingest import IngestOptions, IngestSummary, RootedFile
    from retrieval.recipe import Recipe
    from retrieval.store import Store

log = logging.getLogger(__name__)

#: Seconds the TCP pre-check waits for the cluster's address to answer.
CONNECT_TIMEOUT_S = 5.0
#: Windows a long file's stream hands the encoder at a time, inside an actor.
STREAM_WINDOWS = 256
#: A Ray run's shard (one transaction) closes at this many windows (32 MiB of 512-d vectors)...
COMMIT_WINDOWS = 16_384
#: ... or once its oldest row has waited this many seconds (slow actors still commit their work).
COMMIT_S = 30.0
#: The port ``ray start --head`` listens on when none is named.
DEFAULT_PORT = 6379

Entry = tuple["RootedFile", str, "int | None"]  # (file, content hash, old file id): one planned file


@dataclass
class RayEngine:
    """Where and how wide to embed on Ray; called by ingest in place of local embedding.

    Attributes:
        address: ``None`` starts a Ray on this machine; ``auto`` joins the cluster this
            machine is part of; ``HOST:PORT`` (or ``ray://HOST:PORT``) a cluster's head.
        actors: embedding actors (each loads the encoder once).
        gpus_per_actor: GPUs each actor reserves; above 0 the actors run the encoder on ``cuda``.
        cpus_per_actor: CPUs each actor reserves.
    """

    address: str | None = None
    actors: int = 1
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise InputError(f"--actors must be at least 1; got {self.actors}")
        if self.gpus_per_actor < 0:
            raise InputError(f"--gpus-per-actor must be 0 or more; got {self.gpus_per_actor:g}")

    @property
    def device(self) -> str:
        """The torch device the actors run the encoder on."""
        return "cuda" if self.gpus_per_actor > 0 else "cpu"

    def check_address(self) -> None:
        """Refuse a ``HOST:PORT`` that does not answer, in one line naming it (nothing else is tried).

        Raises:
            InputError: the address is malformed or nothing listens there.
        """
        if self.address in (None, "auto", "local"):
            return
        host, port = parse_address(self.address)
        try:
            with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
                pass
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise InputError(f"cannot reach the Ray cluster at {self.address} ({why}); start it there with "
                             f"`ray start --head --port {port}`, or pass the head's --ray-address") from None

    def connect(self) -> None:
        """Join (or start) the Ray cluster; an already initialised Ray in this process is used as is.

        Raises:
            InputError: Ray is not installed, or the cluster cannot be reached.
        """
        self.check_address()
        ray = import_ray()
        if ray.is_initialized():
            return
        # Ray's own default (address None) would join the cluster `ray start` last started on this
        # machine, or RAY_ADDRESS's; "local" always starts a new one, as the option promises.
        address = "local" if self.address in (None, "local") else self.address
        try:
            ray.init(address=address, log_to_driver=False, include_dashboard=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"cannot join the Ray cluster at {self.address or 'a new local Ray'} ({first}); "
                             "check --ray-address, or start one with `ray start --head`") from None

    def __call__(self, store: Store, encoder: Encoder, recipe: Recipe, todo: list[Entry], options: IngestOptions,
                 summary: IngestSummary, warn: Callable[[str], None], pool: Any = None) -> None:
        embed_on_ray(self, store, recipe, todo, options, summary, warn)


def parse_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT``, ``ray://HOST:PORT`` or ``HOST`` (port :data:`DEFAULT_PORT`).

    Raises:
        InputError: the port is not a number.
    """
    rest = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep:
        return rest, DEFAULT_PORT
    if not port.isdigit():
        raise InputError(f"--ray-address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379) or 'auto'")
    return host.strip("[]"), int(port)


def import_ray() -> Any:
    """``ray`` (with Ray Data), or an error naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise InputError(f"--engine ray needs Ray Data ({exc.name or exc}): pip install 'retrieve[ray]'") from None
    return ray


def embed_on_ray(engine: RayEngine, store: Store, recipe: Recipe, todo: list[Entry], options: IngestOptions,
                 summary: IngestSummary, warn: Callable[[str], None]) -> None:
    """Merge usable shards, then decode and embed the rest of ``todo`` on Ray and commit it in plan order."""
    from retrieval.ingest import _progress

    folder = Path(store.root) / SHARDS_DIR
    remove_partial(folder)
    rest = _merge_old_shards(folder, store, recipe, todo, summary, warn)
    if not rest:
        return
    engine.connect()
    check_readable(rest[0][0].path)
    spec = WindowSpec(recipe.sample_rate, recipe.window_samples, recipe.hop_samples, recipe.silence_db,
                      embed_recipe=recipe, batch_size=options.batch_size, long_samples=LONG_FILE_SAMPLES,
                      device=engine.device)
    bar = _progress(len(rest), options.progress)
    merge_stream(_run(engine, spec, rest), _Plan(rest, recipe.hash()), folder, store, recipe, summary, warn,
                 commit_files=options.commit_every, progress=bar.update)
    bar.close()


def merge_stream(parts: Iterable[pa.Table], plan: _Plan, folder: Path, store: Store, recipe: Recipe,
                 summary: IngestSummary, warn: Callable[[str], None], *, commit_files: int | None = None,
                 commit_windows: int = COMMIT_WINDOWS, commit_s: float = COMMIT_S,
                 progress: Callable[[int], Any] = lambda n: None) -> int:
    """The driver's side of a run: embedded rows, in plan order, written as shards and merged.

    A shard (one file on disk, one transaction) closes at ``commit_files`` files (None: no
    file limit), at ``commit_windows`` windows, or once its first row has waited
    ``commit_s`` seconds (checked as each part arrives), whichever comes first: few, large
    transactions when the actors are fast (each costs a shard fsync, a commit and a
    checkpoint), and embedded work on disk within about ``commit_s`` when they are slow.

    Args:
        parts: tables of embedded rows (an ``i`` column into ``plan`` and the shard's
            :data:`~retrieval.shards.DECODED_COLUMNS`), as the actors return them.
        progress: called with the files of each merged shard.

    Returns:
        Shards merged.
    """
    number = next_number(folder)
    first = number
    pending: list[pa.Table] = []
    widths = np.zeros(0, np.int64)  # windows of each pending row
    opened = 0.0  # when the oldest pending row arrived

    def flush(rows: int) -> None:
        nonlocal number, pending, widths, opened
        table = pa.concat_tables(pending)
        _write_and_merge(folder, number, plan, table.slice(0, rows), store, recipe, summary, warn)
        number += 1
        progress(rows)
        pending = [table.slice(rows)] if rows < table.num_rows else []
        widths = widths[rows:]
        opened = time.monotonic()

    for part in parts:
        if part.num_rows == 0:
            continue
        if not pending:
            opened = time.monotonic()
        pending.append(part)
        widths = np.concatenate([widths, pc.list_value_length(part.column("starts")).to_numpy(
            zero_copy_only=False).astype(np.int64)])
        while (rows := _cut(widths, commit_files, commit_windows)) is not None:
            flush(rows)
        if len(widths) and time.monotonic() - opened >= commit_s:
            flush(len(widths))
    if len(widths):
        flush(len(widths))
    return number - first


def _cut(widths: np.ndarray, commit_files: int | None, commit_windows: int) -> int | None:
    """Rows that close the next shard (``commit_files``, or fewer once ``commit_windows`` windows
    are reached; at least one), or None while ``widths`` (windows per pending row) holds too few."""
    reached = np.flatnonzero(np.cumsum(widths) >= commit_windows)
    rows = int(reached[0]) + 1 if reached.size else len(widths) + 1
    if commit_files is not None:
        rows = min(rows, commit_files)
    return rows if rows <= len(widths) else None


class _Plan:
    """The files of ``rest`` as columns, to name each embedded row (by its ``i``) in a shard."""

    def __init__(self, rest: list[Entry], recipe_hash: str) -> None:
        self.recipe_hash = recipe_hash
        self.root = [f.root for f, _, _ in rest]
        self.path = [f.rel_path for f, _, _ in rest]
        self.size = np.array([f.size for f, _, _ in rest], np.int64)
        self.mtime = np.array([f.mtime for f, _, _ in rest], np.float64)
        self.digest = [d for _, d, _ in rest]
        self.old_ids = np.array([NEW if old is None else old for _, _, old in rest], np.int64)

    def shard(self, embedded: pa.Table) -> tuple[pa.Table, np.ndarray]:
        """``(shard table, (n,) old ids)`` of embedded rows (an ``i`` column and :data:`DECODED_COLUMNS`)."""
        idx = embedded.column("i").to_numpy()
        table = shard_table(embedded.drop_columns(["i"]), self.recipe_hash, [self.root[i] for i in idx],
                            [self.path[i] for i in idx], self.size[idx], self.mtime[idx],
                            [self.digest[i] for i in idx])
        return table, self.old_ids[idx]


def _write_and_merge(folder: Path, number: int, plan: _Plan, embedded: pa.Table, store: Store, recipe: Recipe,
                     summary: IngestSummary, warn: Callable[[str], None]) -> None:
    """Write ``embedded`` rows as shard ``number``, merge it into DuckDB in one transaction, then delete it."""
    table, old_ids = plan.shard(embedded)
    path = write_shard(folder, number, table)
    merge(store, recipe, table, old_ids, summary, warn)
    path.unlink(missing_ok=True)


def merge(store: Store, recipe: Recipe, table: pa.Table, old_ids: np.ndarray, summary: IngestSummary,
          warn: Callable[[str], None]) -> None:
    """Commit a shard's files in one transaction, as local ingest commits them (:mod:`retrieval.shard_merge`)."""
    commit_shard(store, recipe, table, old_ids, summary, warn)


def _merge_old_shards(folder: Path, store: Store, recipe: Recipe, todo: list[Entry], summary: IngestSummary,
                      warn: Callable[[str], None]) -> list[Entry]:
    """Merge what earlier runs' complete shards hold for files still planned; return the files left to embed.

    A shard row is used when its recipe hash is this run's and the file's size, mtime and
    content hash are what the plan found. Every old shard is deleted once merged (rows that
    were not used are stale: their file changed, or was committed before the driver died).
    """
    shards = complete_shards(folder)
    if not shards:
        return todo
    wanted = {(f.root, f.rel_path): (f, digest, old) for f, digest, old in todo}
    recipe_hash = recipe.hash()
    found = 0
    for path in shards:
        try:
            table = read_table(path)
        except Exception as exc:  # a damaged shard is only lost work: its files are embedded again
            warn(f"shard {path.name} cannot be read ({type(exc).__name__}: {exc}); its files are embedded again")
            continue
        keys = zip(*(table.column(c).to_pylist() for c in ("recipe_hash", "root", "path", "size", "mtime",
                                                           "content_hash")))
        use, old_ids = [], []
        for row, (h, root, rel, size, mtime, digest) in enumerate(keys):
            entry = wanted.get((root, rel))
            if entry is None or h != recipe_hash:
                continue
            f, want_digest, old = entry
            if (f.size, f.mtime, want_digest) == (size, mtime, digest):
                use.append(row)
                old_ids.append(NEW if old is None else old)
                del wanted[(root, rel)]
        if use:
            merge(store, recipe, table.take(use), np.array(old_ids, np.int64), summary, warn)
            found += len(use)
    for path in shards:
        path.unlink(missing_ok=True)
    if found:
        warn(f"merged {found} files embedded by an earlier run (complete shards in {folder})")
    return [e for e in todo if (e[0].root, e[0].rel_path) in wanted]


def check_readable(path: Path) -> None:
    """Have one Ray worker open ``path``; refuse to start when it cannot (the corpus is not shared).

    Raises:
        InputError: the worker's error, its node, and what to do.
    """
    ray = import_ray()
    probe = ray.remote(num_cpus=0)(_open_on_worker)
    where, error = ray.get(probe.remote(os.fsencode(path)))
    if error is not None:
        raise InputError(f"a Ray worker on {where} cannot open {path} ({error}); every node must see the corpus "
                         "at the same absolute path (a shared filesystem such as NFS, mounted alike on each node)")


def _open_on_worker(path: bytes) -> tuple[str, str | None]:
    host = socket.gethostname()
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        return host, exc.strerror or str(exc)
    return host, None


def _run(engine: RayEngine, spec: WindowSpec, rest: list[Entry]) -> Iterator[pa.Table]:
    """Tables of embedded files (an ``i`` column, the index into ``rest``, and the shard's
    :data:`~retrieval.shards.DECODED_COLUMNS`), in ``rest`` order."""
    ray = import_ray()
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # merge in plan order: the same ids as local ingest
    ctx.enable_progress_bars = False
    items = [{"i": i, "path": os.fsencode(f.path)} for i, (f, _, _) in enumerate(rest)]
    ds = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // FILES_PER_TASK)))
    ds = ds.map_batches(_decode_batch, fn_kwargs={"spec": replace(spec, embed_recipe=None)},
                        batch_size=FILES_PER_TASK, batch_format="numpy", num_cpus=1)
    remote: dict[str, Any] = {"num_cpus": engine.cpus_per_actor}
    if engine.gpus_per_actor > 0:
        remote["num_gpus"] = engine.gpus_per_actor
    ds = ds.map_batches(Embedder, fn_constructor_kwargs={"spec": spec}, batch_size=FILES_PER_TASK,
                        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=engine.actors), **remote)
    yield from ds.iter_batches(batch_size=None, batch_format="pyarrow")


def _decode_batch(batch: dict[str, np.ndarray], spec: WindowSpec) -> dict[str, np.ndarray]:
    """A Ray Data task: decode and cut each path; long files come back marked for the actor to stream."""
    payloads = [pickle.dumps(decode_file(Path(os.fsdecode(p)), spec), protocol=5) for p in batch["path"]]
    return {"i": batch["i"], "path": batch["path"], "payload": np.array(payloads, dtype=object)}


class Embedder:
    """A Ray Data actor: builds the recipe's encoder once, then embeds and pools decoded files.

    Each call gets ``i``, ``path`` and ``payload`` (pickled :class:`DecodedFile` with audio)
    and returns an Arrow table: ``i`` and the shard's :data:`~retrieval.shards.DECODED_COLUMNS`
    (windows, vectors, errors), so the driver writes and merges columns, never one file at a time.
    """

    def __init__(self, spec: WindowSpec) -> None:
        self.spec = spec
        self.encoder = worker_encoder(spec)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        decoded: list[DecodedFile] = [pickle.loads(p) for p in batch["payload"]]
        for k, d in enumerate(decoded):
            if d.long:
                decoded[k] = self._stream(Path(os.fsdecode(batch["path"][k])), d)
        _embed_in_worker([d for d in decoded if d.vectors is None], self.spec)
        table = decoded_table(decoded)
        return table.add_column(0, "i", pa.array(np.asarray(batch["i"], np.int64)))

    def _stream(self, path: Path, head: DecodedFile) -> DecodedFile:
        """A long file, decoded block by block (ingest's one window loop, :func:`scan_file`) and
        embedded :data:`STREAM_WINDOWS` windows at a time."""
        from retrieval.embed import Batching, embed_each

        recipe = self.spec.embed_recipe
        out = DecodedFile(info=head.info)
        vectors: list[np.ndarray] = []
        counts: list[int] = []
        errors: list[str | None] = []
        chunk: list[np.ndarray] = []
        batching = Batching(self.spec.batch_size)

        def flush() -> None:
            for vec, count, err in embed_each(self.encoder, chunk, recipe.pooling, batching):
                vectors.append(vec if vec is not None else np.zeros(recipe.dim, np.float32))
                counts.append(int(count) if vec is not None else 0)
                errors.append(err)
            chunk.clear()

        def take(_: int, audio: np.ndarray) -> bool:
            chunk.append(audio)
            if len(chunk) >= STREAM_WINDOWS:
                flush()
            return True

        scan_file(path, self.spec, out, take)  # a bad file: the reason is in out.error
        if out.error is not None:
            return out
        if chunk:
            flush()
        out.vectors = np.array(vectors, np.float32).reshape(len(vectors), recipe.dim)
        out.counts = np.array(counts, np.int64)
        out.window_errors = errors
        out.file_vector = pool_decoded(out, recipe.pooling)
        return out
