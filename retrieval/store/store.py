"""One index on disk: ``meta.duckdb`` (truth) plus ``windows.faiss`` and ``files.faiss`` (derived).

Opening a store checks each FAISS file against DuckDB (generation stamp, vector
count and index kind) and rebuilds it from DuckDB when they disagree, e.g. after an
ingest was killed between a database commit and the FAISS write. Every search checks
the generation again, so an index never returns an id DuckDB no longer holds.

The requested index kind (``--index-type``: auto, flat, hnsw, ivfpq) is a manifest
key, not part of the recipe: it changes how vectors are searched, not the vectors.
Each build's kind, knobs and measured recall@10 are kept in the FAISS sidecar and in
the manifest (``faiss_window``, ``faiss_file``), and shown by :meth:`Store.info`.

After an ingest, :meth:`Store.sync_vectors` brings the FAISS files up to date: in place
(removed ids out, new rows in through the stored post-processing) while the corpus has
changed by at most :data:`REFIT_CHANGE_SHARE` since the post-processing was fitted, by a
refit and a full rebuild otherwise. The manifest records what the fit saw (``fitted_on``
windows, ``fitted_next_id``, ``fitted_generation``), and each FAISS sidecar records the fit
it was built under (``postprocess_fit``, a digest of the transform).

Reading while indexing (:mod:`retrieval.store.snapshot`): a writer holds ``meta.duckdb``
exclusively, so :meth:`Store.open` for reading falls back to the newest published
snapshot when the live file is locked, and reads the live file otherwise. A writer
publishes a snapshot when it closes cleanly after a change, and when it opens an index
whose snapshot is behind the database. Long-running readers (a server) open with
``snapshot_only=True``: they always read a snapshot, so they never hold the live file and
never block an ingest, and :meth:`Store.newer_snapshot` says when to reopen.
Writers also remove FAISS temp files left by a killed run when they open.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.errors import IndexLockedError, IndexNotFoundError, RetrievalError, StoreError
from retrieval.options import LEVELS, Level  # noqa: F401  (re-exported by retrieval.store)
from retrieval.hits import shown_columns
from retrieval.postprocess import Postprocess
from retrieval.recipe import Recipe
from retrieval.store import lookup, migrate, snapshot, summary, vector_file
from retrieval.store import vectors as vector_index
from retrieval.store.db import MetadataDB, pandas_of
from retrieval.store.vectors import (IndexType, VectorIndex, check_index_type, choose_index_type, describe_sidecar,
                                     sidecar)

if TYPE_CHECKING:
    import pandas as pd

DB_NAME = "meta.duckdb"
#: The ``meta.duckdb`` table that held window labels before ``labels.sqlite`` (:mod:`retrieval.store.labels`).
LEGACY_LABELS = "window_labels"
#: Manifest key of the requested index kind; ``faiss_<level>`` keys hold each build's description.
INDEX_TYPE_KEY = "index_type"
#: An ingest refits the post-processing and rebuilds both FAISS indexes once the window
#: vectors added plus removed since the fit exceed this share of those it was fitted on;
#: below it, the indexes are updated in place under the stored transform. Measured on FSDD
#: (log-mel, whitening, speaker-grouped kNN accuracy@1 0.765 when fitted on everything;
#: ``docs/bench_ingest.md``): additions like the fitted data do not matter even at +100 %
#: (within 0.3 points), but new material does. Leaving part of one speaker out of the fit
#: moved accuracy by +0.05 points on average at +4 % (worst -0.3), -0.4 at +9 % (worst
#: -1.6) and -1.8 at +20 % (worst -6.4), keeping 0.94, 0.90 and 0.82 of each top-10. At 10 %
#: the worst case stays under two points, and a library growing a few files a day still
#: rebuilds rarely (a 1M HNSW rebuild takes 7-12 min).
#: The same bound keeps the ANN structure close to what its build measured: HNSW keeps
#: removed ids in its graph (masked), and IVF-PQ codes new vectors with old codebooks.
REFIT_CHANGE_SHARE = 0.10
#: The post-processing is fitted on at most this many window vectors, picked at random (seeded)
#: when there are more: 64k x 512-d is 256 MiB of float64 for the whitening SVD, and a mean and
#: covariance of 512 dimensions are well estimated long before.
FIT_SAMPLE_MAX = 65_536
#: A writer waits this long for a lock held by another process (a reader of the live
#: file finishing a query) before it gives up with the holder's PID and command.
LOCK_WAIT_S = 5.0


@dataclass(frozen=True)
class FitDrift:
    """How far the window vectors moved from those the post-processing was fitted on.

    Ids are never reused, so rows with ids below ``fitted_next_id`` are what is left of
    the fitted set and rows at or above it were added since; both counts are exact.
    """

    fitted_on: int
    added: int
    removed: int

    @property
    def share(self) -> float:
        """(added + removed) / fitted_on; what :data:`REFIT_CHANGE_SHARE` is compared with."""
        return (self.added + self.removed) / max(self.fitted_on, 1)


class Store:
    """An index folder. Use :meth:`open` for an existing index and :meth:`create` for a new one."""

    def __init__(self, root: Path, db: MetadataDB, writable: bool, *, lease: snapshot.Lease | None = None,
                 reading: str = "live") -> None:
        self.root = Path(root)
        self.db = db
        self.writable = writable
        self.lease = lease  # held while this store reads a snapshot
        #: Where ``meta.duckdb`` and the FAISS files are read: the index folder, or a snapshot in it.
        self.files_dir = lease.folder if lease is not None else self.root
        self.reading = reading  # why this store reads what it reads, in words
        self.published: snapshot.Pointer | None = None  # the snapshot this writer last published
        self._vectors: dict[str, VectorIndex] = {}
        self._postprocess: Postprocess | None = None
        self._digest: tuple[Postprocess, str] | None = None
        self._hit_tables: tuple[tuple[str | None, str | None], pd.DataFrame, pd.DataFrame] | None = None
        self.repaired: list[str] = []

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def create(cls, root: Path, *, lock_wait_s: float = LOCK_WAIT_S) -> Store:
        """Open for writing, creating the folder and schema when absent."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        return cls._writer(root, lock_wait_s)

    @classmethod
    def open(cls, root: Path, *, writable: bool = False, snapshot_only: bool = False,
             lock_wait_s: float = LOCK_WAIT_S) -> Store:
        """Open an existing index; FAISS files are checked and repaired lazily on first use.

        Readers read the live database when no other process holds it, else the newest
        published snapshot. ``snapshot_only`` (long-running readers) always reads a snapshot,
        publishing one first when none is current and no writer runs. Writers wait up to
        ``lock_wait_s`` for another process's lock.
        """
        root = Path(root)
        if not (root / DB_NAME).is_file():
            raise IndexNotFoundError(f"no index at {root} (missing {DB_NAME}); build one with `retrieve index CORPUS`")
        if writable:
            return cls._writer(root, lock_wait_s)
        return cls._snapshot_reader(root) if snapshot_only else cls._reader(root)

    @classmethod
    def _writer(cls, root: Path, lock_wait_s: float) -> Store:
        deadline = time.monotonic() + lock_wait_s
        while True:
            try:
                db = MetadataDB(root / DB_NAME)
                break
            except IndexLockedError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
        store = cls(root, db, writable=True)
        try:
            migrate.rename_files(root)  # after the schema's migration committed (MetadataDB's open)
            if db.has_table(LEGACY_LABELS):  # labels an older index kept in meta.duckdb (pandas only then)
                from retrieval.store.labels import LabelStore

                LabelStore(db, root).import_legacy()
            store._remove_temp_files()
            snapshot.collect(root)
            if store.recipe is not None and not store.snapshot_current():
                store.publish()  # readers during this write see everything committed before it
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def _reader(cls, root: Path) -> Store:
        try:
            db = MetadataDB(root / DB_NAME, read_only=True)
            if migrate.needs_migration(db) or migrate.files_pending(root):  # older format: a writer's open migrates it
                db.close()
                cls._migrate(root)
                db = MetadataDB(root / DB_NAME, read_only=True)
            return cls(root, db, writable=False)
        except IndexLockedError as exc:
            lease = snapshot.lease_current(root)
            if lease is None:
                raise IndexLockedError(f"{exc}; no snapshot of this index is published yet (a writer publishes "
                                       "one when it finishes)") from exc
            return cls._on_lease(root, lease, "snapshot: another connection holds the live database")

    @classmethod
    def _migrate(cls, root: Path) -> None:
        """Open and close a writer of ``root``: it migrates an older store format
        (:mod:`retrieval.store.migrate`)."""
        try:
            with cls._writer(root, lock_wait_s=LOCK_WAIT_S):
                pass
        except IndexLockedError:
            raise
        except StoreError as exc:
            raise StoreError(f"{root} is an index of an older format (segments, not windows) that has to be "
                             f"migrated once by a process that can write it: {exc}; run `retrieve info --index "
                             f"{root}` where the folder is writable") from exc

    @classmethod
    def _snapshot_reader(cls, root: Path) -> Store:
        try:
            with cls._writer(root, lock_wait_s=0):  # publishes a snapshot if none is current
                pass
        except StoreError:
            pass  # a writer runs (it published when it opened) or the folder is not writable
        lease = snapshot.lease_current(root)
        if lease is None:
            return cls._reader(root)
        return cls._on_lease(root, lease, "snapshot: opened snapshot-only")

    @classmethod
    def open_published(cls, root: Path) -> Store:
        """Read the snapshot ``snapshots/CURRENT`` names, as it is: for a process that has just
        published it, to see its own write without :meth:`open`'s check that the snapshot is
        current (which opens the live database once more). Without a snapshot, as
        ``open(root, snapshot_only=True)``."""
        root = Path(root)
        lease = snapshot.lease_current(root)
        if lease is None:
            return cls.open(root, snapshot_only=True)
        return cls._on_lease(root, lease, "snapshot: the one this process just published")

    @classmethod
    def _on_lease(cls, root: Path, lease: snapshot.Lease, reading: str) -> Store:
        try:
            db = MetadataDB(lease.folder / DB_NAME, read_only=True)
            if migrate.needs_migration(db):
                db.close()
                raise IndexLockedError(f"the snapshot of {root} is of an older format: a writer is migrating "
                                       "the index; retry when it has published")
        except BaseException:
            lease.release()
            raise
        return cls(root, db, writable=False, lease=lease, reading=reading)

    def close(self) -> None:
        self.db.close()
        if self.lease is not None:
            self.lease.release()

    @classmethod
    def read_info(cls, root: Path, *, verify: bool = False) -> dict[str, Any]:
        """:meth:`info` of the index at ``root``, opened for reading; kept as its summary for
        the next reader when it was read live (what ``retrieve info`` does when the summary
        is missing or stale)."""
        store = cls.open(root)
        try:
            info = store.info(verify=verify)
        except BaseException:
            store.close()
            raise
        store.close_recording(info)
        return info

    def close_recording(self, info: dict[str, Any]) -> None:
        """Close, and keep ``info`` (this store's :meth:`info`) as the index's ``info.json`` for
        readers that want it without opening the index (:mod:`retrieval.store.summary`).

        Recorded only for the live database with nothing left in its WAL, and only when no
        watched file changed between the stamp (taken while this store still holds the
        database) and the close.
        """
        live = self.lease is None and not self.db.wal_path.exists()
        if live:
            try:
                self.write_lookup()
            except BaseException:
                self.close()
                raise
        before = summary.stamp(self.root) if live else None
        self.close()
        if before is not None and summary.stamp(self.root) == before:
            summary.write(self.root, info, before)

    def write_lookup(self) -> None:
        """Keep what a one-off search reads from DuckDB as plain files (:mod:`retrieval.store.lookup`),
        unless the lookup already holds this committed state. Call it only where the summary
        is recorded next (:meth:`close_recording`): the summary's stamp is what makes it trusted."""
        recipe = self.recipe
        faiss_meta = self._current_sidecar("window") if recipe is not None else None
        if recipe is None or faiss_meta is None:  # a query would have to rebuild FAISS: the full path
            lookup.remove(self.root)
            return
        columns = self.db.file_columns()
        key = f"{self.db.state_key()}:{'|'.join(columns)}"
        if lookup.recorded_key(self.root) == key:
            return
        extra = shown_columns(columns)
        bounds = self.db.window_bounds()
        from retrieval.store.columns import to_numpy  # reads the buffers: pyarrow's to_numpy imports pandas

        windows = np.stack([to_numpy(bounds.column(c)).astype(np.int64)
                            for c in ("window_id", "file_id", "start_sample", "end_sample")],
                           axis=1) if bounds.num_rows else np.zeros((0, 4), np.int64)
        files = self.db.files_table().select(["file_id", "path", "root", "duration_s", *extra]).to_pylist()
        pp = self.postprocess
        meta = {"state_key": key, "recipe": recipe.to_json(), "generation": self._generation(),
                "fit_digest": self.fit_digest(), "columns": extra, "roots": self.db.roots(),
                "corpus_root": self.db.get("corpus_root"),
                "faiss": {"path": str(self.faiss_path("window").relative_to(self.root)),
                          "ntotal": faiss_meta["ntotal"], "kind": faiss_meta["kind"]}}
        lookup.write(self.root, meta=meta, windows=windows, files=files, postprocess=dict(pp.state))

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if not (self.writable and exc_type is None):
            self.close()
            return
        try:
            if self.recipe is not None and not self.snapshot_current():
                self.publish()  # FAISS files as they are: an ingest has synced them; others are rebuilt by readers
            else:
                self.db.checkpoint()  # an empty WAL: the summary below can be recorded
            # A summary only when FAISS is current: computing it must not rebuild anything here.
            info = self.info() if all(self._faiss_current(level) for level in LEVELS) else None
        except BaseException:
            self.close()
            raise
        if info is None:
            self.close()
        else:
            self.close_recording(info)

    # -- snapshots -------------------------------------------------------------------------

    @property
    def snapshot_id(self) -> int | None:
        """The snapshot this store reads; None when it reads the live database."""
        return None if self.lease is None else self.lease.id

    def newer_snapshot(self) -> bool:
        """True when a snapshot newer than the one this store reads is published (one small file read).

        A store on the live database holds it, so no writer can change it: always False.
        """
        if self.lease is None:
            return False
        pointer = snapshot.read_pointer(self.root)
        return pointer is not None and pointer.id != self.lease.id

    def snapshot_current(self) -> bool:
        """True when the published snapshot holds exactly the committed state of the live database."""
        pointer = snapshot.read_pointer(self.root)
        return pointer is not None and pointer.state == self.db.state_key() and (pointer.folder(self.root)
                                                                                 / snapshot.COMPLETE).is_file()

    def publish(self, sync: bool = False) -> snapshot.Pointer:
        """Publish the committed state as a new snapshot for readers (writers only).

        ``sync``: bring FAISS up to date first (:meth:`sync_vectors`); without it, a FAISS
        file that is not current is left out and the snapshot's readers rebuild it.
        Costs a checkpoint and a copy of ``meta.duckdb``; FAISS files are hard-linked.
        """
        if not self.writable:
            raise RetrievalError(f"index at {self.root} is open read-only; only a writer publishes snapshots")
        if sync:
            self.sync_vectors()
        self.db.checkpoint()
        files: list[Path] = []
        for level in LEVELS:
            if self._faiss_current(level):
                path = self.faiss_path(level)
                files += [path, sidecar(path)] + sorted(self.root.glob(f"{path.name}.*.npy"))
        self.published = snapshot.publish(self.root, self.db.path, files, self.db.state_key())
        return self.published

    def _faiss_current(self, level: Level) -> bool:
        return self._current_sidecar(level) is not None

    def _current_sidecar(self, level: Level) -> dict[str, Any] | None:
        """The sidecar of ``level``'s FAISS file when it says the file matches DuckDB (generation,
        count, kind, fit) and the file has the size it recorded; else None. Judged without
        reading the FAISS file: its checksum is verified when it is loaded."""
        path = self.faiss_path(level)
        try:
            meta = json.loads(sidecar(path).read_text())
            n = self.db.count_vectors(level)
            current = (isinstance(meta, dict) and str(meta.get("generation")) == self._generation()
                       and int(meta.get("ntotal", -1)) == n and meta.get("kind") == self.planned_index_type(n)[0]
                       and (meta.get("stats") or {}).get("postprocess_fit") == self.fit_digest()
                       and int((meta.get("stats") or {}).get("faiss_bytes", -1)) == path.stat().st_size)
        except (OSError, ValueError, TypeError, AttributeError):
            return None
        return meta if current else None

    def _remove_temp_files(self) -> None:
        """FAISS temp files, unreferenced float16 copies and search-vector copies left by a killed write (writers only)."""
        for level in LEVELS:
            path = self.faiss_path(level)
            for tmp in self.root.glob(f"{path.name}*.tmp"):
                tmp.unlink(missing_ok=True)
            try:
                named = json.loads(sidecar(path).read_text()).get("exact")
            except (OSError, ValueError, AttributeError):
                named = None
            keep = {named, named.replace(".exact.npy", ".ids.npy")} if isinstance(named, str) else set()
            for npy in self.root.glob(f"{path.name}.*.npy"):
                if npy.name not in keep:
                    npy.unlink(missing_ok=True)
            vector_file.remove_leftovers(self.root, level)

    # -- recipe ----------------------------------------------------------------------------

    @property
    def recipe(self) -> Recipe | None:
        text = self.db.get("recipe")
        return None if text is None else Recipe.from_json(text)

    def require_recipe(self) -> Recipe:
        recipe = self.recipe
        if recipe is None:
            raise IndexNotFoundError(f"index at {self.root} is empty (no recipe yet); run `retrieve index` first")
        return recipe

    def set_recipe(self, recipe: Recipe) -> str | None:
        """Record the recipe of a new index; an existing one must match exactly.

        The same checkpoint (by digest) at a new path re-points the stored recipe there; its
        hash, and every vector, stay as they are (``Recipe.relocated``).

        Returns:
            a line saying what was re-pointed, or None.
        """
        current = self.recipe
        if current is not None:
            current.check_same(recipe)
            moved = current.relocated(recipe)
            if recipe.copies and not current.copies:  # turned on later: recorded, nothing re-hashed
                current = replace(current, copies=True)
                self.db.set("recipe", (moved or current).to_json())
            if moved is None:
                return None
            moved = replace(moved, copies=current.copies)
            self.db.set("recipe", moved.to_json())
            return (f"re-pointed the {moved.encoder} checkpoint from {current.location} to {moved.location} "
                    f"(same weights, sha256 {moved.digest}; recipe hash {moved.hash()} unchanged)")
        self.db.set("recipe", recipe.to_json())
        self.db.set("recipe_hash", recipe.hash())
        self.db.create_windows(recipe.dim)
        return None

    # -- post-processing -------------------------------------------------------------------

    @property
    def postprocess(self) -> Postprocess:
        if self._postprocess is None:
            recipe = self.require_recipe()
            self._postprocess = Postprocess(recipe.postprocess, self.db.load_transform("postprocess"))  # type: ignore[arg-type]
        return self._postprocess

    def refit_postprocess(self) -> None:
        """Fit the recipe's post-processing on the current window vectors and store it.

        The fit sees every window vector, or :data:`FIT_SAMPLE_MAX` of them picked at random
        when there are more. Records what it covered (``fitted_on`` windows, ``fitted_next_id``: every row added
        later has an id at least this, ``fitted_generation``) and bumps the generation, since
        every search vector changes with the fit: FAISS files built before it are stale. Call
        it inside a transaction, so the transform and its record land together.
        """
        recipe = self.require_recipe()
        ids = self.db.vector_ids("window")
        if len(ids) > FIT_SAMPLE_MAX and recipe.postprocess != "none":  # a sample: never every vector at once
            pick = np.sort(np.random.default_rng(0).choice(len(ids), FIT_SAMPLE_MAX, replace=False))
            _, raw = self.db.vectors_by_id("window", ids[pick], recipe.dim)
        else:
            raw = (self.db.vectors("window", recipe.dim)[1] if recipe.postprocess != "none"
                   else np.zeros((0, recipe.dim), np.float32))
        self._postprocess = Postprocess.fit(recipe.postprocess, raw)
        self.db.save_transform("postprocess", self._postprocess.state)
        self.db.set("fitted_on", str(len(ids)))
        self.db.set("fitted_next_id", self.db.get("next_id") or "0")
        self.db.set("fitted_generation", self.db.bump_generation())

    def fit_digest(self) -> str:
        """A short digest of the fitted transform (mode and arrays); FAISS sidecars record it."""
        pp = self.postprocess
        if self._digest is None or self._digest[0] is not pp:
            h = hashlib.blake2b(pp.mode.encode(), digest_size=8)
            for key in sorted(pp.state):
                arr = np.ascontiguousarray(pp.state[key])
                h.update(f"{key}:{arr.dtype}:{arr.shape}".encode())
                h.update(arr.tobytes())
            self._digest = (pp, h.hexdigest())
        return self._digest[1]

    def fit_drift(self, window_ids: np.ndarray | None = None) -> FitDrift | None:
        """Window vectors added and removed since the last fit; None when no fit size is recorded.

        ``window_ids``: the current window ids (:meth:`MetadataDB.vector_ids`), when at hand.
        """
        fitted_on, next_id = self.db.get("fitted_on"), self.db.get("fitted_next_id")
        if fitted_on is None or next_id is None:
            return None
        if window_ids is None:
            total, kept = self.db.count_ids("window", below=int(next_id))
        else:
            total, kept = int(window_ids.size), int(np.searchsorted(window_ids, int(next_id)))
        return FitDrift(int(fitted_on), added=total - kept, removed=max(0, int(fitted_on) - kept))

    # -- FAISS -----------------------------------------------------------------------------

    @property
    def index_type_requested(self) -> str:
        """The recorded ``--index-type`` (``auto`` when none was recorded)."""
        return self.db.get(INDEX_TYPE_KEY) or "auto"

    def set_index_type(self, requested: str) -> None:
        """Record the index kind to build (``auto``, ``flat``, ``hnsw``, ``ivfpq``) for later builds and opens.

        A change makes the loaded indexes stale: the next :meth:`vectors` rebuilds them.
        """
        check_index_type(requested)
        if self.db.get(INDEX_TYPE_KEY) != requested:
            self.db.set(INDEX_TYPE_KEY, requested)
            self._vectors.clear()

    def planned_index_type(self, n: int) -> tuple[IndexType, str]:
        """The kind a build of ``n`` vectors gets under the recorded request, and why."""
        return choose_index_type(self.index_type_requested, n, self.search_dim)

    def faiss_path(self, level: Level) -> Path:
        return self.files_dir / f"{level}s.faiss"

    def vectors(self, level: Level) -> VectorIndex:
        """The FAISS index of ``level``, rebuilt from DuckDB first if it is missing or stale.

        A loaded index is kept; it is checked against the DuckDB generation on every
        call (one manifest read), so a change to the vectors is never searched stale.
        """
        vi = self._vectors.get(level)
        if vi is not None and vi.generation == self._generation():
            return vi
        if vi is not None:  # the vectors changed under us: the fitted post-processing may have too
            self._postprocess = None
        vi = VectorIndex.load(self.faiss_path(level))
        if vi is None or not self._consistent(level, vi):
            vi = self.rebuild(level)
            self.repaired.append(level)
        self._vectors[level] = vi
        return vi

    def search_vectors(self, level: Level = "window") -> tuple[np.ndarray, np.ndarray]:
        """``(ids (n,) int64 sorted, search vectors (n, D) float32)`` of every row with a vector at
        ``level``, memory-mapped from a derived copy when current (:mod:`retrieval.store.vector_file`)."""
        return vector_file.search_vectors(self, level)

    def _generation(self) -> str:
        return self.db.get("generation") or "0"

    def _consistent(self, level: Level, vi: VectorIndex) -> bool:
        if vi.generation != self._generation():
            return False
        if vi.stats.get("postprocess_fit") != self.fit_digest():
            return False
        n = self.db.count_vectors(level)
        return vi.ntotal == n and vi.kind == self.planned_index_type(n)[0]

    def rebuild(self, level: Level) -> VectorIndex:
        """Rebuild ``level`` from DuckDB through the fitted post-processing, and save it atomically.

        The kind follows :meth:`planned_index_type`; recall@10 is measured by the build and
        recorded, with the kind and knobs, in the sidecar and (when writable) the manifest.
        """
        recipe = self.require_recipe()
        kind, reason = self.planned_index_type(self.db.count_vectors(level))
        mapped = self.writable and self.lease is None and vector_file.exists(self.root, level)
        if kind == "ivfpq" and not mapped:  # never every vector at once: a sample trains, chunks are added
            ids = self.db.vector_ids(level)
            vi = VectorIndex.build_chunked(ids, self._chunk_reader(level, ids), self._generation(), self.faiss_path(level))
        else:
            ids, raw = self.db.vectors(level, recipe.dim)
            vectors = self.postprocess.apply(raw) if len(raw) else np.zeros((0, self.search_dim), np.float32)
            if mapped:  # the adaptation loop maps a copy of these vectors: refresh it while they are in memory
                vector_file.save(self.root, level, self._generation(), self.fit_digest(), ids, vectors)
            vi = VectorIndex.build(ids, vectors, self._generation(), kind)
        vi.stats.update(requested=self.index_type_requested, reason=reason, postprocess_fit=self.fit_digest())
        try:
            vi.save(self.faiss_path(level))
        except OSError as exc:  # a read-only folder still serves queries from memory
            self.repaired.append(f"{level} (not saved: {exc.strerror})")
        if self.writable:
            self.db.set(f"faiss_{level}", json.dumps(vi.describe()))
        self._vectors[level] = vi
        return vi

    def _chunk_reader(self, level: Level, ids: np.ndarray) -> Callable[[int, int], np.ndarray]:
        """``read(a, b)``: the search vectors of ``ids[a:b]`` (``ids`` sorted), by one range read of DuckDB."""
        dim = self.require_recipe().dim

        def read(a: int, b: int) -> np.ndarray:
            b = min(b, len(ids))
            got, raw = self.db.vectors_between(level, int(ids[a]), int(ids[b - 1]), dim)
            if not np.array_equal(got, ids[a:b]):
                raise StoreError(f"{level} vectors changed during a FAISS build ({len(got)} read for {b - a} ids)")
            return self.postprocess.apply(raw)

        return read

    def rebuild_all(self) -> None:
        for level in LEVELS:
            self.rebuild(level)

    def sync_vectors(self, refit: bool = False) -> str:
        """Bring both FAISS indexes up to date with DuckDB after an ingest; returns what it did, in words.

        * **In place** while the window vectors added plus removed since the post-processing
          was fitted stay within :data:`REFIT_CHANGE_SHARE` of those it was fitted on: each
          index is loaded from disk, loses the ids DuckDB no longer holds and gains the new
          rows through the stored transform, is stamped with the current generation and saved.
          Search vectors of old rows do not change, and new rows get the same transform. ANN
          recall is not re-measured (that needs every vector): the recorded recall@10 stays
          the one measured at the last build, and the sidecar says so, with the vectors added
          and removed since (``added_since_build``, ``removed_since_build``, ``recall_note``).
        * **Refit and rebuild** (every search vector changes) when ``refit`` is asked for; when
          the change exceeds the threshold or its size is unknown; or when an index cannot be
          updated in place: its file is missing, unreadable or built under another fit, or the
          kind :meth:`planned_index_type` picks for the new count differs from the file's.
          The refit is skipped when nothing changed since the last fit.

        Crash safety: DuckDB is committed before this runs, and an index file counts only
        once its sidecar is written (the old sidecar is removed before the file is
        replaced). A kill at any point leaves files that :meth:`vectors` rebuilds on open or
        that the next call diffs again; ids are never reused, so the diff cannot duplicate
        or lose a row.
        """
        if not self.writable:
            raise RetrievalError(f"index at {self.root} is open read-only; open it writable to update FAISS")
        self.require_recipe()
        if refit:
            return self._refit_and_rebuild("refit requested", force=True)
        if self._generation() == self.db.get("fitted_generation"):  # nothing changed since the fit
            repaired = len(self.repaired)
            for level in LEVELS:
                self.vectors(level)  # repairs a stale FAISS file left by a killed run
            return "unchanged" if len(self.repaired) == repaired else f"rebuilt {', '.join(self.repaired[repaired:])}"
        window_ids = self.db.vector_ids("window")
        drift = self.fit_drift(window_ids)
        if drift is None:
            first = self.db.get("fitted_generation") is None
            return self._refit_and_rebuild("a new index" if first else
                                           "no record of what the post-processing was fitted on")
        change = (f"{drift.added} added, {drift.removed} removed since the fit on {drift.fitted_on} windows "
                  f"({drift.share:.1%})")
        if drift.share > REFIT_CHANGE_SHARE:
            return self._refit_and_rebuild(f"{change} > {REFIT_CHANGE_SHARE:.0%}")
        bases: dict[Level, tuple[VectorIndex, np.ndarray]] = {}
        for level in LEVELS:
            now = window_ids if level == "window" else self.db.vector_ids(level)
            base = self._update_base(level, len(now))
            if isinstance(base, str):
                return self._refit_and_rebuild(base)
            bases[level] = (base, now)
        done = [f"{level} +{a} -{r}" for level, (a, r) in
                ((level, self._update_in_place(level, *bases[level])) for level in LEVELS)]
        return f"updated in place ({', '.join(done)}); {change}"

    def _refit_and_rebuild(self, why: str, force: bool = False) -> str:
        """Refit the post-processing (when forced, or anything changed since the last fit), then rebuild both levels."""
        refit = force or self._generation() != self.db.get("fitted_generation")
        if refit:
            with self.db.transaction():
                self.refit_postprocess()
        self.rebuild_all()
        return f"{'refitted post-processing and ' if refit else ''}rebuilt: {why}"

    def _update_base(self, level: Level, n: int) -> VectorIndex | str:
        """The FAISS file of ``level`` if it can be updated in place to ``n`` vectors; else why not."""
        vi = VectorIndex.load(self.faiss_path(level))
        if vi is None:
            return f"{level} FAISS file missing or unreadable"
        if vi.stats.get("postprocess_fit") != self.fit_digest():
            return f"{level} FAISS file built under another post-processing fit"
        if vi.dim != self.search_dim:
            return f"{level} FAISS file holds dim {vi.dim}; search vectors have dim {self.search_dim}"
        kind, _ = self.planned_index_type(n)
        if kind != vi.kind:
            return f"{level} index kind changes from {vi.kind} to {kind} at {n} vectors"
        return vi

    def _update_in_place(self, level: Level, vi: VectorIndex, now: np.ndarray) -> tuple[int, int]:
        """Remove ids DuckDB lost, add its new rows, stamp and save; returns ``(added, removed)``."""
        have = vi.ids()
        gone = np.setdiff1d(have, now, assume_unique=True)
        new = np.setdiff1d(now, have, assume_unique=True)
        if gone.size or new.size or vi.generation != self._generation():
            vi.remove(gone)
            added = 0
            step = vector_index.BUILD_CHUNK  # never every new vector at once
            for a in range(0, len(new), step):
                ids, raw = self.db.vectors_by_id(level, new[a:a + step], self.require_recipe().dim)
                if len(ids):
                    vi.add(ids, self.postprocess.apply(raw))
                    added += len(ids)
            vi.generation = self._generation()
            built = int(vi.stats.get("built_ntotal", have.size))
            added = int(vi.stats.get("added_since_build", 0)) + added
            removed = int(vi.stats.get("removed_since_build", 0)) + int(gone.size)
            _, reason = self.planned_index_type(vi.ntotal)
            vi.stats.update(requested=self.index_type_requested, reason=reason, built_ntotal=built,
                            added_since_build=added, removed_since_build=removed)
            if vi.kind != "flat":
                vi.stats["recall_note"] = (f"measured at build over {built} vectors ({vi.stats.get('recall_queries')} "
                                           f"as queries); {added} added, {removed} removed since, not re-measured")
            path = self.faiss_path(level)
            sidecar(path).unlink(missing_ok=True)  # from here until the new sidecar lands, the file is not trusted
            vi.save(path)
            self.db.set(f"faiss_{level}", json.dumps(vi.describe()))
        self._vectors[level] = vi
        return int(new.size), int(gone.size)

    @property
    def search_dim(self) -> int:
        return self.postprocess.out_dim or self.require_recipe().dim

    def hit_tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(windows by window_id, files by file_id)``: what search results are looked up in.

        ``windows`` holds ``file_id, start_sample, end_sample`` of every row with a vector;
        ``files`` every column of ``files`` but ``content_hash``. Looking hits up in DuckDB
        costs a scan of ``windows`` per query (10-40 ms at 100k windows), so both are
        kept until the vectors (``generation``) or the metadata (``metadata_version``)
        change, also when another process changed them.
        """
        key = (self.db.get("generation"), self.db.get("metadata_version"))
        if self._hit_tables is None or self._hit_tables[0] != key:
            windows = self.db.window_bounds().to_pandas().set_index("window_id")
            files = pandas_of(self.db.files_table()).set_index("file_id")
            self._hit_tables = (key, windows, files)
        return self._hit_tables[1], self._hit_tables[2]

    # -- reporting -------------------------------------------------------------------------

    def info(self, verify: bool = False) -> dict[str, Any]:
        """Counts, recipe and consistency, as plain JSON-able values.

        A FAISS file whose sidecar says it is current (and whose size is the recorded one) is
        described from the sidecar without being read; ``verify`` loads each file instead,
        which checks its checksum and rebuilds it from DuckDB when damaged. Stale or missing
        files are rebuilt either way.
        """
        recipe = self.recipe
        files = self.db.file_counts()
        errors = self.db.error_counts()
        out: dict[str, Any] = {
            "path": str(self.root),
            "corpus_root": self.db.get("corpus_root"),
            "corpus_roots": self.db.roots(),
            "files": files[0], "files_silent": files[1], "audio_hours": round(files[2] / 3600, 4),
            "errors": errors[0], "warnings": errors[1],
            "windows": self.db.count_vectors("window"), "file_vectors": self.db.count_vectors("file"),
            "metadata_columns": self.db.metadata_columns(),
            "index_type_requested": self.index_type_requested,
            "reading": self.reading,
            "snapshot": snapshot.describe(self.lease.pointer if self.lease else snapshot.read_pointer(self.root)),
        }
        if recipe is not None:
            out.update({
                "windows_silent": self.db.silent_windows(),
                "recipe": json.loads(recipe.to_json()),
                "recipe_hash": recipe.hash(),
                "dim": recipe.dim,
                "search_dim": self.search_dim,
            })
            consistent = True
            out["index"] = {}
            for level in LEVELS:
                meta = None if verify or level in self._vectors else self._current_sidecar(level)
                if meta is None:
                    vi = self.vectors(level)
                    ntotal, described = vi.ntotal, vi.describe()
                else:
                    ntotal, described = int(meta["ntotal"]), describe_sidecar(meta)
                out[f"faiss_ntotal_{level}"] = ntotal
                out["index"][level] = described
                consistent &= ntotal == self.db.count_vectors(level)
            out["faiss_ntotal"] = out["faiss_ntotal_window"]
            window = out["index"]["window"]
            out["index_type"] = window["index_type"]
            out["index_type_reason"] = window.get("reason")
            out["recall_at_10"] = window.get("recall_at_10")
            out["recall_note"] = window.get("recall_note")
            drift = self.fit_drift()
            out["postprocess_fit"] = None if drift is None else {
                "mode": recipe.postprocess, "fitted_on": drift.fitted_on,
                "fitted_generation": self.db.get("fitted_generation"),
                "added_since": drift.added, "removed_since": drift.removed,
                "change_share": round(drift.share, 4), "refit_above": REFIT_CHANGE_SHARE,
            }
            out["consistent"] = bool(consistent)
            out["repaired_on_open"] = list(self.repaired)
        return out
