"""One progress bar for every long loop: tqdm on stderr, shown only when asked.

The library stays quiet by default. The CLI turns bars on for the duration of a command
(on a terminal, or with ``--progress``) with :func:`shown`, and long loops anywhere in
the package wrap themselves in :func:`bar`, so no function needs a ``progress`` argument.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_ENABLED: ContextVar[bool] = ContextVar("retrieval_progress", default=False)


@contextmanager
def shown(flag: bool | None = None) -> Iterator[bool]:
    """Show progress bars inside the block: ``True``, ``False``, or None for "when stderr is a terminal"."""
    on = sys.stderr.isatty() if flag is None else bool(flag)
    token = _ENABLED.set(on)
    try:
        yield on
    finally:
        _ENABLED.reset(token)


def is_enabled() -> bool:
    """Whether bars are on here (see :func:`shown`)."""
    return _ENABLED.get()


def bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str, unit: str = "it",
        enabled: bool | None = None) -> Any:
    """A tqdm bar on stderr over ``iterable`` (or updated by hand up to ``total``).

    It is disabled (a silent pass-through) unless ``enabled`` is True, or ``enabled`` is None
    and bars are on here (:func:`shown`), and for an empty ``total``.
    """
    from tqdm import tqdm

    on = is_enabled() if enabled is None else enabled
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, smoothing=0.1,
                disable=not on or total == 0)
