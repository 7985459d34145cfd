"""``retrieve serve``: a local web page to search and listen, and a JSON API (FastAPI + uvicorn).

    retrieve serve --index demo            # http://127.0.0.1:8000/ ; API docs at /docs

Modules: :mod:`.indexes` (the one adapter through which requests reach an index, and
how a newer version is picked up), :mod:`.media` (audio slices, spectrogram
thumbnails), :mod:`.app` (routes), :mod:`.labelling` (label, train, score and suggest
routes; their writes go through a short-lived writer), ``static/`` (the page: plain
JavaScript, no build step, nothing fetched from elsewhere). Needs the ``serve`` extra:
``pip install 'retrieve[serve]'``.
"""

from __future__ import annotations

import ipaddress
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from retrieval.errors import InputError, RetrievalError

#: The server's GIL switch interval, seconds (Python's default is 0.005). A search by an
#: indexed file releases the GIL many times (DuckDB, FAISS, numpy); with the default, each
#: time it may wait up to 5 ms for a thread rendering a thumbnail or embedding an upload to
#: hand the GIL back. A shorter interval keeps cheap requests cheap beside heavy ones.
SWITCH_INTERVAL_S = 0.0005
#: Environment variable holding the token (same as ``--token``).
TOKEN_ENV = "RETRIEVE_TOKEN"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token.

    Raises:
        InputError: ``host`` is not a loopback address and no token was given.
    """
    if not is_loopback(host) and not token:
        raise InputError(f"refusing to serve on {host} without a token: anyone who can reach it could read "
                         f"the indexed audio; pass --token TOKEN (or set {TOKEN_ENV}), or bind 127.0.0.1")


def single_threaded_faiss() -> None:
    """One OpenMP thread per FAISS call in this process.

    A server's parallelism is its concurrent requests. A FAISS search of one query with
    OpenMP's default (a team as large as the core count, spinning while it waits) took
    27-32 ms instead of 2-9 ms on 2 busy cores (load average 14), as each call's team
    waited for a thread the OS had given to another request or process.
    """
    import faiss

    faiss.omp_set_num_threads(1)


def serve(indexes: Sequence[str | Path], *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          max_upload_mb: float = 50.0, max_upload_s: float = 600.0, device: str = "cpu", open_browser: bool = False,
          heavy_slots: int | None = None, heavy_processes: int | None = None,
          echo: Callable[[str], None] = print) -> None:
    """Open ``indexes`` (names or paths; empty = the only one under indexes/) and serve until interrupted.

    ``heavy_slots``: uploads, locates and thumbnail renders worked on at once (``None``: half
    the CPU cores, at least 1; 0: no limit), so searches by an indexed file never wait for them.
    ``heavy_processes``: worker processes that decode and embed uploads and render thumbnails,
    so their GIL time never delays a search (``None``: one per heavy slot; 0: in the server's
    own threads).

    Raises:
        InputError: a non-loopback ``host`` without ``token``.
        RetrievalError: the ``serve`` extra is not installed, or an index cannot be opened.
    """
    check_bind(host, token)
    try:
        import uvicorn

        from retrieval.serve.app import Limits, create_app
        from retrieval.serve.indexes import IndexSet
    except ImportError as exc:
        raise RetrievalError(f"retrieve serve needs the serve extra ({exc.name} is missing): "
                             "pip install 'retrieve[serve]'") from None
    held = IndexSet(list(indexes), device=device)
    app = create_app(held, token=token, limits=Limits(int(max_upload_mb * 1e6), max_upload_s),
                     heavy_slots=heavy_slots, heavy_processes=heavy_processes)
    url_host = f"[{host}]" if ":" in host else host
    url = f"http://{url_host}:{port}/"
    echo(f"serving {', '.join(f'{n} ({li.root})' for n, li in held.live.items())}")
    echo(f"page {url}   API docs {url}docs")
    if token:
        echo(f"a token is required on every request: open {url}?token=... once, or send "
             "`Authorization: Bearer <token>`")
    threading.Thread(target=held.warm, name="warm-encoders", daemon=True).start()
    threading.Thread(target=app.state.workers.start, name="warm-workers", daemon=True).start()
    if open_browser:
        import webbrowser

        threading.Timer(1.0, webbrowser.open, [url + (f"?token={token}" if token else "")]).start()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    single_threaded_faiss()
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        app.state.workers.close()
        held.close()
