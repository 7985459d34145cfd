"""``retrieve duplicates``: groups of files that hold the same recording.

Steps, for an index whose files have copy frames (``retrieve index --copies``):

1. **Propose** (:func:`propose`): each file gets a short summary of its spectrum (mean and
   spread of the gain-free band levels over its loud frames, :func:`summary`); a FAISS
   inner-product search returns each file's :data:`NEIGHBOURS` nearest. Copies share the
   summary almost exactly; so do other takes of the same word, which is why verification
   follows. Two views (:data:`SUMMARY_RANGES_DB`), so at most ``2 * n * NEIGHBOURS`` pairs; above :data:`FLAT_MAX` files the search is an
   HNSW graph, so neither step is quadratic in the library.
2. **Verify** (:func:`verify_pairs`): each pair is aligned at every offset (one batch of
   matrix products per file, :func:`retrieval.copies.match.best_offsets`, then one batched
   reading of the file in all its partners at their best offsets, :func:`_matches_at`; BLAS on
   one thread);
   it is a copy when its confidence (:func:`combined_confidence`: the aligned correlation,
   read at the fractional offset, times the agreement of the band levels) is at least
   :data:`MATCH_THRESHOLD` over at least ``min_overlap_s`` seconds of loud audio.
3. **Group**: byte-identical files (same content hash) and verified pairs are joined
   (union-find). A group's confidence is its weakest pair's; its first file is the longest
   (then the smallest id), and every other member gets ``duplicate_of`` = that file's path.

Nothing is deleted. The pairs are stored (:class:`~retrieval.store.copies.CopyStore`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from retrieval.copies.features import BANDS, FEATURE_VERSION, HOP_S, dequantise
from retrieval.copies.match import (LOUD_RANGE_DB, Hosts, Prepared, align, best_offsets, fine_matches,
                                    level_errors, loud_frames, loud_readings, prepare)
from retrieval.embed import single_threaded_blas
from retrieval.errors import InputError
from retrieval.store.copies import CopyStore, PairRow

#: Confidence (:func:`combined_confidence`) above which a pair is a copy: the smallest whose pair
#: precision reaches 0.99 on the tuning half of ``scripts/bench_copies.py`` (speakers it does not
#: report on); see ``docs/bench_copies.md``.
MATCH_THRESHOLD = 0.33
#: dB of band-level disagreement (:func:`retrieval.copies.match.fine_match`) that scales a pair's
#: confidence by 1/e. Chosen a priori, between a codec's error (about 0.5 dB) and another take's
#: (1.5 dB and more).
LEVEL_SCALE_DB = 2.0
#: Pairs whose whole-frame score is this close under the threshold are aligned to a fraction of a
#: frame (:func:`retrieval.copies.match.fine_match`) before they are judged.
REFINE_MARGIN = 0.2
#: How much lower a pair's level error may read at the fractional offset than at the whole frame
#: (a bound used to skip pairs that cannot pass, in :func:`verify_pairs`).
LEVEL_SLACK_DB = 0.5
#: Candidates proposed per file and summary view.
NEIGHBOURS = 24
#: Loudness ranges (dB under the loudest frame) of the summary views (:func:`summaries`): all
#: loud frames, and only the loudest, which added noise leaves speech-dominated (on the tuning
#: speakers a 10 dB SNR copy had its original among 24 neighbours 0.30 of the time in the first
#: view, 0.72 in the second).
SUMMARY_RANGES_DB = (LOUD_RANGE_DB, 10.0)
#: Default least overlap of loud audio, seconds.
MIN_OVERLAP_S = 0.1
#: A pair is a whole-file copy (not "A contains B") when B is at least this share of A's length.
WHOLE_RATIO = 0.9


def summary(frames: np.ndarray, range_db: float | None = None) -> np.ndarray:
    """``(T, BANDS)`` uint8 frames -> ``(2 * BANDS,)`` float32 unit vector: mean and std over loud
    frames (within ``range_db`` of the loudest; default that of
    :func:`~retrieval.copies.match.loud_frames`) of the band levels less each frame's mean
    (gain-free spectral shape)."""
    e = dequantise(frames).astype(np.float64)
    if len(e) == 0:
        return np.zeros(2 * BANDS, np.float32)
    level = 10.0 * np.log10(np.sum(10.0 ** (e / 10.0), axis=1) + 1e-12)
    loud = loud_frames(level)
    if range_db is not None:
        loud &= level > level.max() - range_db
    x = e[loud] if loud.any() else e
    x = x - x.mean(axis=1, keepdims=True)
    v = np.concatenate([x.mean(axis=0), x.std(axis=0)])
    v -= v.mean()
    n = np.linalg.norm(v)
    return (v / n if n > 0 else v).astype(np.float32)


#: Above this many files the proposal's kNN is approximate (HNSW graph, ``n log n``) instead of exact
#: (flat, ``n^2``). Measured: see ``docs/bench_copies.md``.
FLAT_MAX = 20_000
#: HNSW links per node and search breadth (times ``k``) above :data:`FLAT_MAX`.
HNSW_M, HNSW_EF_PER_K = 32, 4


def _knn(x: np.ndarray, k: int) -> np.ndarray:
    """``(n, S)`` float32 unit rows -> ``(n, k)`` int64 neighbour ids by inner product (``-1`` = none)."""
    import faiss

    if x.shape[0] <= FLAT_MAX:
        index = faiss.IndexFlatIP(x.shape[1])
    else:
        index = faiss.IndexHNSWFlat(x.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 64
        index.hnsw.efSearch = max(64, HNSW_EF_PER_K * k)
    index.add(x)
    return index.search(x, k)[1]


def summaries(frames: list[np.ndarray]) -> np.ndarray:
    """``n`` files' ``(T, BANDS)`` uint8 frames -> ``(len(SUMMARY_RANGES_DB), n, 2 * BANDS)`` float32:
    one :func:`summary` per file and loudness range."""
    if not frames:
        return np.zeros((len(SUMMARY_RANGES_DB), 0, 2 * BANDS), np.float32)
    return np.stack([np.stack([summary(f, r) for f in frames]) for r in SUMMARY_RANGES_DB])


def propose(summaries: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """``(n, S)`` (or ``(views, n, S)``) float32 unit summaries -> ``(m, 2)`` int64 candidate pairs
    ``i < j``, unique.

    Each file proposes its ``k`` nearest summaries in each view, so ``m <= views * n * k``
    and the pairs grow linearly with the library.
    """
    views = summaries[None] if summaries.ndim == 2 else summaries
    n = views.shape[1]
    if n < 2:
        return np.zeros((0, 2), np.int64)
    found = []
    for v in views:
        nn = _knn(np.ascontiguousarray(v, np.float32), min(k + 1, n))
        i = np.repeat(np.arange(n), nn.shape[1])
        j = nn.ravel()
        keep = (j >= 0) & (j != i)
        found.append(np.stack([np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])], 1))
    return np.unique(np.concatenate(found), axis=0)


@dataclass(frozen=True)
class Match:
    """A verified pair: ``b`` lies in ``a`` (``a`` is the longer)."""

    a: int
    b: int
    a_start_s: float
    a_end_s: float
    b_start_s: float
    b_end_s: float
    confidence: float
    gain_db: float
    offset_s: float
    duration_ratio: float


def verify(a_id: int, b_id: int, pa: Prepared, pb: Prepared, min_overlap_s: float,
           threshold: float = MATCH_THRESHOLD) -> Match | None:
    """Align ``pb`` in ``pa`` (swapped so that ``a`` is the longer); a :class:`Match` or None."""
    if pb.n_frames > pa.n_frames:
        a_id, b_id, pa, pb = b_id, a_id, pb, pa
    al = align(pa, pb)
    if al is None:
        return None
    found = _matches_at(b_id, pb, [a_id], Hosts([pa]), np.array([al.offset]), np.array([al.score]),
                        np.array([al.fraction]), min_overlap_s, threshold)
    return found[0] if found else None


def combined_confidence(correlation: float, level_error: float) -> float:
    """A pair's confidence: the correlation of its aligned fine structure times
    ``exp(-level_error / LEVEL_SCALE_DB)``, the agreement of its band levels (0..1)."""
    return float(_confidences(np.array([correlation], np.float64), np.array([level_error], np.float64))[0])


def _confidences(correlation: np.ndarray, level_error: np.ndarray) -> np.ndarray:
    """:func:`combined_confidence` of ``(K,)`` pairs at once, float64 (0 where the level error is not finite)."""
    finite = np.isfinite(level_error)
    return np.where(finite, correlation * np.exp(-np.where(finite, level_error, 0.0) / LEVEL_SCALE_DB), 0.0)


def _matches_at(b_id: int, pb: Prepared, a_ids: list[int], hosts: Hosts, offsets: np.ndarray,
                score: np.ndarray, fraction: np.ndarray, min_overlap_s: float, threshold: float) -> list[Match]:
    """The matches of ``pb`` in each of ``hosts`` (ids ``a_ids``) at ``(K,)`` whole-frame
    ``offsets`` with their correlations ``score`` and the parabola's ``fraction`` of a frame, read all at
    once; pairs that do not pass are left out.

    Pairs whose whole-frame correlation is within :data:`REFINE_MARGIN` of ``threshold`` are
    read at the fractional offset (:func:`retrieval.copies.match.fine_matches`) and judged by
    :func:`combined_confidence`.
    """
    live = np.flatnonzero(score >= threshold - REFINE_MARGIN)
    if live.size == 0:
        return []
    hs = hosts.take(live)
    offsets, score, fraction = offsets[live].astype(np.int64), score[live], fraction[live]
    fine, level_error = fine_matches(pb, hs, offsets + fraction)
    offset_f = np.where(fine < score, offsets.astype(np.float64), offsets + fraction)
    conf = _confidences(np.maximum(fine, score), level_error)
    keep = np.flatnonzero(conf >= threshold)
    if keep.size == 0:
        return []
    hs = hs.take(keep)
    gains, b0, b1 = loud_readings(pb, hs, offsets[keep])
    out = []
    for j, k in enumerate(keep.tolist()):
        lo, hi, of = int(b0[j]), int(b1[j]), float(offset_f[k])
        if (hi - lo) * HOP_S < min_overlap_s:
            continue
        out.append(Match(a_ids[live[k]], b_id, (lo + of) * HOP_S, (hi + of) * HOP_S, lo * HOP_S, hi * HOP_S,
                         round(float(conf[k]), 4), round(float(gains[j]), 2), round(of * HOP_S, 4),
                         round(pb.n_frames / max(int(hs.frames[j]), 1), 4)))
    return out


def verify_pairs(ids: list[int], prepared: list[Prepared], pairs: np.ndarray, min_overlap_s: float,
                 threshold: float = MATCH_THRESHOLD) -> list[Match]:
    """:func:`verify` over ``(m, 2)`` index pairs into ``ids``/``prepared``, batched per shorter file.

    Each file is aligned inside all its longer (or equal, earlier) partners at once
    (:func:`retrieval.copies.match.best_offsets`) and read at the best offsets all at once
    (:func:`_matches_at`); the matches equal :func:`verify`'s, pair by pair. BLAS runs on one
    thread: the products are small, and on a loaded 2-core machine a second BLAS thread made
    them 5-25 times slower (see ``docs/benchmarks.md``).
    """
    if pairs.shape[0] == 0:
        return []
    with single_threaded_blas():
        return _verify_pairs(ids, prepared, pairs, min_overlap_s, threshold)


def _verify_pairs(ids: list[int], prepared: list[Prepared], pairs: np.ndarray, min_overlap_s: float,
                  threshold: float) -> list[Match]:
    n = np.array([p.n_frames for p in prepared])
    i, j = pairs[:, 0], pairs[:, 1]
    swap = n[j] > n[i]  # ties keep the pair's order, as verify does
    longer, shorter = np.where(swap, j, i), np.where(swap, i, j)
    order = np.lexsort((longer, shorter))
    longer, shorter = longer[order], shorter[order]
    starts = np.flatnonzero(np.r_[True, shorter[1:] != shorter[:-1]])
    ends = np.r_[starts[1:], shorter.size]
    every = Hosts(prepared)  # every file's fields concatenated once, on first use; groups read rows of it
    out: list[Match] = []
    for s0, s1 in zip(starts.tolist(), ends.tolist()):
        out += _verify_group(ids, prepared, every, int(shorter[s0]), longer[s0:s1], min_overlap_s, threshold)
    return out


def _verify_group(ids: list[int], prepared: list[Prepared], every: Hosts, b: int, partners: np.ndarray,
                  min_overlap_s: float, threshold: float) -> list[Match]:
    """The matches of file ``b`` (index into ``ids``/``prepared``) in its longer ``partners`` (indexes)."""
    hosts = partners.tolist()
    found = best_offsets(prepared[b], [prepared[a] for a in hosts])
    live = [k for k, f in enumerate(found) if f is not None and f[1] >= threshold - REFINE_MARGIN]
    if not live:
        return []
    best = np.array([found[k] for k in live], np.float64)  # (offset, score, cells, fraction) rows
    stacked = every.take(np.array([hosts[k] for k in live]))
    # pairs under the threshold at the whole frame that cannot reach it at any fraction of a frame
    # are not read there (a look at their whole-frame level error; the pairs above it are read anyway)
    reach = best[:, 1] >= threshold
    low = np.flatnonzero(~reach)
    if low.size:
        errors = level_errors(prepared[b], stacked.take(low), best[low, 0].astype(np.int64))
        reach[low] = _confidences(best[low, 1] + REFINE_MARGIN, np.maximum(errors - LEVEL_SLACK_DB, 0.0)) >= threshold
    sel = np.flatnonzero(reach)
    return _matches_at(ids[b], prepared[b], [ids[hosts[live[k]]] for k in sel.tolist()], stacked.take(sel),
                       best[sel, 0].astype(np.int64), best[sel, 1], best[sel, 3], min_overlap_s, threshold)


class _Groups:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def join(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass(frozen=True)
class DuplicateReport:
    """What :func:`find_duplicates` found. ``groups``: one dict per group (see :func:`group_rows`)."""

    files: int
    candidates: int
    pairs: list[PairRow]
    groups: list[dict[str, Any]]


def find_duplicates(store: Any, min_overlap_s: float = MIN_OVERLAP_S, threshold: float = MATCH_THRESHOLD,
                    neighbours: int = NEIGHBOURS, write: bool = True) -> DuplicateReport:
    """Find, group and (with ``write``) store the duplicates of an index's files.

    Raises:
        InputError: the index has no copy frames (it was built without ``--copies``), or an
            option is out of range.
    """
    if not (min_overlap_s >= 0):
        raise InputError(f"--min-overlap-s must be 0 or more seconds; got {min_overlap_s}")
    cs = CopyStore(store.db)
    frames = cs.frames(BANDS, FEATURE_VERSION)
    files = cs.file_table()
    if files and not frames:
        raise InputError("this index has no copy frames; run `retrieve index --copies --index ...` on it once "
                         "(the vectors are kept; only the copy frames are computed), then `retrieve duplicates`")
    matches, n_cand = match_frames(frames, min_overlap_s, threshold, neighbours)
    dur = {f[0]: f[3] for f in files}
    for group in cs.identical_groups():
        first = group[0]
        for other in group[1:]:
            d = float(dur.get(first) or 0.0)
            matches.append(Match(first, other, 0.0, d, 0.0, d, 1.0, 0.0, 0.0, 1.0))
    pairs, duplicate_of, groups = group_rows(matches, files)
    if write and not store.db.read_only:
        with store.db.transaction():
            cs.replace_pairs(pairs, duplicate_of)
    return DuplicateReport(len(files), n_cand, pairs, groups)


def match_frames(frames: dict[int, np.ndarray], min_overlap_s: float = MIN_OVERLAP_S,
                 threshold: float = MATCH_THRESHOLD, neighbours: int = NEIGHBOURS) -> tuple[list[Match], int]:
    """Propose and verify over ``file id -> (T, BANDS) uint8`` frames: ``(matches, candidates checked)``."""
    ids = sorted(frames)
    prepared = [prepare(frames[i]) for i in ids]
    cand = propose(summaries([frames[i] for i in ids]), neighbours)
    return verify_pairs(ids, prepared, cand, min_overlap_s, threshold), int(cand.shape[0])


def group_rows(matches: list[Match], files: list[tuple[int, str, str | None, float]]
               ) -> tuple[list[PairRow], dict[int, str], list[dict[str, Any]]]:
    """Join matches into groups: ``(pair rows, file id -> its group's first path, group dicts)``."""
    best: dict[tuple[int, int], Match] = {}
    for m in matches:  # a byte-identical pair may also have been verified: keep its best evidence
        key = (min(m.a, m.b), max(m.a, m.b))
        if key not in best or m.confidence > best[key].confidence:
            best[key] = m
    matches = list(best.values())
    g = _Groups()
    for m in matches:
        g.join(m.a, m.b)
    by_id = {f[0]: f for f in files}
    members: dict[int, list[int]] = {}
    for fid in list(g.parent):
        members.setdefault(g.find(fid), []).append(fid)
    by_root: dict[int, list[Match]] = {}
    for m in matches:  # once, in match order (a scan of every match per group is quadratic at scale)
        by_root.setdefault(g.find(m.a), []).append(m)
    pairs, duplicate_of, groups = [], {}, []
    for root, ids in sorted(members.items()):
        ids.sort(key=lambda i: (-(by_id[i][3] or 0.0) if i in by_id else 0.0, i))
        first = ids[0]
        mine = by_root[root]
        for m in mine:
            pairs.append(PairRow(m.a, m.b, m.a_start_s, m.a_end_s, m.b_start_s, m.b_end_s, m.confidence,
                                 m.gain_db, m.offset_s, m.duration_ratio, root))
        for i in ids[1:]:
            duplicate_of[i] = by_id[first][1] if first in by_id else str(first)
        groups.append({
            "group_id": root, "files": [by_id[i][1] for i in ids if i in by_id], "first": by_id[first][1],
            "confidence": min(m.confidence for m in mine),
            "pairs": [{**asdict(m), "a": by_id[m.a][1], "b": by_id[m.b][1],
                       "whole": m.duration_ratio >= WHOLE_RATIO} for m in mine],
        })
    return pairs, duplicate_of, groups
