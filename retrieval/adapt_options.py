"""Option values of the adaptation commands, importable without numpy or pandas (the CLI builds its choices from them)."""

from __future__ import annotations

from typing import Literal

HeadKind = Literal["linear", "mlp"]
HEAD_KINDS: tuple[HeadKind, ...] = ("linear", "mlp")
Strategy = Literal["margin", "top", "random"]
STRATEGIES: tuple[Strategy, ...] = ("margin", "top", "random")
#: Default weight of each unlabelled window counted as a negative.
WEAK_WEIGHT = 0.1
