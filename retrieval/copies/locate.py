"""``locate --match copy``: every occurrence of the clip itself in a long recording.

The clip's and the long file's copy frames (:mod:`retrieval.copies.features`; the long
file's noise floor measured over runs as long as the clip, :func:`~retrieval.copies.match.band_floor`,
so noise lying only over a copy is taken out as if the copy were a file of its own) are
correlated at every offset (:func:`retrieval.copies.match.scores`); offsets scoring at
least the threshold, with at least :data:`MIN_COVERAGE` of the clip's loud frames
loud in the long file too, are events, strongest first, each suppressing the others
within one clip length. An event spans the part of the clip found (both sides loud), and
carries ``offset_s`` (where the clip's time zero lies in the long file), ``confidence``
(:func:`~retrieval.copies.duplicates.combined_confidence` at the best offset) and ``gain_db`` (level of the occurrence minus the clip's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retrieval.copies.features import COPY_RATE, HOP_S, HOP_SAMPLES
from retrieval.copies.frames import frames_of_path
from retrieval.copies.match import Prepared, fine_match, gain_db, prepare, scores, vertex
from retrieval.errors import InputError

#: Default least confidence of an occurrence: that of a duplicate pair
#: (:data:`retrieval.copies.duplicates.MATCH_THRESHOLD`, :func:`~retrieval.copies.duplicates.combined_confidence`).
from retrieval.copies.duplicates import MATCH_THRESHOLD, REFINE_MARGIN, combined_confidence  # noqa: E402

#: Least share of the clip's loud frames an occurrence must cover (a trim of up to about
#: half the clip still counts).
MIN_COVERAGE = 0.4
#: Phases the clip is framed at (zeros before it, samples at ``COPY_RATE``): a copy lies at
#: any sample, and a copy framed half a hop off loses up to 0.15 of its correlation.
LEADS = tuple(range(0, HOP_SAMPLES, HOP_SAMPLES // 4))
COLUMNS = ("start_s", "end_s", "duration_s", "peak_s", "peak_score", "mean_score", "offset_s", "confidence",
           "gain_db")


def locate_copies(clip: str | Path, long_file: str | Path, *, start_s: float | None = None,
                  end_s: float | None = None, threshold: float | None = None,
                  min_coverage: float = MIN_COVERAGE) -> pd.DataFrame:
    """Events where the clip itself (not a look-alike) occurs in ``long_file``, in time order.

    Returns:
        DataFrame with :data:`COLUMNS` (seconds; ``peak_score`` = ``mean_score`` =
        ``confidence``, so the columns of ``--match similar`` keep their meaning);
        ``attrs``: threshold, duration_s, match, warnings.

    Raises:
        InputError: a threshold outside (0, 1], or a clip with no loud audio.
        AudioError: a file that cannot be decoded.
    """
    thr = MATCH_THRESHOLD if threshold is None else float(threshold)
    if not (0.0 < thr <= 1.0):
        raise InputError(f"--threshold for --match copy is a confidence in (0, 1]; got {threshold}")
    phases = frames_of_path(Path(clip), start_s, end_s, leads=LEADS)
    qs = [prepare(f) for f in phases]
    if qs[0].w.sum() == 0:
        raise InputError(f"the clip {Path(clip).name} has no loud audio to match (silent, or shorter than 20 ms)")
    lf = prepare(frames_of_path(Path(long_file)), floor_frames=qs[0].n_frames)
    events = find_occurrences(qs, lf, thr, min_coverage)
    q = qs[0]
    frame = pd.DataFrame(events, columns=list(COLUMNS))
    frame.attrs.update({"threshold": thr, "background": 0.0, "threshold_rule": "fixed confidence",
                        "window_s": q.n_frames * HOP_S, "hop_s": HOP_S, "duration_s": lf.n_frames * HOP_S,
                        "encoder": "copy frames", "pooling": "none", "match": "copy", "warnings": []})
    return frame


def candidate_confidences(qs: list[Prepared], lf: Prepared, threshold: float,
                          min_coverage: float = MIN_COVERAGE) -> tuple[np.ndarray, np.ndarray, int]:
    """Confidence of the clip at every offset in ``lf``: the quantity the threshold applies to.

    Every local maximum (over the best phase) of the whole-frame correlation that has
    :data:`MIN_COVERAGE` and scores at least ``threshold - REFINE_MARGIN`` is read at its
    fractional offset and judged as duplicates judges a pair
    (:func:`~retrieval.copies.duplicates.combined_confidence`); every other offset is ``-inf``.

    Returns:
        ``(confidence, phase, first)``: ``(Tl + Tq - 1,)`` float64 confidences and int64 phase
        indices (into ``qs``); entry ``k`` is the offset ``k + first`` frames.
    """
    from scipy.signal import oaconvolve

    best, phase, first = None, None, 0
    for p, qp in enumerate(qs):
        score, cells, first = scores(lf, qp)
        loud = np.rint(oaconvolve(lf.loud, qp.loud[::-1], mode="full"))  # loud frames in common
        need = max(1.0, min_coverage * float(qp.loud.sum()))
        s = np.where((cells > 0) & (loud >= need) & (score >= threshold - REFINE_MARGIN), score, -np.inf)
        if best is None:
            best, phase = s, np.zeros(s.size, np.int64)
        else:
            better = s > best
            best, phase = np.where(better, s, best), np.where(better, p, phase)
    # judge each local maximum of the correlation as duplicates judges a pair: read at its
    # fractional offset, its confidence also weighs how well the band levels agree
    conf = np.full(best.size, -np.inf)
    padded = np.r_[-np.inf, best, -np.inf]
    peaks = np.flatnonzero(np.isfinite(best) & (best >= padded[:-2]) & (best >= padded[2:]))
    for k in peaks.tolist():
        fraction = vertex(float(padded[k]), float(best[k]), float(padded[k + 2]))
        corr, level_error = fine_match(lf, qs[int(phase[k])], k + first + fraction)
        conf[k] = combined_confidence(max(corr, float(best[k])), level_error)
    return conf, phase, first


def find_occurrences(qs: list[Prepared], lf: Prepared, threshold: float, min_coverage: float = MIN_COVERAGE,
                     leads: tuple[int, ...] = None) -> list[dict[str, Any]]:  # type: ignore[assignment]
    """Occurrences of the clip in ``lf`` as event dicts (:data:`COLUMNS`), in time order.

    ``qs`` holds the clip framed at the phases ``leads`` (samples of zeros before it at
    ``COPY_RATE``; default :data:`LEADS`); each offset keeps its best phase.
    """
    leads = LEADS if leads is None else leads
    q = qs[0]
    if q.n_frames < 2 or lf.n_frames < 2:
        return []
    score, phase, first = candidate_confidences(qs, lf, threshold, min_coverage)
    score = np.where(score >= threshold, score, -np.inf)
    cand = score.copy()
    out = []
    while True:
        k = int(np.argmax(cand))
        if not np.isfinite(cand[k]):
            break
        off = k + first
        q = qs[int(phase[k])]
        shift_s = leads[int(phase[k])] / COPY_RATE  # the clip's time zero lies this much after its frame 0
        cand[max(0, k - q.n_frames):k + q.n_frames + 1] = -np.inf
        ib = np.arange(q.n_frames)
        ia = ib + off
        inside = (ia >= 0) & (ia < lf.n_frames)
        both = np.zeros(q.n_frames, bool)
        both[inside] = (lf.loud[ia[inside]] > 0) & (q.loud[ib[inside]] > 0)
        on = np.flatnonzero(both)
        b0, b1 = (int(on[0]) - 1, int(on[-1]) + 1) if on.size else (0, q.n_frames)  # loud[t] needs frame t-1
        start, end = max(0.0, (b0 + off) * HOP_S - shift_s), (b1 + off) * HOP_S - shift_s
        conf = round(float(score[k]), 4)
        out.append({"start_s": round(start, 4), "end_s": round(end, 4), "duration_s": round(end - start, 4),
                    "peak_s": round((start + end) / 2, 4), "peak_score": conf, "mean_score": conf,
                    "offset_s": round(off * HOP_S + shift_s, 4), "confidence": conf,
                    "gain_db": round(-gain_db(lf, q, off), 2)})
    return sorted(out, key=lambda e: e["start_s"])
