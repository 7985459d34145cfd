"""Row output for the CLI, sqlite-utils style: one decorator for the flags, one function that prints.

Every command that prints rows takes :func:`output_options` (``--table`` by default,
``--json``, ``--csv``, ``--nl``) and hands its rows to :func:`emit`. Tables round floats
for reading; JSON, newline-delimited JSON and CSV carry the exact values.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

from retrieval.legacy import with_legacy_keys
from retrieval.options import OUTPUTS, Output
from retrieval.safecsv import neutralise

#: Cell formatter of a table column: value -> text.
Formatter = Callable[[Any], str]


def output_options(f: Callable) -> Callable:
    """Add ``--table/--json/--csv/--nl`` (one choice, passed as ``output``) to a command."""
    helps = {
        "table": "Print an aligned table with rounded numbers (the default).",
        "json": "Print machine-readable JSON on stdout, with exact values.",
        "csv": "Print CSV with a header row and exact values.",
        "nl": "Print newline-delimited JSON: one object per row.",
    }
    for name in reversed(OUTPUTS):
        default = {"default": True} if name == "table" else {}
        f = click.option(f"--{name}", "output", flag_value=name, help=helps[name], **default)(f)
    return f


def clean(value: Any) -> Any:
    """A JSON-safe scalar: numpy scalars become Python ones, NaN becomes None."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str, bytes)):
        try:
            value = value.item()
        except (ValueError, TypeError):
            pass
    if isinstance(value, float) and math.isnan(value):
        return None
    if type(value).__name__ == "NAType":  # pandas' NULL of a nullable integer column
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def clean_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`clean` applied to every value of a row."""
    return {str(k): clean(v) for k, v in record.items()}


def emit(output: Output, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *,
         formats: Mapping[str, Formatter] | None = None, document: Any = None, empty: str = "no results") -> None:
    """Print ``rows`` in the chosen ``output`` on stdout.

    Args:
        output: ``table``, ``json``, ``csv`` or ``nl``.
        rows: one mapping per row; JSON, NL and CSV carry every key of every row.
        columns: the table's columns (default: every key, in first-seen order).
        formats: per-column table formatters (default: floats to 6 significant digits, None as
            blank; pass :func:`rounded` for scores).
        document: what ``--json`` prints instead of the list of rows, where a command's JSON
            shape is an object (kept for the tools that read it).
        empty: the table's text when there are no rows.
    """
    records = [clean_record(r) for r in rows]
    if output != "table":  # machine-readable outputs keep the deprecated keys too (one place: retrieval.legacy)
        records = with_legacy_keys(records)
    if output == "json":
        doc = with_legacy_keys(clean(document)) if document is not None else records
        click.echo(json.dumps(doc, ensure_ascii=False, default=str))
    elif output == "nl":
        for r in records:
            click.echo(json.dumps(r, ensure_ascii=False, default=str))
    elif output == "csv":
        keys = _keys(records)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        for r in records:
            writer.writerow({k: _csv_cell(r.get(k)) for k in keys})
        click.echo(buffer.getvalue(), nl=False)
    elif not records:
        click.echo(empty)
    else:
        cols = list(columns) if columns is not None else _keys(records)
        fmt = dict(formats or {})
        table(cols, [[fmt.get(c, _cell)(r.get(c)) for c in cols] for r in records])


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` of text cells as aligned columns under ``header``."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def rounded(digits: int) -> Formatter:
    """A table formatter that prints a number with ``digits`` decimals (blank for None)."""
    return lambda v: "" if v is None else f"{v:.{digits}f}" if isinstance(v, (int, float)) else str(v)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _csv_cell(value: Any) -> Any:
    """One CSV cell; text a spreadsheet would run as a formula is neutralised (``safecsv``)."""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False, default=str)
    return "" if value is None else neutralise(value)


def _keys(records: Sequence[Mapping[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for r in records:
        keys.update(dict.fromkeys(r))
    return list(keys)

