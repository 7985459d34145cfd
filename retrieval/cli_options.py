"""Option decorators shared by the ``retrieve`` commands (:mod:`retrieval.cli`, :mod:`retrieval.cli_adapt`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from retrieval import progress as progress_bars


def json_option(f: Callable) -> Callable:
    """Add ``--json`` (passed as ``as_json``) to a command that prints one document rather than rows."""
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")(f)


def progress_option(f: Callable) -> Callable:
    """Add ``--progress/--no-progress`` and show :mod:`retrieval.progress` bars while the command runs."""

    @functools.wraps(f)
    def run(*args: Any, progress: bool | None, **kwargs: Any) -> Any:
        with progress_bars.shown(progress):
            return f(*args, **kwargs)

    return click.option("--progress/--no-progress", default=None,
                        help="Progress bar on stderr (default: when stderr is a terminal).")(run)


def index_option(f: Callable) -> Callable:
    return click.option("--index", "index", metavar="PATH|NAME",
                        help="Index folder, or a name under indexes/. May be omitted when indexes/ holds one.")(f)


def where_option(f: Callable) -> Callable:
    return click.option("--where", "where", multiple=True, metavar="EXPR",
                        help="Filter on file metadata, e.g. \"speaker != 'george' AND take >= 10\". "
                             "Repeat to AND several. Values are passed as SQL parameters.")(f)


class LegacyAliasOption(click.Option):
    """An option that also answers to deprecated names (:mod:`retrieval.legacy`), left out of ``--help``.

    Pass ``cls=LegacyAliasOption, legacy=("--old-name",)`` with the old name among the option's names.
    """

    def __init__(self, *args: Any, legacy: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.legacy = legacy

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        shown = self.opts
        self.opts = [o for o in shown if o not in self.legacy]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown


def windows_option(help: str) -> Callable[[Callable], Callable]:
    """``--windows`` (passed as ``windows``): one row per window; ``--segments`` is its deprecated name."""
    return click.option("--windows", "--segments", "windows", is_flag=True, cls=LegacyAliasOption,
                        legacy=("--segments",), help=help)


class LevelChoice(click.Choice):
    """A choice of levels that also takes the deprecated ``segment`` for ``window`` (not listed)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from retrieval.legacy import LEVELS

        return super().convert(LEVELS.get(value, value) if isinstance(value, str) else value, param, ctx)
