"""Helpers shared by the benchmark scripts (``python scripts/bench_*.py`` puts this folder on the path)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class CachedResolve:
    """Stands in for ``retrieval.ingest.resolve``: loads each encoder once, then reuses it.

    Timed ingest runs then measure indexing, not model loading; each load's seconds are kept
    in :attr:`load_s` under ``label(choices)`` (by default the encoder's name).
    """

    def __init__(self, label: Callable[[Any], str] = lambda choices: choices.encoder or "logmel") -> None:
        from retrieval.configure import resolve

        self.resolve = resolve
        self.label = label
        self.cache: dict[str, tuple[Any, Any]] = {}
        self.load_s: dict[str, float] = {}

    def __call__(self, choices: Any, stored: Any) -> tuple[Any, Any]:
        key = repr(choices)
        if key not in self.cache:
            start = time.perf_counter()
            self.cache[key] = self.resolve(choices, stored)
            self.load_s[self.label(choices)] = time.perf_counter() - start
        return self.cache[key]
