"""Where indexes live: ``--index NAME`` under ``indexes/`` (or ``RETRIEVE_INDEXES``), or a path.

Kept apart from :mod:`retrieval.index` (and free of numpy, pandas and DuckDB) so that the CLI
resolves ``--index`` without loading the engine.
"""

from __future__ import annotations

import os
from pathlib import Path

from retrieval.errors import IndexNotFoundError

#: Folder of indexes when ``--index`` names no path (override with ``RETRIEVE_INDEXES``).
DEFAULT_INDEXES = "indexes"


def indexes_dir() -> Path:
    return Path(os.environ.get("RETRIEVE_INDEXES", DEFAULT_INDEXES))


def index_path_for(corpus: Path, index: str | None) -> Path:
    """Where ``retrieve index CORPUS [--index X]`` writes: ``X`` if given, else ``indexes/<corpus name>``."""
    if index:
        return _as_path(index)
    name = Path(corpus).resolve().name or "index"
    return indexes_dir() / name


def find_index(index: str | None) -> Path:
    """Resolve ``--index`` for commands that read an index; omitted means "the only one"."""
    if index:
        path = _as_path(index)
        if not (path / "meta.duckdb").is_file():
            raise IndexNotFoundError(f"no index at {path}; build one with `retrieve index CORPUS --index {index}`")
        return path
    root = indexes_dir()
    found = sorted(p for p in root.glob("*") if (p / "meta.duckdb").is_file()) if root.is_dir() else []
    if len(found) == 1:
        return found[0]
    if not found:
        raise IndexNotFoundError(f"no index under {root}/; build one with `retrieve index CORPUS`")
    raise IndexNotFoundError(
        f"{len(found)} indexes under {root}/ ({', '.join(p.name for p in found)}); choose one with --index NAME")


def _as_path(index: str) -> Path:
    p = Path(index)
    return p if (os.sep in index or p.exists() or index.startswith(".")) else indexes_dir() / index
