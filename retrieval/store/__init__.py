"""DuckDB metadata (source of truth) + FAISS vectors (derived, rebuildable) + the recipe."""

from retrieval.store.db import ErrorRow, FileRow, MetadataDB
from retrieval.store.store import LEVELS, Level, Store
from retrieval.store.vectors import VectorIndex

__all__ = ["LEVELS", "ErrorRow", "FileRow", "Level", "MetadataDB", "Store", "VectorIndex"]
