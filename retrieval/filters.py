"""``--where`` filters on file metadata, compiled to parameterised SQL.

A filter is a small boolean expression over the ``files`` columns::

    speaker = 'george' AND take >= 10
    label IN ('dog', 'cat') OR duration_s < 2.5
    split != test AND NOT (digit = 3)
    path LIKE 'field/%'    note IS NULL

Column names are checked against the index's columns and quoted; every value is
passed as a query parameter. No user text is ever pasted into SQL.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from retrieval.errors import InputError

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>'(?:[^']|'')*'|"(?:[^"]|"")*")
      | (?P<op><=|>=|!=|<>|==|=|<|>)
      | (?P<punct>[(),])
      | (?P<word>[^\s(),'"<>=!]+)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"AND", "OR", "NOT", "IN", "IS", "NULL", "LIKE", "ILIKE"}
#: Deepest nesting of brackets and NOTs a filter may use (Python's stack is the real limit).
MAX_DEPTH = 100
_TEXT_TYPES = ("VARCHAR", "TEXT", "STRING")
_NUMBER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                 "UBIGINT", "FLOAT", "REAL", "DOUBLE", "DECIMAL", "NUMERIC", "INT")


@dataclass(frozen=True)
class Filter:
    """Compiled filter: ``sql`` uses ``?`` placeholders and column refs prefixed with ``alias``."""

    sql: str
    params: tuple[Any, ...]


def compile_where(expr: str | Sequence[str] | None, columns: Mapping[str, str], alias: str = "f") -> Filter | None:
    """Compile one expression, or several (joined with AND). None or empty gives None.

    Args:
        expr: the filter text(s).
        columns: ``name -> SQL type`` of the filterable columns; values compared with a
            text column are passed as text, so ``digit = 3`` works whatever the type.

    Raises:
        InputError: a syntax error, a column that the index does not have (with the list), a
            value that cannot be compared with its column's type (``take = 'abc'``), or
            brackets nested deeper than :data:`MAX_DEPTH`.
    """
    if expr is None:
        return None
    parts = [expr] if isinstance(expr, str) else list(expr)
    parts = [p for p in parts if p and p.strip()]
    if not parts:
        return None
    compiled = [_Parser(p, columns, alias).parse() for p in parts]
    sql = " AND ".join(f"({c.sql})" for c in compiled)
    return Filter(sql, tuple(v for c in compiled for v in c.params))


class _Parser:
    def __init__(self, text: str, columns: Mapping[str, str], alias: str) -> None:
        self.text, self.columns, self.alias = text, dict(columns), alias
        self._column_name, self._column_type = "", "VARCHAR"
        self._depth = 0
        self.tokens = self._tokenize(text)
        self.pos = 0
        self.params: list[Any] = []

    def _tokenize(self, text: str) -> list[tuple[str, str]]:
        out, pos = [], 0
        text = text.strip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise InputError(f"cannot parse filter {text!r} at position {pos}: {text[pos:pos + 12]!r}")
            kind = m.lastgroup or ""
            out.append((kind, m.group(kind)))
            pos = m.end()
        return out

    def parse(self) -> Filter:
        sql = self._or()
        if self.pos != len(self.tokens):
            raise InputError(f"unexpected {self.tokens[self.pos][1]!r} in filter {self.text!r}")
        return Filter(sql, tuple(self.params))

    # grammar: or := and (OR and)* ; and := unary (AND unary)* ; unary := NOT unary | ( or ) | clause
    def _or(self) -> str:
        parts = [self._and()]
        while self._kw("OR"):
            parts.append(self._and())
        return " OR ".join(parts)

    def _and(self) -> str:
        parts = [self._unary()]
        while self._kw("AND"):
            parts.append(self._unary())
        return " AND ".join(parts)

    def _unary(self) -> str:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise InputError(f"filter nests brackets or NOTs deeper than {MAX_DEPTH} levels; "
                             "write it flatter (AND/OR need no brackets of their own)")
        try:
            if self._kw("NOT"):
                return f"NOT ({self._unary()})"
            if self._punct("("):
                inner = self._or()
                self._expect_punct(")")
                return f"({inner})"
            return self._clause()
        finally:
            self._depth -= 1

    def _clause(self) -> str:
        col = self._column()
        if self._kw("IS"):
            negate = self._kw("NOT")
            if not self._kw("NULL"):
                raise InputError(f"expected NULL after IS in filter {self.text!r}")
            return f"{col} IS {'NOT ' if negate else ''}NULL"
        negate = self._kw("NOT")
        if self._kw("IN"):
            self._expect_punct("(")
            values = [self._value()]
            while self._punct(","):
                values.append(self._value())
            self._expect_punct(")")
            self.params.extend(values)
            return f"{col} {'NOT ' if negate else ''}IN ({', '.join('?' * len(values))})"
        for kw in ("LIKE", "ILIKE"):
            if self._kw(kw):
                self._column_type = "VARCHAR"  # the pattern is text, whatever the column holds
                self.params.append(str(self._value()))
                return f"CAST({col} AS VARCHAR) {'NOT ' if negate else ''}{kw} ?"
        if negate:
            raise InputError(f"expected IN or LIKE after NOT in filter {self.text!r}")
        kind, op = self._next("operator")
        if kind != "op":
            raise InputError(f"expected an operator (=, !=, <, <=, >, >=, IN, LIKE, IS) after {col}, got {op!r}")
        self.params.append(self._value())
        return f"{col} {'=' if op == '==' else op} ?"


    def _column(self) -> str:
        kind, name = self._next("column name")
        if kind == "str" and name.startswith('"'):
            name = name[1:-1].replace('""', '"')
        elif kind != "word" or name.upper() in _KEYWORDS:
            raise InputError(f"expected a column name in filter {self.text!r}, got {name!r}")
        if name not in self.columns:
            raise InputError(f"unknown column {name!r} in filter; columns: {', '.join(self.columns)}")
        self._column_name, self._column_type = name, self.columns[name].upper()
        return f'{self.alias}."{name}"'

    def _value(self) -> Any:
        kind, tok = self._next("value")
        if kind == "str":
            return self._typed(tok[1:-1].replace(tok[0] * 2, tok[0]))
        if kind != "word":
            raise InputError(f"expected a value in filter {self.text!r}, got {tok!r}")
        if self._column_type.startswith(_TEXT_TYPES):
            return tok
        for cast in (int, float):
            try:
                return self._typed(cast(tok))
            except ValueError:
                pass
        return self._typed({"true": True, "false": False}.get(tok.lower(), tok))

    def _typed(self, value: Any) -> Any:
        """``value`` as the current column's type, or an InputError naming both."""
        kind = self._column_type
        if kind.startswith(_TEXT_TYPES):
            return str(value)
        if kind.startswith(_NUMBER_TYPES):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return value
            for cast in (int, float):
                try:
                    return cast(str(value))
                except ValueError:
                    pass
            return self._mismatch(value, "a number, e.g. 10 or 2.5")
        if kind == "BOOLEAN":
            found = {"true": True, "false": False, "1": True, "0": False}.get(str(value).lower())
            return found if found is not None else self._mismatch(value, "true or false")
        if kind == "DATE" or kind.startswith("TIMESTAMP"):
            try:
                stamp = dt.datetime.fromisoformat(str(value))
            except ValueError:
                return self._mismatch(value, "an ISO date or time, e.g. '2024-05-01' or '2024-05-01 13:00'")
            return stamp.date() if kind == "DATE" else stamp
        return value

    def _mismatch(self, value: Any, expected: str) -> Any:
        raise InputError(f"column {self._column_name!r} holds {self._column_type} values; {value!r} is not "
                         f"{expected} (filter {self.text!r})")

    def _next(self, what: str) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise InputError(f"filter {self.text!r} ends where a {what} was expected")
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def _kw(self, word: str) -> bool:
        if self.pos < len(self.tokens) and self.tokens[self.pos][0] == "word" and self.tokens[self.pos][1].upper() == word:
            self.pos += 1
            return True
        return False

    def _punct(self, ch: str) -> bool:
        if self.pos < len(self.tokens) and self.tokens[self.pos] == ("punct", ch):
            self.pos += 1
            return True
        return False

    def _expect_punct(self, ch: str) -> None:
        if not self._punct(ch):
            raise InputError(f"expected {ch!r} in filter {self.text!r}")
