"""Deprecated names from before "segment" became "window" (issue 16 item 7), in one place.

A slice of a file is a *window* everywhere now: code, CLI, JSON, docs and the store
(:mod:`retrieval.store.migrate` renames an older index on open). What scripts written
against the old names used still works, and will be removed in a later release:

JSON keys, printed beside their new names with the same values (:func:`with_legacy_keys`)
    rows (``--json``/``--csv``/``--nl`` of every row-printing command, the server's JSON API):
    ``segment_id`` (now ``window_id``), ``n_segments`` (``n_windows``);
    ``retrieve info --json``, ``/api/info`` and ``retrieve index --json``: ``segments``
    (``windows``), ``segments_silent`` (``windows_silent``), ``faiss_ntotal_segment``
    (``faiss_ntotal_window``), ``index.segment`` (``index.window``).
CLI options, accepted but not listed in ``--help``
    ``--segments`` (``--windows``), ``--level segment`` (``--level window``).
Server form fields
    ``segment_id`` (``window_id``), ``segments`` (``windows``).
Python
    ``Index.search*(segments=..., segment_id=...)`` (``windows=``, ``window_id=``), the level
    ``"segment"`` (``"window"``), ``retrieval.search.search_segments`` (``search_windows``),
    ``IngestSummary.segments`` (``.windows``).
    Each warns with a :class:`DeprecationWarning`. Result DataFrames carry only ``window_id``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

#: New key -> deprecated key, in rows.
ROW_KEYS: Mapping[str, str] = {"window_id": "segment_id", "n_windows": "n_segments"}
#: New key -> deprecated key, in an index's info and an ingest summary (nested: ``index.window``).
INFO_KEYS: Mapping[str, str] = {"windows": "segments", "windows_silent": "segments_silent",
                                "faiss_ntotal_window": "faiss_ntotal_segment", "window": "segment"}
#: New keyword argument -> deprecated one, of the Python API (:func:`renamed_keywords`).
KEYWORDS: Mapping[str, str] = {"windows": "segments", "window_id": "segment_id"}
#: Deprecated level name -> new one.
LEVELS: Mapping[str, str] = {"segment": "window"}

T = TypeVar("T")


def with_legacy_keys(value: Any, keys: Mapping[str, str] = ROW_KEYS) -> Any:
    """``value`` (a JSON document: dicts, lists, scalars) with each deprecated key of ``keys``
    added, same value, after every new key found, at any depth. Copies; ``value`` is not changed."""
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            out[k] = with_legacy_keys(v, keys)
            old = keys.get(k)
            if old is not None and old not in value:
                out[old] = out[k]
        return out
    if isinstance(value, list):
        return [with_legacy_keys(v, keys) for v in value]
    return value


def level_name(level: str) -> str:
    """``level`` with the deprecated ``segment`` turned into ``window`` (with a warning)."""
    new = LEVELS.get(level)
    if new is None:
        return level
    warnings.warn(f"level {level!r} is deprecated; use {new!r}", DeprecationWarning, stacklevel=3)
    return new


def renamed_keywords(f: Callable[..., T]) -> Callable[..., T]:
    """Accept the deprecated keyword arguments of :data:`KEYWORDS` (with a warning) for ``f``."""
    old_to_new = {old: new for new, old in KEYWORDS.items()}

    @functools.wraps(f)
    def call(*args: Any, **kwargs: Any) -> T:
        for old in [k for k in kwargs if k in old_to_new]:
            new = old_to_new[old]
            if new in kwargs:
                raise TypeError(f"{f.__name__}() got both {new!r} and its deprecated name {old!r}")
            warnings.warn(f"{f.__name__}({old}=...) is deprecated; use {new}=...", DeprecationWarning, stacklevel=2)
            kwargs[new] = kwargs.pop(old)
        return f(*args, **kwargs)

    return call
