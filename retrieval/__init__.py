"""retrieve: search audio by meaning.

The Python API is the engine the CLI uses::

    from retrieval import Index
    idx = Index.build("corpus/", "indexes/corpus")   # what `retrieve index` runs
    idx.search("clip.wav", k=5)

(``ingest`` and ``locate`` are also the names of submodules, so they are imported from
there: ``from retrieval.ingest import ingest``.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Index", "__version__"]

if TYPE_CHECKING:
    from retrieval.index import Index


def __getattr__(name: str) -> Any:  # lazy: `import retrieval` stays cheap for the CLI's --help
    if name == "Index":
        from retrieval.index import Index

        return Index
    raise AttributeError(f"module 'retrieval' has no attribute {name!r}")
