"""One index on disk: ``meta.duckdb`` (truth) plus ``segments.faiss`` and ``files.faiss`` (derived).

Opening a store checks each FAISS file against DuckDB (generation stamp, vector
count and index kind) and rebuilds it from DuckDB when they disagree, e.g. after an
ingest was killed between a database commit and the FAISS write. Every search checks
the generation again, so an index never returns an id DuckDB no longer holds.

The requested index kind (``--index-type``: auto, flat, hnsw, ivfpq) is a manifest
key, not part of the recipe: it changes how vectors are searched, not the vectors.
Each build's kind, knobs and measured recall@10 are kept in the FAISS sidecar and in
the manifest (``faiss_segment``, ``faiss_file``), and shown by :meth:`Store.info`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np

from retrieval.errors import IndexNotFoundError, RetrievalError
from retrieval.postprocess import Postprocess
from retrieval.recipe import Recipe
from retrieval.store.db import MetadataDB
from retrieval.store.vectors import IndexType, VectorIndex, check_index_type, choose_index_type

Level = Literal["segment", "file"]
LEVELS: tuple[Level, ...] = ("segment", "file")
DB_NAME = "meta.duckdb"
#: Manifest key of the requested index kind; ``faiss_<level>`` keys hold each build's description.
INDEX_TYPE_KEY = "index_type"


class Store:
    """An index folder. Use :meth:`open` for an existing index and :meth:`create` for a new one."""

    def __init__(self, root: Path, db: MetadataDB, writable: bool) -> None:
        self.root = Path(root)
        self.db = db
        self.writable = writable
        self._vectors: dict[str, VectorIndex] = {}
        self._postprocess: Postprocess | None = None
        self.repaired: list[str] = []

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def create(cls, root: Path) -> Store:
        """Open for writing, creating the folder and schema when absent."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        return cls(root, _connect(root / DB_NAME, read_only=False), writable=True)

    @classmethod
    def open(cls, root: Path, *, writable: bool = False) -> Store:
        """Open an existing index; FAISS files are checked and repaired lazily on first use."""
        root = Path(root)
        if not (root / DB_NAME).is_file():
            raise IndexNotFoundError(f"no index at {root} (missing {DB_NAME}); build one with `retrieve index CORPUS`")
        return cls(root, _connect(root / DB_NAME, read_only=not writable), writable=writable)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    def set_recipe(self, recipe: Recipe) -> None:
        """Record the recipe of a new index; an existing one must match exactly."""
        current = self.recipe
        if current is not None:
            current.check_same(recipe)
            return
        self.db.set("recipe", recipe.to_json())
        self.db.set("recipe_hash", recipe.hash())
        self.db.create_segments(recipe.dim)

    # -- post-processing -------------------------------------------------------------------

    @property
    def postprocess(self) -> Postprocess:
        if self._postprocess is None:
            recipe = self.require_recipe()
            self._postprocess = Postprocess(recipe.postprocess, self.db.load_transform("postprocess"))  # type: ignore[arg-type]
        return self._postprocess

    def refit_postprocess(self) -> None:
        """Fit the recipe's post-processing on the current window vectors and store it."""
        recipe = self.require_recipe()
        _, raw = self.db.vectors("segment", recipe.dim)
        self._postprocess = Postprocess.fit(recipe.postprocess, raw)
        self.db.save_transform("postprocess", self._postprocess.state)

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
        return self.root / f"{level}s.faiss"

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

    def _generation(self) -> str:
        return self.db.get("generation") or "0"

    def _consistent(self, level: Level, vi: VectorIndex) -> bool:
        if vi.generation != self._generation():
            return False
        n = self.db.count_vectors(level)
        return vi.ntotal == n and vi.kind == self.planned_index_type(n)[0]

    def rebuild(self, level: Level) -> VectorIndex:
        """Rebuild ``level`` from DuckDB through the fitted post-processing, and save it atomically.

        The kind follows :meth:`planned_index_type`; recall@10 is measured by the build and
        recorded, with the kind and knobs, in the sidecar and (when writable) the manifest.
        """
        recipe = self.require_recipe()
        ids, raw = self.db.vectors(level, recipe.dim)
        vectors = self.postprocess.apply(raw) if len(raw) else np.zeros((0, self.search_dim), np.float32)
        kind, reason = self.planned_index_type(len(ids))
        vi = VectorIndex.build(ids, vectors, self._generation(), kind)
        vi.stats.update(requested=self.index_type_requested, reason=reason)
        try:
            vi.save(self.faiss_path(level))
        except OSError as exc:  # a read-only folder still serves queries from memory
            self.repaired.append(f"{level} (not saved: {exc.strerror})")
        if self.writable:
            self.db.set(f"faiss_{level}", json.dumps(vi.describe()))
        self._vectors[level] = vi
        return vi

    def rebuild_all(self) -> None:
        for level in LEVELS:
            self.rebuild(level)

    @property
    def search_dim(self) -> int:
        return self.postprocess.out_dim or self.require_recipe().dim

    # -- reporting -------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Counts, recipe and consistency, as plain JSON-able values."""
        recipe = self.recipe
        con = self.db.con
        files = con.execute("SELECT count(*), count(*) FILTER (status = 'silent'), coalesce(sum(duration_s), 0) "
                            "FROM files").fetchall()[0]
        errors = con.execute("SELECT count(*) FILTER (severity = 'error'), count(*) FILTER (severity = 'warning') "
                             "FROM errors").fetchall()[0]
        out: dict[str, Any] = {
            "path": str(self.root),
            "corpus_root": self.db.get("corpus_root"),
            "files": files[0], "files_silent": files[1], "audio_hours": round(files[2] / 3600, 4),
            "errors": errors[0], "warnings": errors[1],
            "segments": self.db.count_vectors("segment"), "file_vectors": self.db.count_vectors("file"),
            "metadata_columns": self.db.metadata_columns(),
            "index_type_requested": self.index_type_requested,
        }
        if recipe is not None:
            seg_silent = con.execute("SELECT count(*) FROM segments WHERE silent").fetchall()[0][0]
            out.update({
                "segments_silent": seg_silent,
                "recipe": json.loads(recipe.to_json()),
                "recipe_hash": recipe.hash(),
                "dim": recipe.dim,
                "search_dim": self.search_dim,
            })
            consistent = True
            out["index"] = {}
            for level in LEVELS:
                vi = self.vectors(level)
                out[f"faiss_ntotal_{level}"] = vi.ntotal
                out["index"][level] = vi.describe()
                consistent &= vi.ntotal == self.db.count_vectors(level)
            out["faiss_ntotal"] = out["faiss_ntotal_segment"]
            segment = out["index"]["segment"]
            out["index_type"] = segment["index_type"]
            out["index_type_reason"] = segment.get("reason")
            out["recall_at_10"] = segment.get("recall_at_10")
            out["consistent"] = bool(consistent)
            out["repaired_on_open"] = list(self.repaired)
        return out


def _connect(path: Path, read_only: bool) -> MetadataDB:
    try:
        return MetadataDB(path, read_only=read_only)
    except duckdb.IOException as exc:
        raise RetrievalError(
            f"cannot open {path}: {str(exc).splitlines()[0]} (another `retrieve index` may be writing it; "
            "wait for it to finish)"
        ) from exc
