"""How bad a row of ``errors`` is (no imports beyond typing, so the CLI can offer the choices
without opening DuckDB)."""

from __future__ import annotations

from typing import Literal, get_args

#: The file is out of the index (``error``), or in it with a caveat (``warning``).
Severity = Literal["error", "warning"]
SEVERITIES: tuple[Severity, ...] = get_args(Severity)
