"""retrieve: search audio by meaning.

The Python API is the engine the CLI uses::

    from retrieval import Index, ingest
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Index", "ingest", "__version__"]

if TYPE_CHECKING:
    from retrieval.index import Index
    from retrieval.ingest import ingest


def __getattr__(name: str) -> Any:  # lazy: `import retrieval` stays cheap for the CLI's --help
    if name == "Index":
        from retrieval.index import Index

        return Index
    if name == "ingest":
        from retrieval.ingest import ingest

        return ingest
    raise AttributeError(f"module 'retrieval' has no attribute {name!r}")
