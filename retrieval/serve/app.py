"""The HTTP app: the page, its static assets, and the JSON API (FastAPI; OpenAPI at ``/docs``).

Answers use the shapes of the CLI's ``--json``: ``/api/search`` and ``/api/text`` return
the list of hits ``retrieve query --json`` prints, ``/api/classify`` the list of
``retrieve classify --json``, ``/api/locate`` the object of ``retrieve locate --json``
(plus the similarity ``curve``), ``/api/info`` the object of ``retrieve info --json``
(plus a ``serve`` block); the labelling loop (``/api/labels``, ``/api/train``,
``/api/score``, ``/api/suggest``) is in :mod:`retrieval.serve.labelling`. An index that
another process is writing answers a write with 409. Errors are ``{"error": "<one line>"}`` with a 4xx status.
Every answer carries ``Server-Timing: app;dur=<ms>``, the time spent in the server, and
those that use an index ``index;dur=<ms>``, the part of it spent holding the index (the
rest is waiting for it, for a CPU, and HTTP parsing).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException

from retrieval.encoders.registry import entry, text_encoders
from retrieval.errors import IndexLockedError, IndexNotFoundError, InputError, RetrievalError
from retrieval.legacy import INFO_KEYS, with_legacy_keys
from retrieval.serve.indexes import IndexSet, LiveIndex, Snapshot
from retrieval.serve.media import Thumbnails, audio_slice_wav
from retrieval.serve.uploads import UploadTooLarge
from retrieval.serve.workers import Workers

HERE = Path(__file__).resolve().parent
#: Default upload limits.
MAX_UPLOAD_MB = 50.0
MAX_UPLOAD_S = 600.0
#: Header, query parameter and cookie that carry the token.
TOKEN_COOKIE = "retrieve_token"
_MEDIA_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".ogg": "audio/ogg",
                ".oga": "audio/ogg", ".opus": "audio/ogg", ".m4a": "audio/mp4", ".mp4": "audio/mp4",
                ".aac": "audio/aac", ".webm": "audio/webm", ".aif": "audio/aiff", ".aiff": "audio/aiff"}


def default_heavy_slots() -> int:
    """Heavy requests worked on at once by default: half the CPU cores, at least one."""
    return max(1, (os.cpu_count() or 2) // 2)


class Bulkhead:
    """At most ``slots`` heavy requests at once: decoding and embedding uploads, locating, and
    rendering thumbnails that are not cached.

    Cheap requests (a search by an indexed file or window, an audio slice, a cached thumbnail)
    never take a slot, so on a small CPU they do not queue behind expensive ones: a sound
    designer clicking "more like this" is answered while uploads are being embedded. The time a
    request waited for a slot goes into ``Server-Timing`` as ``queue;dur=<ms>``. ``slots=0``
    means no limit.
    """

    def __init__(self, slots: int) -> None:
        if slots < 0:
            raise InputError(f"heavy request slots must be 0 (no limit) or more, got {slots}")
        self.slots = slots
        self._sem = threading.BoundedSemaphore(slots) if slots else None

    @contextlib.contextmanager
    def slot(self, response: Response) -> Iterator[None]:
        """Hold one slot for the ``with`` block; the wait is reported in ``response``'s timing."""
        if self._sem is None:
            yield
            return
        start = time.perf_counter()
        with self._sem:
            response.headers.append("Server-Timing", f"queue;dur={(time.perf_counter() - start) * 1e3:.2f}")
            yield


