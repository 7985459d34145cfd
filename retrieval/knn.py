"""Similarity-weighted k-nearest-neighbour label transfer.

Similarity is the dot product of L2-normalised vectors (cosine); every function here
normalises its inputs, so raw pooled vectors and search-ready vectors give the same
answer. A gallery label may hold several labels separated by ``;`` (multi-label).

Ranking rule (deterministic): neighbours are ordered by similarity, highest first;
equal similarities are ordered by gallery index, lowest first.

Vote rule: neighbour ``j`` votes with weight ``w_j = max(s_j, 0)`` (``weighting=
"similarity"``) or ``1`` (``"uniform"``) for every label it carries. When no neighbour
has a positive similarity the weights fall back to uniform, so a query always gets an
answer when it has a neighbour. A label's *score* is its vote divided by the total
weight of the neighbours: the weighted fraction of neighbours carrying it, in [0, 1].
For single-label galleries the scores sum to 1 and are each label's share of the vote.

Tie rule (deterministic): among labels whose vote is within ``1e-9`` of the best
(relative to the total weight), the winner is the label carried by the best-ranked
neighbour; if that neighbour carries several tied labels (multi-label), the
lexicographically smallest wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from retrieval.errors import InputError
from retrieval.options import LABEL_SEP, WEIGHTINGS, Weighting, check_choice
from retrieval.postprocess import l2_normalize

#: Votes closer than this fraction of the total weight count as tied.
TIE_TOLERANCE = 1e-9
#: Queries scored per block: bounds memory at about ``block * gallery`` floats.
BLOCK_QUERIES = 512


# -- labels ---------------------------------------------------------------------------


def split_label(label: Any, sep: str = LABEL_SEP) -> tuple[str, ...]:
    """The labels in one label cell, stripped, empty parts dropped, in first-seen order.

    ``None``, NaN and empty strings give ``()`` (unlabelled). Non-strings are turned
    into text (``3 -> "3"``), so numeric label columns work.
    """
    if label is None or (isinstance(label, float) and np.isnan(label)) or label is pd.NA:
        return ()
    parts = [p.strip() for p in str(label).split(sep)]
    return tuple(dict.fromkeys(p for p in parts if p))


def label_sets(labels: Sequence[Any], sep: str = LABEL_SEP) -> tuple[list[tuple[str, ...]], list[str], bool]:
    """Parse label cells.

    Returns:
        ``(sets, classes, multi)``: each item's labels, every distinct label sorted, and
        whether any item holds more than one label or any cell contains ``sep``.
    """
    sets = [split_label(v, sep) for v in labels]
    classes = sorted({c for s in sets for c in s})
    multi = any(len(s) > 1 for s in sets) or any(isinstance(v, str) and sep in v for v in labels)
    return sets, classes, multi


def membership(sets: Sequence[tuple[str, ...]], classes: Sequence[str]) -> np.ndarray:
    """``(n, C)`` bool: item ``i`` carries class ``c``."""
    col = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(sets), len(classes)), bool)
    for i, s in enumerate(sets):
        for c in s:
            out[i, col[c]] = True
    return out


# -- neighbours -----------------------------------------------------------------------


@dataclass(frozen=True)
class Neighbours:
    """Nearest gallery items of each query, best first.

    Attributes:
        indices: ``(q, k)`` int64 gallery indices; ``-1`` past the last eligible item.
        similarities: ``(q, k)`` float32 cosine similarities; NaN where ``indices`` is -1.
        n_eligible: ``(q,)`` int64 gallery items each query was allowed to see.
    """

    indices: np.ndarray
    similarities: np.ndarray
    n_eligible: np.ndarray


def check_vectors(x: Any, name: str) -> np.ndarray:
    """``(n, D)`` finite vectors as float32, or :class:`InputError` naming what is wrong."""
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise InputError(f"{name} must be a 2-D (n, D) array; got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"{name} must be numeric; got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise InputError(f"{name} holds NaN or Inf in {bad} rows; drop or re-embed those items")
    return arr


def key_codes(query_keys: Any, gallery_keys: Any, name: str, n_q: int, n_g: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes over the union of query and gallery keys; ``-1`` for a missing key.

    Equal codes (>= 0) mean equal keys. Missing keys (None/NaN) never match anything.
    """
    q = np.asarray(query_keys, dtype=object).ravel()
    g = np.asarray(gallery_keys, dtype=object).ravel()
    if q.shape[0] != n_q or g.shape[0] != n_g:
        raise InputError(f"{name}: need {n_q} query and {n_g} gallery keys; got {q.shape[0]} and {g.shape[0]}")
    codes, _ = pd.factorize(pd.Series(np.concatenate([q, g]), dtype=object), use_na_sentinel=True)
    return codes[:n_q].astype(np.int64), codes[n_q:].astype(np.int64)


