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
