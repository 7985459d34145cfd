"""How to locate: one value object for every ``locate`` function, the CLI and the server.

    >>> LocateOptions(window_s=0.5, near_peak=0.9)
    >>> locate("bark.wav", "night.wav", LocateOptions(threshold=0.4))
    >>> locate("bark.wav", "night.wav", threshold=0.4)      # the same: fields as keywords

Fields are checked once, when the options are built; the defaults and why they are what
they are are in :mod:`retrieval.locate.api`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrieval.errors import InputError
from retrieval.locate.events import NEAR_PEAK

if TYPE_CHECKING:
    from retrieval.encoders.base import Encoder

#: Fields an index's recipe decides; :func:`~retrieval.locate.api.locate_with_index` refuses them.
RECIPE_FIELDS = ("encoder", "model", "encoder_options", "pooling")


@dataclass(frozen=True)
class LocateOptions:
    """Everything ``locate`` takes besides the query clip and the long file.

    Attributes:
        text: a text query instead of a clip (needs an encoder with a text tower).
        sample_rate: rate of an array query clip, Hz.
        start_s, end_s: crop of the query clip, seconds.
        encoder: registry name or a loaded :class:`~retrieval.encoders.base.Encoder`
            (without an index; default ``logmel``).
        model, encoder_options, device: checkpoint, encoder-specific settings and torch
            device when ``encoder`` is a name (``model`` and ``encoder_options`` without an index).
        window_s, hop_s: analysis window and hop, seconds (default: the clip's length and
            1/8 of it; with an index, the recipe's).
        pooling: frames -> window vector (default: the encoder's; without an index only).
        standardize: standardise each dimension over the long file's windows.
        threshold: fixed score threshold; None adapts it to the curve.
        max_gap_s: gaps shorter than this are filled, seconds (default: half the window).
        min_dur_s: events shorter than this are dropped, seconds (default 0: keep all).
        near_peak: an event spans the windows scoring within ``1 - near_peak`` of its peak
            height, in ``(0, 1]`` (default 1: its best window).
        plot: write a plot of the curve and events to this path.
        batch_size: windows per encoder call.
    """

    text: str | None = None
    sample_rate: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    encoder: str | Encoder | None = None
    model: str | None = None
    encoder_options: Mapping[str, Any] | None = None
    device: str = "cpu"
    window_s: float | None = None
    hop_s: float | None = None
    pooling: str | None = None
    standardize: bool = True
    threshold: float | None = None
    max_gap_s: float | None = None
    min_dur_s: float | None = None
    near_peak: float = NEAR_PEAK
    plot: str | Path | None = None
    batch_size: int = 32

    def __post_init__(self) -> None:
        for name in ("window_s", "hop_s"):
            value = getattr(self, name)
            if value is not None and not (_number(value) and value > 0):
                raise InputError(f"{name} must be a positive number of seconds; got {value!r}")
        for name in ("max_gap_s", "min_dur_s"):
            value = getattr(self, name)
            if value is not None and not (_number(value) and value >= 0):
                raise InputError(f"{name} must be a number of seconds >= 0; got {value!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InputError(f"batch_size must be a whole number >= 1; got {self.batch_size!r}")

    @classmethod
    def of(cls, options: LocateOptions | None = None, **changes: Any) -> LocateOptions:
        """``options`` (default: all defaults) with ``changes`` applied, as a ``locate`` function takes them.

        Raises:
            InputError: a change that names no field (the valid names are listed).
            TypeError: ``options`` that is not a :class:`LocateOptions`.
        """
        if options is not None and not isinstance(options, LocateOptions):
            raise TypeError(f"options must be a LocateOptions, not {type(options).__name__} "
                            "(encoder settings go in LocateOptions(encoder_options=...))")
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(changes) - valid)
        if unknown:
            raise InputError(f"unknown locate option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
        base = options if options is not None else cls()
        return replace(base, **changes) if changes else base


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
