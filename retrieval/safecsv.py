"""CSV files that are safe to open in a spreadsheet.

Every CSV the project writes goes through :func:`write_csv`. It applies the OWASP
CSV-injection rule: a text cell (or header) that starts with ``=``, ``+``, ``-``, ``@``,
a tab or a carriage return is prefixed with a single quote, so a spreadsheet shows it
as text instead of running it as a formula (``=cmd|' /C calc'!A0``). Numbers are left
as numbers, so a negative score stays ``-0.25``; only text that would be read as a
formula changes. Text cells are written in double quotes (so a tab, CR or newline
inside one stays inside it), numbers bare. Reading the file back, a leading ``'`` before one of those characters
marks a neutralised cell (:func:`restore` undoes it).

See https://owasp.org/www-community/attacks/CSV_Injection.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

from retrieval.errors import InputError

#: First characters that make a spreadsheet evaluate a cell (OWASP).
FORMULA_START: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
#: Prefix that turns such a cell into text.
ESCAPE = "'"


def neutralise(value: Any) -> Any:
    """``value`` with :data:`ESCAPE` in front when it is text starting with a formula character."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return ESCAPE + value
    return value


def restore(value: Any) -> Any:
    """Undo :func:`neutralise` on one cell read back from a file this module wrote."""
    if isinstance(value, str) and value.startswith(ESCAPE) and value[1:].startswith(FORMULA_START):
        return value[1:]
    return value


def neutralised(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose text cells and column names are neutralised; numeric columns untouched."""
    import pandas as pd

    out = df.copy()
    for col in out.columns:
        if not (pd.api.types.is_numeric_dtype(out[col]) or pd.api.types.is_bool_dtype(out[col])):
            out[col] = out[col].map(neutralise)
    out.columns = [neutralise(str(c)) for c in out.columns]
    return out


def write_csv(df: pd.DataFrame, path: str | Path, *, index: bool = False) -> Path:
    """Write ``df`` to ``path`` as UTF-8 CSV with formula-like cells neutralised.

    Raises:
        InputError: the folder of ``path`` does not exist, ``path`` is a folder, or the
            file cannot be written (the message names the path and the OS reason).
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; pass a file name such as {path / 'out.csv'}")
    if not path.parent.is_dir():
        raise InputError(f"folder {path.parent} does not exist; create it first (mkdir -p {path.parent})")
    frame = df.reset_index() if index else df
    try:
        neutralised(frame).to_csv(path, index=False, quoting=csv.QUOTE_NONNUMERIC)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