def _same(qc: np.ndarray, gc: np.ndarray) -> np.ndarray:
    """``(b, g)`` bool: equal, non-missing codes."""
    return (qc[:, None] == gc[None, :]) & (qc[:, None] >= 0)


def exclusion_block(
    rows: slice,
    n_g: int,
    exclude: np.ndarray | None,
    keys: Sequence[tuple[np.ndarray, np.ndarray]],
) -> np.ndarray:
    """``(b, g)`` bool exclusions for the query rows ``rows``: explicit mask or equal keys."""
    n_rows = rows.stop - rows.start
    out = np.zeros((n_rows, n_g), bool) if exclude is None else np.array(exclude[rows], bool)
    for qc, gc in keys:
        out |= _same(qc[rows], gc)
    return out


def rank_top_k(sims: np.ndarray, k: int) -> np.ndarray:
    """``(b, min(k, g))`` int64 column indices of the ``k`` largest per row, by the ranking rule.

    Uses a partition, and a full stable sort only for rows with a tie at the boundary,
    so the result is exactly that of ``argsort(-sims, kind="stable")[:, :k]``.
    """
    b, g = sims.shape
    k = min(k, g)
    if k == 0 or b == 0:
        return np.zeros((b, k), np.int64)
    if k == g:
        return np.argsort(-sims, axis=1, kind="stable").astype(np.int64)
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(sims, part, axis=1).min(axis=1)
    # Rows whose k-th value is shared by an item left out need the full stable order.
    tied = (sims >= kth[:, None]).sum(axis=1) > k
    vals = np.take_along_axis(sims, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    out = np.take_along_axis(part, order, axis=1)
    if tied.any():
        out[tied] = np.argsort(-sims[tied], axis=1, kind="stable")[:, :k]
    return out.astype(np.int64)


def nearest(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    *,
    exclude: np.ndarray | None = None,
    query_ids: Sequence[Any] | None = None,
    gallery_ids: Sequence[Any] | None = None,
    query_groups: Sequence[Any] | None = None,
    gallery_groups: Sequence[Any] | None = None,
) -> Neighbours:
    """The ``k`` most similar gallery items of each query.

    Args:
        queries: ``(q, D)`` vectors (normalised here).
        gallery: ``(g, D)`` vectors (normalised here).
        k: neighbours wanted; more than the gallery holds returns all of it.
        exclude: optional ``(q, g)`` bool, True where a gallery item must not be returned.
        query_ids, gallery_ids: optional item ids (e.g. file ids); a gallery item with the
            query's id is excluded (leave-one-out, or every window of the same file).
        query_groups, gallery_groups: optional groups (speaker, recording, site); a gallery
            item in the query's group is excluded. Missing groups never match.

    Returns:
        :class:`Neighbours`, best first by the ranking rule in the module docstring.

    Raises:
        InputError: wrong shapes, non-finite values, dims that differ, or ``k < 1``.
    """
    q = check_vectors(queries, "queries")
    g = check_vectors(gallery, "gallery")
    if q.shape[1] != g.shape[1]:
        raise InputError(f"queries have dim {q.shape[1]} but the gallery has dim {g.shape[1]}; embed both the same way")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive integer; got {k!r}")
    if exclude is not None:
        exclude = np.asarray(exclude, bool)
        if exclude.shape != (q.shape[0], g.shape[0]):
            raise InputError(f"exclude must have shape {(q.shape[0], g.shape[0])}; got {exclude.shape}")
    keys = _key_pairs(q.shape[0], g.shape[0], query_ids, gallery_ids, query_groups, gallery_groups)
    qn, gn = l2_normalize(q), l2_normalize(g)
    kk = min(int(k), g.shape[0])
    idx = np.full((q.shape[0], kk), -1, np.int64)
    sim = np.full((q.shape[0], kk), np.nan, np.float32)
    n_elig = np.zeros(q.shape[0], np.int64)
    for start in range(0, q.shape[0], BLOCK_QUERIES):
        rows = slice(start, min(start + BLOCK_QUERIES, q.shape[0]))
        s = qn[rows] @ gn.T
        excl = exclusion_block(rows, g.shape[0], exclude, keys)
        s[excl] = -np.inf
        top = rank_top_k(s, kk)
        vals = np.take_along_axis(s, top, axis=1)
        ok = np.isfinite(vals)
        idx[rows] = np.where(ok, top, -1)
        sim[rows] = np.where(ok, vals, np.nan)
        n_elig[rows] = (~excl).sum(axis=1)
    return Neighbours(idx, sim, n_elig)


def _key_pairs(
    n_q: int, n_g: int, query_ids: Any, gallery_ids: Any, query_groups: Any, gallery_groups: Any
) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for name, qk, gk in (("ids", query_ids, gallery_ids), ("groups", query_groups, gallery_groups)):
        if (qk is None) != (gk is None):
            raise InputError(f"pass both query_{name} and gallery_{name}, or neither")
        if qk is not None:
            pairs.append(key_codes(qk, gk, name, n_q, n_g))
    return pairs


# -- votes ----------------------------------------------------------------------------


def check_weighting(weighting: str) -> Weighting:
    """Return ``weighting`` if valid; an unknown one lists the valid ones (:class:`~retrieval.errors.ChoiceError`)."""
    return check_choice("weighting", weighting, WEIGHTINGS)


def vote_weights(similarities: np.ndarray, weighting: str = "similarity") -> np.ndarray:
    """``(q, k)`` float64 vote weights from ``(q, k)`` similarities (NaN = no neighbour -> 0).

    ``similarity``: ``max(s, 0)``, falling back to 1 per neighbour in rows where no
    neighbour is positive; ``uniform``: 1 per neighbour.
    """
    weighting = check_weighting(weighting)
    s = np.asarray(similarities, np.float64)
    present = np.isfinite(s)
    uniform = present.astype(np.float64)
    if weighting == "uniform":
        return uniform
    w = np.where(present, np.maximum(s, 0.0), 0.0)
    none_positive = w.sum(axis=1) <= 0
    w[none_positive] = uniform[none_positive]
    return w


def tally(indices: np.ndarray, weights: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Votes per label.

    Args:
        indices: ``(q, k)`` int64 gallery indices, ``-1`` for none.
        weights: ``(q, k)`` float64 vote weights (0 where ``indices`` is -1).
        members: ``(g, C)`` bool gallery label membership.

    Returns:
        ``(votes, total, first_rank)``: ``(q, C)`` float64 summed weights, ``(q,)`` float64
        total neighbour weight, and ``(q, C)`` int64 rank of the best neighbour carrying
        each label (``k`` when none does).
    """
    q, k = indices.shape
    n_classes = members.shape[1]
    votes = np.zeros((q, n_classes))
    first = np.full((q, n_classes), k, np.int64)
    rows_per_chunk = max(1, 4_000_000 // max(k * n_classes, 1))
    for a in range(0, q, rows_per_chunk):
        b = min(a + rows_per_chunk, q)
        idx = indices[a:b]
        carried = members[np.maximum(idx, 0)] & (idx >= 0)[:, :, None]  # (c, k, C)
        votes[a:b] = np.einsum("qk,qkc->qc", weights[a:b], carried.astype(np.float64))
        any_c = carried.any(axis=1)
        first[a:b] = np.where(any_c, carried.argmax(axis=1), k)
    return votes, weights.sum(axis=1), first


def pick(votes: np.ndarray, total: np.ndarray, first_rank: np.ndarray) -> np.ndarray:
    """``(q,)`` int64 winning label column per the tie rule; ``-1`` for rows without votes."""
    q, n_classes = votes.shape
    if n_classes == 0:
        return np.full(q, -1, np.int64)
    best = votes.max(axis=1)
    tied = votes >= (best - TIE_TOLERANCE * np.maximum(total, 1e-300))[:, None]
    key = np.where(tied, first_rank, np.iinfo(np.int64).max)
    win = key.argmin(axis=1)  # argmin returns the first (lexicographically smallest) column among equals
    return np.where(total > 0, win, -1).astype(np.int64)


@dataclass(frozen=True)
class Prediction:
    """kNN label transfer for one query.

    Attributes:
        label: the winning label, or None when the query had no neighbour.
        confidence: the winner's score, in [0, 1] (its share of the weighted vote for
            single-label galleries).
        votes: label -> summed vote weight, largest first (ties by label).
        scores: label -> weighted fraction of the neighbours carrying it, largest first.
        neighbours: ``(gallery index, similarity)`` of the neighbours that voted, best first.
    """

    label: str | None
    confidence: float
    votes: dict[str, float]
    scores: dict[str, float]
    neighbours: list[tuple[int, float]]


def classify(
    queries: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: Sequence[Any],
    k: int = 10,
    *,
    weighting: str = "similarity",
    exclude: np.ndarray | None = None,
    query_ids: Sequence[Any] | None = None,
    gallery_ids: Sequence[Any] | None = None,
    query_groups: Sequence[Any] | None = None,
    gallery_groups: Sequence[Any] | None = None,
    sep: str = LABEL_SEP,
) -> list[Prediction]:
    """Label each query by a similarity-weighted vote of its ``k`` nearest labelled gallery items.

    Args:
        queries: ``(q, D)`` vectors.
        gallery: ``(g, D)`` vectors.
        gallery_labels: ``g`` label cells; ``"a;b"`` holds two labels; None/NaN/"" marks an
            unlabelled item, which never votes.
        k: voters per query; more than the labelled gallery uses all of it.
        weighting: ``similarity`` or ``uniform`` (module docstring).
        exclude, query_ids, gallery_ids, query_groups, gallery_groups: exclusions, as
            in :func:`nearest`; indices in the result refer to the full gallery.
        sep: multi-label separator.

    Returns:
        One :class:`Prediction` per query, in query order.

    Raises:
        InputError: shapes or lengths that do not match, ``k < 1``, or no labelled item.
    """
    weighting = check_weighting(weighting)
    g = check_vectors(gallery, "gallery")
    if len(gallery_labels) != g.shape[0]:
        raise InputError(f"gallery has {g.shape[0]} vectors but {len(gallery_labels)} labels")
    sets, classes, _ = label_sets(gallery_labels, sep)
    keep = np.array([bool(s) for s in sets], bool)
    if not keep.any():
        raise InputError("no gallery item has a label; attach labels (folder names or --labels CSV) first")
    kept = np.flatnonzero(keep)
    q = check_vectors(queries, "queries")

    def sub(keys: Sequence[Any] | None) -> np.ndarray | None:
        if keys is None:
            return None
        arr = np.asarray(keys, dtype=object)
        if arr.shape[0] != g.shape[0]:
            raise InputError(f"gallery has {g.shape[0]} vectors but {arr.shape[0]} ids/groups")
        return arr[kept]

    excl = None
    if exclude is not None:
        excl = np.asarray(exclude, bool)
        if excl.shape != (q.shape[0], g.shape[0]):
            raise InputError(f"exclude must have shape {(q.shape[0], g.shape[0])}; got {excl.shape}")
        excl = excl[:, kept]
    nb = nearest(q, g[kept], k, exclude=excl, query_ids=query_ids, gallery_ids=sub(gallery_ids),
                 query_groups=query_groups, gallery_groups=sub(gallery_groups))
    members = membership([sets[i] for i in kept], classes)
    w = vote_weights(nb.similarities, weighting)
    votes, total, first = tally(nb.indices, w, members)
    win = pick(votes, total, first)
    out = []
    for i in range(q.shape[0]):
        present = np.flatnonzero((votes[i] > 0) | (first[i] < nb.indices.shape[1]))
        order = sorted(present.tolist(), key=lambda c: (-votes[i, c], classes[c]))
        denom = total[i] if total[i] > 0 else 1.0
        vote_d = {classes[c]: float(votes[i, c]) for c in order}
        score_d = {classes[c]: float(votes[i, c] / denom) for c in order}
        valid = nb.indices[i] >= 0
        voters = [(int(kept[j]), float(s)) for j, s in zip(nb.indices[i][valid], nb.similarities[i][valid])]
        label = classes[win[i]] if win[i] >= 0 else None
        conf = float(votes[i, win[i]] / denom) if win[i] >= 0 else 0.0
        out.append(Prediction(label, conf, vote_d, score_d, voters))
    return out