class Guard:
    """Every HTTP request: the token, the body size, and ``Server-Timing: app;dur=<ms>``.

    Plain ASGI: it only wraps ``send`` to add headers, where ``@app.middleware("http")``
    ran each request through an extra task and a memory stream on the event loop.
    """

    def __init__(self, app: Any, *, token: str | None, limits: Limits) -> None:
        self.app = app
        self.token = token
        self.limits = limits
        jar = Response()
        jar.set_cookie(TOKEN_COOKIE, token or "", httponly=True, samesite="strict")
        self.cookie = jar.headers["set-cookie"]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request = Request(scope)
        refused: Response | None = None
        if self.token is not None and not _authorised(request, self.token):
            refused = _error(401, "this server needs its token: send `Authorization: Bearer TOKEN`, "
                                  "or open the page once as /?token=TOKEN")
        else:
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.limits.max_bytes + 65536:
                refused = _error(413, f"upload of {int(length) / 1e6:.1f} MB is over the "
                                      f"{self.limits.max_bytes / 1e6:.0f} MB limit (--max-upload-mb)")
        cookie = (refused is None and self.token is not None and bool(request.query_params.get("token"))
                  and request.url.path == "/")

        async def timed(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if cookie:
                    headers.append("set-cookie", self.cookie)
                headers.append("Server-Timing", f"app;dur={(time.perf_counter() - start) * 1e3:.2f}")
            await send(message)

        await (refused or self.app)(scope, receive, timed)


@dataclass(frozen=True)
class Limits:
    """Upload limits: ``max_bytes`` of the request body, ``max_duration_s`` of decoded audio."""

    max_bytes: int = int(MAX_UPLOAD_MB * 1e6)
    max_duration_s: float = MAX_UPLOAD_S


def records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """JSON-able copies of DataFrame records, exactly as the CLI's ``--json`` writes them."""
    from retrieval.render import clean_record

    return json.loads(json.dumps([clean_record(r) for r in rows], default=str, ensure_ascii=False))


def create_app(indexes: IndexSet, *, token: str | None = None, limits: Limits = Limits(),
               heavy_slots: int | None = None, heavy_processes: int | None = None) -> FastAPI:
    """The app serving ``indexes``; with ``token``, every request must carry it.

    ``heavy_slots``: heavy requests worked on at once (:class:`Bulkhead`; ``None`` =
    :func:`default_heavy_slots`, 0 = no limit). ``heavy_processes``: worker processes that
    decode and embed uploads and render thumbnails (:class:`~retrieval.serve.workers.Workers`;
    ``None`` = one per heavy slot, or one per core without a limit; 0 = in the server's own
    threads). They are spawned on first use; ``app.state.workers.start()`` spawns them now,
    ``app.state.workers.close()`` ends them.
    """
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.workers.close()  # before uvicorn re-raises a SIGTERM, which would leave them running

    app = FastAPI(title="retrieve", summary="Search audio by meaning: the HTTP API of `retrieve serve`.",
                  version="1", lifespan=lifespan)
    app.state.indexes = indexes
    app.state.thumbnails = Thumbnails()
    thumbs: Thumbnails = app.state.thumbnails
    heavy = Bulkhead(default_heavy_slots() if heavy_slots is None else heavy_slots)
    app.state.heavy = heavy
    workers = Workers((heavy.slots or os.cpu_count() or 1) if heavy_processes is None else heavy_processes)
    app.state.workers = workers
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    # -- cross-cutting: token, body size, timing, errors ----------------------------------

    app.add_middleware(Guard, token=token, limits=limits)

    @app.exception_handler(RetrievalError)
    async def on_library_error(request: Request, exc: RetrievalError) -> JSONResponse:
        status = (404 if isinstance(exc, IndexNotFoundError) else 413 if isinstance(exc, UploadTooLarge)
                  else 409 if isinstance(exc, IndexLockedError) else 400)
        return _error(status, str(exc))

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def on_bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return _error(500, f"internal error ({type(exc).__name__}{': ' + line[:200] if line else ''})")

    # -- the page --------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((HERE / "static" / "index.html").read_text(encoding="utf-8"))

    # -- API -------------------------------------------------------------------------------

    @app.get("/api/info", summary="What `retrieve info --json` prints, plus a `serve` block for the page")
    def info(response: Response,
             index: Annotated[str | None, Query(description="Index name; default: the first served")] = None
             ) -> dict[str, Any]:
        live = indexes.get(index)
        with holding(live, response) as snap:
            out = json.loads(json.dumps(snap.index.info(), default=str))
            recipe = snap.index.recipe
            has_text = entry(recipe.encoder).has_text
            out["path"] = str(live.root)
            out["serve"] = {
                "index": live.name, "indexes": indexes.names, "encoder": recipe.encoder,
                "sample_rate": recipe.sample_rate, "window_s": recipe.window_samples / recipe.sample_rate,
                "hop_s": recipe.hop_samples / recipe.sample_rate, "has_text": has_text,
                "text_disabled_reason": None if has_text else (
                    f"text search needs an encoder with a text tower ({', '.join(text_encoders())}); "
                    f"this index uses {recipe.encoder}"),
                "filters": snap.filters(), "targets": snap.adapter().labels_db.targets(),
                "snapshot_taken_at": snap.taken_at,
                "refresh_error": live.last_refresh_error,
                "max_upload_mb": limits.max_bytes / 1e6, "max_upload_s": limits.max_duration_s,
            }
        return with_legacy_keys(out, INFO_KEYS)

    @app.post("/api/search", summary="Search by an uploaded clip, or by an indexed file or window "
                                     "(\"more like this\"); the hits of `retrieve query --json`")
    def search(response: Response,
               file: Annotated[UploadFile | None, File(description="Audio clip to search with")] = None,
               file_id: Annotated[int | None, Form(description="Search with this indexed file")] = None,
               window_id: Annotated[int | None, Form(description="Search with this indexed window")] = None,
               k: Annotated[int, Form(ge=1, le=1000)] = 10,
               where: Annotated[list[str] | None, Form(description="Metadata filter, as --where")] = None,
               windows: Annotated[bool, Form(description="One row per window instead of per file")] = False,
               start_s: Annotated[float | None, Form(description="Use the upload from this time")] = None,
               end_s: Annotated[float | None, Form(description="Use the upload up to this time")] = None,
               index: Annotated[str | None, Form()] = None,
               segment_id: Annotated[int | None, Form(include_in_schema=False)] = None,  # deprecated names
               segments: Annotated[bool, Form(include_in_schema=False)] = False,  # (retrieval.legacy)
               ) -> list[dict[str, Any]]:
        live = indexes.get(index)
        window_id, windows = (window_id if window_id is not None else segment_id), windows or segments
        if file is not None and file.filename:
            with live.use() as snap:
                with heavy.slot(response):  # no lock: the model and the fitted transform only read
                    ix = snap.index
                    audio, raw = workers.upload(_read_upload(file, limits), file.filename, ix.recipe,
                                                limits.max_duration_s, start_s, end_s, index_root=live.root,
                                                corpus_root=ix.store.db.get("corpus_root"), embed_here=True)
                    vector = (ix.store.postprocess.apply(raw[None])[0] if raw is not None
                              else ix.embed(audio, sample_rate=ix.recipe.sample_rate))
                with locked(snap, response):
                    rows = snap.index.search_vector_rows(vector, k, windows=windows, where=where)
        elif file_id is not None or window_id is not None:
            with holding(live, response) as snap:
                rows = snap.index.search_indexed_rows(k, file_id=file_id, window_id=window_id, windows=windows,
                                                      where=where)
        else:
            raise InputError("give an audio file (field `file`), or `file_id` or `window_id` of an indexed one")
        return _json_rows(rows, response)

    @app.post("/api/text", summary="Search by a text description (CLAP indexes); the hits of `retrieve text --json`")
    def text(response: Response,
             text: Annotated[str, Form(min_length=1, max_length=1000)],
             k: Annotated[int, Form(ge=1, le=1000)] = 10,
             where: Annotated[list[str] | None, Form()] = None,
             windows: Annotated[bool, Form()] = False,
             index: Annotated[str | None, Form()] = None,
             segments: Annotated[bool, Form(include_in_schema=False)] = False,  # deprecated (retrieval.legacy)
             ) -> list[dict[str, Any]]:
        with holding(indexes.get(index), response) as snap:
            hits = snap.index.search_text(text, k, windows=windows or segments, where=where)
        return _json(records(hits.to_dict(orient="records")), response)

    @app.post("/api/classify", summary="kNN label vote for a clip or an indexed file; "
                                       "the rows of `retrieve classify --json`")
    def classify(response: Response,
                 file: Annotated[UploadFile | None, File()] = None,
                 file_id: Annotated[int | None, Form(description="Classify this indexed file (it does not vote)")
                                    ] = None,
                 k: Annotated[int, Form(ge=1, le=1000)] = 10,
                 label_column: Annotated[str, Form()] = "label",
                 where: Annotated[list[str] | None, Form()] = None,
                 index: Annotated[str | None, Form()] = None) -> list[dict[str, Any]]:
        live = indexes.get(index)
        if file is not None and file.filename:
            with heavy.slot(response):
                audio, sr = _decode_upload(file, live, limits, workers)
                with holding(live, response) as snap:
                    preds = snap.index.classify(audio, k, label_column=label_column, sample_rate=sr,
                                                where=where)
                    preds["clip"] = file.filename
        elif file_id is not None:
            with heavy.slot(response), holding(live, response) as snap:
                path = snap.audio_path(file_id)
                own = str(snap.files.at[file_id, "path"]).replace("'", "''")
                preds = snap.index.classify(path, k, label_column=label_column,
                                            where=[*(where or []), f"path != '{own}'"])
                preds["clip"] = str(snap.files.at[file_id, "path"])
        else:
            raise InputError("give an audio file (field `file`) or the `file_id` of an indexed one")
        return _json(records(preds.to_dict(orient="records")), response)

    @app.post("/api/locate", summary="Where in an indexed file a clip, window or text occurs: "
                                     "`retrieve locate --json` plus the similarity curve")
    def locate(response: Response,
               target_id: Annotated[int, Form(description="The indexed (long) file to search in")],
               file: Annotated[UploadFile | None, File()] = None,
               window_id: Annotated[int | None, Form(description="Query with this indexed window")] = None,
               text: Annotated[str | None, Form()] = None,
               threshold: Annotated[float | None, Form()] = None,
               index: Annotated[str | None, Form()] = None,
               segment_id: Annotated[int | None, Form(include_in_schema=False)] = None,  # deprecated (retrieval.legacy)
               ) -> dict[str, Any]:
        from retrieval.locate import locate_curve_with_index

        window_id = window_id if window_id is not None else segment_id
        live = indexes.get(index)
        with heavy.slot(response):
            audio, sr = (_decode_upload(file, live, limits, workers) if file is not None and file.filename
                         else (None, None))
            with holding(live, response) as snap:
                long_file = snap.audio_path(target_id)
                query: Any = audio
                crop: dict[str, Any] = {"sample_rate": sr}
                if audio is None and window_id is not None:
                    owner, w_start_s, w_end_s = snap.window(window_id)
                    query, crop = snap.audio_path(owner), {"start_s": w_start_s, "end_s": w_end_s}
                if query is None and not text:
                    raise InputError("give an audio file (field `file`), a `window_id` or a `text` to locate")
                found = locate_curve_with_index(snap.index, query, long_file, text=text if query is None else None,
                                                threshold=threshold, **crop)
        a = found.events.attrs
        curve = found.curve.to_frame()
        return json.loads(json.dumps({
            "query": text if query is None else (file.filename if file is not None else f"window {window_id}"),
            "long_file": str(snap.files.at[target_id, "path"]), "file_id": target_id,
            **{key: a.get(key) for key in ("threshold", "background", "threshold_rule", "window_s", "hop_s",
                                           "duration_s", "encoder", "pooling")},
            "plot": None, "events": records(found.events.to_dict(orient="records")),
            "curve": {"start_s": curve.start_s.round(4).tolist(), "end_s": curve.end_s.round(4).tolist(),
                      "score": curve.score.round(5).tolist()},
        }, default=str))

    @app.get("/api/files/{file_id:int}/audio", summary="An indexed file's audio (HTTP Range), "
                                                       "or just [start_s, end_s) as WAV",
             response_class=Response)
    def audio(file_id: int, start_s: Annotated[float | None, Query(ge=0)] = None,
              end_s: Annotated[float | None, Query(gt=0)] = None,
              index: Annotated[str | None, Query()] = None) -> Response:
        with indexes.get(index).use() as snap:
            path = snap.audio_path(file_id)
        if start_s is None and end_s is None:
            return FileResponse(path, media_type=_MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream"),
                                headers={"Cache-Control": "private, max-age=60"})
        return Response(audio_slice_wav(path, start_s or 0.0, end_s), media_type="audio/wav")

    @app.get("/api/files/{file_id:int}/spectrogram.png", summary="Spectrogram thumbnail with "
                                                                  "[start_s, end_s) marked", response_class=Response)
    def spectrogram(response: Response, file_id: int, start_s: Annotated[float | None, Query(ge=0)] = None,
                    end_s: Annotated[float | None, Query(gt=0)] = None,
                    width: Annotated[int, Query(ge=16, le=2048)] = 360,
                    height: Annotated[int, Query(ge=16, le=1024)] = 72,
                    index: Annotated[str | None, Query()] = None) -> Response:
        with indexes.get(index).use() as snap:
            path = snap.audio_path(file_id)
            duration = float(snap.files.at[file_id, "duration_s"])
        mark = None if start_s is None or end_s is None else (float(start_s), float(end_s))
        png = thumbs.png(path, duration, mark, width=width, height=height, rendering=heavy.slot(response),
                         render=workers.thumbnail)
        out = Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
        for value in response.headers.getlist("server-timing"):
            out.headers.append("Server-Timing", value)
        return out

    from retrieval.serve.labelling import label_routes

    app.include_router(label_routes(indexes, heavy, token))
    return app


@contextlib.contextmanager
def holding(live: LiveIndex, response: Response) -> Iterator[Snapshot]:
    """The current snapshot, :func:`locked` for this request."""
    with live.use() as snap, locked(snap, response):
        yield snap


@contextlib.contextmanager
def locked(snap: Snapshot, response: Response) -> Iterator[Snapshot]:
    """Hold ``snap``'s lock (DuckDB and FAISS are used by one thread at a time); the time it was
    held goes into ``Server-Timing`` as ``index;dur=<ms>``."""
    with snap.lock:
        start = time.perf_counter()
        try:
            yield snap
        finally:
            response.headers.append("Server-Timing", f"index;dur={(time.perf_counter() - start) * 1e3:.2f}")


def _authorised(request: Request, token: str) -> bool:
    auth = request.headers.get("authorization", "")
    given = [auth[7:] if auth.lower().startswith("bearer ") else "", request.headers.get("x-retrieve-token", ""),
             request.query_params.get("token", ""), request.cookies.get(TOKEN_COOKIE, "")]
    return any(g and hmac.compare_digest(g.encode(), token.encode()) for g in given)


def json_bytes(rows: list[dict[str, Any]]) -> bytes:
    """Plain rows (:mod:`retrieval.hit_table`) as the JSON body :func:`_json` sends for the same
    :func:`records`, in one ``json.dumps`` (values it cannot write become text, as the CLI's)."""
    return json.dumps(rows, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"),
                      default=str).encode("utf-8")


def _json_rows(rows: list[dict[str, Any]], response: Response) -> Response:
    """:func:`json_bytes` of ``rows`` as the answer, with the headers set on ``response``."""
    out = Response(json_bytes(with_legacy_keys(rows)), media_type="application/json")
    for value in response.headers.getlist("server-timing"):
        out.headers.append("Server-Timing", value)
    return out


def _json(content: Any, response: Response) -> JSONResponse:
    """``content`` as JSON, with the headers set on ``response`` (skips FastAPI's re-validation of every row).
    Rows keep their deprecated keys too (:mod:`retrieval.legacy`), as the CLI's ``--json`` does."""
    out = JSONResponse(with_legacy_keys(content))
    for value in response.headers.getlist("server-timing"):
        out.headers.append("Server-Timing", value)
    return out


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _read_upload(file: UploadFile, limits: Limits) -> bytes:
    """The upload's bytes.

    Raises:
        UploadTooLarge: over ``limits.max_bytes``.
    """
    data = file.file.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise UploadTooLarge(f"{file.filename} is over the {limits.max_bytes / 1e6:.0f} MB upload limit "
                             "(--max-upload-mb)")
    return data


def _decode_upload(file: UploadFile, live: LiveIndex, limits: Limits, workers: Workers) -> tuple[Any, int]:
    """An uploaded clip as ``((S,) float32 mono, rate)`` at the index's rate, within the limits, decoded by
    ``workers``.

    Raises:
        UploadTooLarge: over ``limits`` in bytes or in decoded seconds.
        AudioError: not decodable (the decoder's reason).
    """
    snap = live.current()
    audio, _ = workers.upload(_read_upload(file, limits), file.filename, snap.index.recipe, limits.max_duration_s,
                              None, None, index_root=live.root, corpus_root=None, embed_here=False)
    return audio, snap.index.recipe.sample_rate
