"""The agile-modelling loop over HTTP: label windows, train a head, score, suggest (:mod:`retrieval.adapt`).

Routes (added to the app by :func:`retrieval.serve.app.create_app`):

- ``POST /api/labels``: label windows by ``window_id`` (repeatable), or a span of an indexed
  file by ``file_id`` with ``start_s``/``end_s`` (both empty: the whole file), for ``target``;
  ``label`` is positive, negative or uncertain. Stored with source ``serve``. Answers what
  ``retrieve label --json`` prints plus ``counts`` (the target's labels by value).
- ``GET /api/labels?target=T[&counts=true]``: the rows of ``retrieve labels --json`` (``--counts``);
  with ``windows=true``, the labels resolved onto today's windows (``window_id, target, label``),
  so the page can mark the results already labelled.
- ``POST /api/train``: ``target``, ``head``, ``weak_negatives``, ``seed``; the summaries of
  ``retrieve train --json``.
- ``POST /api/score``: ``target``; the rows of ``retrieve score --json``.
- ``GET /api/suggest?target=T&n=20&strategy=margin``: the windows to label next, shaped like the
  hits of ``/api/search`` (``score`` is the head's probability, the highest over the targets),
  plus the columns of ``retrieve suggest --json`` (``score_<target>`` of the window, ``margin``).

A label is one transaction of the index's ``labels.sqlite`` (:mod:`retrieval.store.label_file`):
the window's span is read from the snapshot being served, nothing in ``meta.duckdb`` changes and
no snapshot is published, so a click costs milliseconds whatever the size of the index, and
works while ``retrieve index`` holds the index. Every read of labels (the page, ``retrieve
labels``, training, suggestions) reads that file live, so it sees the label at once.
Training and scoring go through :meth:`LiveIndex.writing`: a short-lived writer of the live
database that publishes a snapshot and swaps it in, so searches keep answering from the
version they hold and never see a half-written state; one while ``retrieve index`` holds the
index waits a few seconds, then answers 409. Writes sent by another site's page, and without
a token writes addressed to a host that is not the loopback, are refused
(:func:`same_site_only`), since a server on the loopback needs no token.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

import numpy as np
from fastapi import APIRouter, Depends, Form, Query, Request, Response
from starlette.exceptions import HTTPException

from retrieval.errors import IndexNotFoundError, InputError
from retrieval.options import HEAD_KINDS, STRATEGIES, WEAK_WEIGHT, HeadKind, Strategy
from retrieval.serve.indexes import IndexSet
from retrieval.store.labels import LABEL_VALUES, check_target, label_value

#: The ``source`` of labels set through the server.
SOURCE = "serve"


def targets_of(text: str) -> list[str]:
    """``"a, b"`` -> ``["a", "b"]``, each checked by :func:`check_target`.

    Raises:
        InputError: no target, or a name that cannot be a column name.
    """
    names = [check_target(t) for t in str(text).split(",") if t.strip()]
    if not names:
        raise InputError("name a target, e.g. target=rooster")
    return names


def same_site_only(request: Request, *, token: str | None) -> None:
    """Refuse a write that another site's page sent through the user's browser.

    A server on the loopback takes no token, and a form POST from any page reaches it; the
    browser says where such a request comes from (``Sec-Fetch-Site``, ``Origin``). Tools that
    send neither (curl, scripts) are let through. Without a token, a write must also name a
    loopback host (``Host``), so a page whose domain was re-pointed at 127.0.0.1 (DNS
    rebinding) cannot pass for this server's own page.

    Raises:
        HTTPException: 403, when the request comes from another origin.
    """
    from retrieval.serve import is_loopback

    origin = request.headers.get("origin")
    host = request.headers.get("host", "")
    cross = request.headers.get("sec-fetch-site") == "cross-site" or (
        origin is not None and (origin == "null" or urlsplit(origin).netloc != host))
    if cross:
        raise HTTPException(403, f"refusing a write sent by another site's page (origin {origin or 'unknown'}); "
                                 "label from this server's own page or the API")
    name = urlsplit(f"//{host}").hostname or ""
    if token is None and not is_loopback(name):
        raise HTTPException(403, f"refusing a write addressed to host {host!r}: a server without a token takes "
                                 "writes only at 127.0.0.1 or localhost")


def label_counts(labels: Any) -> dict[str, int]:
    """``{positive, negative, uncertain}`` counts of a frame of labels (a ``label`` column, one row per label)."""
    found = labels["label"].value_counts()
    return {v: int(found.get(v, 0)) for v in LABEL_VALUES}


def label_routes(indexes: IndexSet, heavy: Any, token: str | None = None) -> APIRouter:
    """The routes above for ``indexes``; training and scoring take one of ``heavy``'s slots
    (:class:`retrieval.serve.app.Bulkhead`). ``token``: the server's (None: it has none, so
    it listens on the loopback only)."""
    from retrieval.search import hit_rows
    from retrieval.serve.app import holding, records, _json

    router = APIRouter()
    def guard(request: Request) -> None:
        same_site_only(request, token=token)

    writes = [Depends(guard)]

    @router.post("/api/labels", dependencies=writes,
                 summary="Label windows (by window_id) or a span of an indexed file for a target; "
                         "`retrieve label --json` plus the target's counts")
    def add_labels(response: Response,
                   target: Annotated[str, Form(description="Target name: letters, digits, underscores")],
                   label: Annotated[str, Form(description="positive, negative or uncertain")],
                   window_id: Annotated[list[int] | None, Form(description="Window(s) to label")] = None,
                   file_id: Annotated[int | None, Form(description="Or label a span of this indexed file")] = None,
                   start_s: Annotated[float | None, Form(ge=0, description="Span start (empty: 0)")] = None,
                   end_s: Annotated[float | None, Form(gt=0, description="Span end (empty: the file's end)")] = None,
                   index: Annotated[str | None, Form()] = None,
                   segment_id: Annotated[list[int] | None, Form(include_in_schema=False)] = None,  # deprecated
                   ) -> dict[str, Any]:
        live = indexes.get(index)
        window_id = window_id or segment_id  # the deprecated field name (retrieval.legacy)
        target, value = check_target(target), label_value(label)
        if not window_id and file_id is None:
            raise InputError("give `window_id` (a window of a search result or suggestion), or `file_id` "
                             "with `start_s`/`end_s`")
        with holding(live, response) as snap:  # spans read from the snapshot served; the label goes to labels.sqlite
            ad = snap.adapter()
            if window_id:
                n = ad.label_windows(window_id, target, value, source=SOURCE)
            else:
                if file_id not in snap.files.index:
                    raise IndexNotFoundError(f"no file with id {file_id} in this index")
                n = ad.label(str(snap.files.at[file_id, "path"]), target, value, start_s=start_s, end_s=end_s,
                             source=SOURCE)
            counts = label_counts(ad.labels_db.stored([target]))  # no path lookups: same cost at any size
        return {"labels": n, "source": SOURCE, "target": target, "counts": counts}

    @router.get("/api/labels", summary="Stored labels: the rows of `retrieve labels --json` (`--counts`)")
    def list_labels(response: Response,
                    target: Annotated[str | None, Query(description="Only these targets (comma-separated)")] = None,
                    counts: Annotated[bool, Query(description="One row per target and label, with counts")] = False,
                    windows: Annotated[bool, Query(description="The label of each window a label covers "
                                                               "(window_id, target, label)")] = False,
                    index: Annotated[str | None, Query()] = None) -> list[dict[str, Any]]:
        wanted = targets_of(target) if target else None
        with holding(indexes.get(index), response) as snap:
            if windows:
                ad = snap.adapter()
                resolved = ad.labels_db.window_labels(wanted if wanted is not None else ad.labels_db.targets())
                return _json(records(resolved.to_dict(orient="records")), response)
            found = snap.adapter().labels(wanted)
        if counts:
            grouped = found.groupby(["target", "label"]).size().reset_index(name="count")
            return _json(records(grouped.to_dict(orient="records")), response)
        return _json(records(found.drop(columns=["content_hash"]).to_dict(orient="records")), response)

    @router.post("/api/train", dependencies=writes,
                 summary="Fit a head per target on the window vectors; the summaries of `retrieve train --json`")
    def train(response: Response,
              target: Annotated[str, Form(description="Target(s), comma-separated")],
              head: Annotated[HeadKind, Form(description=f"One of {', '.join(HEAD_KINDS)}")] = "linear",
              weak_negatives: Annotated[float, Form(ge=0, description="Weight of each unlabelled window as a "
                                                                      "negative (0: none)")] = WEAK_WEIGHT,
              seed: Annotated[int, Form()] = 0,
              index: Annotated[str | None, Form()] = None) -> list[dict[str, Any]]:
        live, targets = indexes.get(index), targets_of(target)
        with heavy.slot(response), live.writing() as ix:
            summaries = ix.adapter().train(targets, head=head, weak_negatives=weak_negatives, seed=seed)
        return _json(records(summaries), response)

    @router.post("/api/score", dependencies=writes,
                 summary="Score every window with the target's head (column score_<target>); "
                         "the rows of `retrieve score --json`")
    def score(response: Response,
              target: Annotated[str, Form(description="Target(s), comma-separated")],
              index: Annotated[str | None, Form()] = None) -> list[dict[str, Any]]:
        live, targets = indexes.get(index), targets_of(target)
        with heavy.slot(response), live.writing() as ix:
            done = ix.adapter().score(targets)
        return _json(records(done), response)

    @router.get("/api/suggest", summary="The next windows to label, shaped like search hits, with "
                                        "the columns of `retrieve suggest --json`")
    def suggest(response: Response,
                target: Annotated[str, Query(description="Target(s), comma-separated")],
                n: Annotated[int, Query(ge=1, le=1000)] = 20,
                strategy: Annotated[Strategy, Query(description=f"One of {', '.join(STRATEGIES)}")] = "margin",
                seed: Annotated[int, Query()] = 0,
                index: Annotated[str | None, Query()] = None) -> list[dict[str, Any]]:
        targets = targets_of(target)
        with holding(indexes.get(index), response) as snap:
            found = snap.adapter().suggest(targets, n, strategy=strategy, seed=seed)
            score_columns = [f"score_{t}" for t in targets]
            best = found[score_columns].max(axis=1).to_numpy(np.float64) if len(found) else np.zeros(0)
            rows = hit_rows(snap.index.store, found["window_id"].to_numpy(np.int64), best)
        for row, extra in zip(rows, found[[*score_columns, "margin"]].to_dict(orient="records")):
            row.update(extra)  # the window's scores, over the file's best of the same name
        return _json(records(rows), response)

    return router
