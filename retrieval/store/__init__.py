"""DuckDB metadata (source of truth) + FAISS vectors (derived, rebuildable) + the recipe."""

from __future__ import annotations

from typing import TYPE_CHECKING

from retrieval._lazy import attach

#: Public name -> the module that defines it. Imported on first use (PEP 562), so that
#: importing one light submodule (or the package for its docstring) loads nothing heavy.
_HOME = {
    "ErrorRow": "retrieval.store.db",
    "FileRow": "retrieval.store.db",
    "LEVELS": "retrieval.options",
    "Level": "retrieval.options",
    "MetadataDB": "retrieval.store.db",
    "Store": "retrieval.store.store",
    "VectorIndex": "retrieval.store.vectors",
}

if TYPE_CHECKING:
    from retrieval.store.db import ErrorRow, FileRow, MetadataDB
    from retrieval.options import LEVELS, Level
    from retrieval.store.store import Store
    from retrieval.store.vectors import VectorIndex

__all__ = ["ErrorRow", "FileRow", "LEVELS", "Level", "MetadataDB", "Store", "VectorIndex"]

__getattr__, __dir__ = attach(__name__, _HOME)
