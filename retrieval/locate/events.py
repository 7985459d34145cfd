"""A similarity curve -> events: threshold, fill short gaps, drop short events. Pure numpy.

Time is integer samples here; seconds appear only in :mod:`retrieval.locate.api`.

The curve is one score per analysis window ``[start_i, end_i)``.

The stages, in order:

1. **Threshold** (:func:`threshold_events`). A run of consecutive windows scoring above
   the threshold ``T`` is one event; ``T`` decides *which* events exist, not where they
   end. The event is the span of its best window -- the one the query fits best; for a
   copy of a query as long as the window, the window the copy fills exactly, so the
   onset is within half a hop. With ``near_peak < 1`` the event spans every window of its
   run scoring within ``1 - near_peak`` of the peak's height above the background, from
   the first one's start to the last one's end: ``near_peak=0.9`` reports the whole of a
   steady sound longer than the query (engine, rain), at the cost of onsets a hop or two
   early for copies. (Edges read off where the curve crosses ``T``, or half its height,
   were measured too and are worse: the curve's flanks are not straight lines --
   ``docs/bench_locate.md``.) The first window starts at 0 and the last ends at the
   file's end, so events reach the edges. Events that overlap or touch are merged.
2. **Fill gaps** (:func:`fill_gaps`): two events separated by *less than* ``max_gap``
   samples become one; a gap of exactly ``max_gap`` is kept.
3. **Drop short events** (:func:`drop_short`): events *shorter than* ``min_dur`` samples
   are dropped; an event of exactly ``min_dur`` is kept.

The adaptive threshold is explained in :func:`adaptive_threshold`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retrieval.errors import InputError

#: Candidate peaks must rise more than this share of the way from the background to the best match.
PEAK_FLOOR = 0.5
#: An event spans the windows of its run scoring at least this share of its peak's height above the
#: background; 1 keeps the best window (and exact ties).
NEAR_PEAK = 1.0


@dataclass(frozen=True)
class Threshold:
    """A threshold on a similarity curve and where it came from.

    Attributes:
        value: windows scoring strictly above this are active.
        background: the curve's typical level (its median), drawn in the plot.
        rule: how ``value`` was chosen, in words.
    """

    value: float
    background: float
    rule: str


@dataclass(frozen=True)
class Events:
    """Detected events, in time order.

    Attributes:
        intervals: ``(m, 2)`` int64 ``[start, end)`` samples.
        peak_index: ``(m,)`` int64, the best-scoring window inside each event.
        peak_score: ``(m,)`` float64, that window's score.
        mean_score: ``(m,)`` float64, mean score of the windows lying entirely inside the event
            (those in filled gaps too; a one-window event's mean is its peak).
    """

    intervals: np.ndarray
    peak_index: np.ndarray
    peak_score: np.ndarray
    mean_score: np.ndarray

    def __len__(self) -> int:
        return len(self.intervals)


def centres(windows: np.ndarray) -> np.ndarray:
    """``(n,)`` float64 centre of each ``[start, end)`` window, in samples."""
    w = _check_windows(windows)
    return (w[:, 0] + w[:, 1]) / 2.0


def peak_heights(windows: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Heights of the curve's local peaks, highest first: ``(p,)`` float64.

    A window is a peak when no window whose centre lies within half a window length of
    its own scores higher (windows of equal score on a plateau all count), so one sound
    gives one peak, not one per hop.
    """
    s = _check_scores(scores)
    c = centres(windows)
    if len(c) != len(s):
        raise InputError(f"need one score per window; got {len(s)} scores for {len(c)} windows")
    half = float(np.median(windows[:, 1] - windows[:, 0])) / 2.0
    step = float(np.median(np.diff(c))) if len(c) > 1 else 1.0
    r = max(int(round(half / max(step, 1e-9))), 1)
    padded = np.pad(s, r, mode="constant", constant_values=-np.inf)
    local_max = np.lib.stride_tricks.sliding_window_view(padded, 2 * r + 1).max(axis=1)
    return np.sort(s[s >= local_max])[::-1]


def adaptive_threshold(windows: np.ndarray, scores: np.ndarray, floor: float = PEAK_FLOOR) -> Threshold:
    """The threshold between the curve's best matches and everything else.

    Rule: ``background`` is the curve's median and ``top`` its maximum. The candidates are
    the local peaks (:func:`peak_heights`) higher than ``floor`` of the way from the
    background to the top (half-way by default). Their heights, sorted, with that
    half-way level appended, are split at the largest drop between consecutive values,
    and the threshold is the middle of that drop: the peaks above it stand out from all
    the others by the widest margin the curve offers (a single-linkage split into
    "matches" and "the rest").

    Why this rule (measured in ``docs/bench_locate.md``): the curve is rarely one bump on
    Gaussian noise. Windows of pauses and of other speech form two populations, and on the
    logmel baseline a copy of the query peaks only 3-4 robust standard deviations above
    the median, so ``median + k * MAD`` either admits other words (k = 3) or misses most
    copies (k = 5); Otsu's split of all windows falls between pauses and speech; a fixed
    share of the top peak's height admits whatever reaches that share. The largest drop
    among the tallest peaks is scale-free and needs no noise model; the floor keeps the
    split out of the background's own range.

    The curve's best peak always passes, so a file without the query still yields its
    best-matching spot; judge it by ``peak_score`` or pass a fixed threshold.

    Args:
        windows: ``(n, 2)`` int64 ``[start, end)`` samples, sorted by start.
        scores: ``(n,)`` finite scores, ``n >= 1``.
        floor: in ``[0, 1)``.

    Raises:
        InputError: empty or non-finite scores, mismatched lengths, ``floor`` out of range.
    """
    s = _check_scores(scores)
    if not 0 <= floor < 1:
        raise InputError(f"floor must lie in [0, 1); got {floor}")
    background = float(np.median(s))
    top = float(s.max())
    level = background + floor * (top - background)
    heights = peak_heights(windows, s)
    heights = np.append(heights[heights > level], level)
    if len(heights) < 2 or top <= background:  # a flat curve: nothing stands out
        return Threshold(top, background, f"flat curve at {top:.4f}: no events")
    drops = heights[:-1] - heights[1:]
    j = int(np.argmax(drops))
    value = float(heights[j] + heights[j + 1]) / 2.0
    rule = (f"middle of the largest drop among peak heights above {level:.4f} (median {background:.4f} + "
            f"{floor:g} x (top {top:.4f} - median)): {heights[j]:.4f} -> {heights[j + 1]:.4f}, "
            f"{j + 1} peak(s) above")
    return Threshold(value, background, rule)


def fixed_threshold(scores: np.ndarray, value: float) -> Threshold:
    """A user-chosen threshold, with the curve's background for the plot."""
    s = _check_scores(scores)
    if not (isinstance(value, (int, float)) and np.isfinite(value)):
        raise InputError(f"threshold must be a finite number; got {value!r}")
    return Threshold(float(value), float(np.median(s)), f"fixed at {value:g}")


def threshold_events(windows: np.ndarray, scores: np.ndarray, threshold: Threshold,
                     near_peak: float = NEAR_PEAK) -> np.ndarray:
    """Stage 1: one event per run of windows above ``threshold.value`` (see the module docstring).

    Args:
        windows: ``(n, 2)`` int64 ``[start, end)`` samples, sorted by start.
        scores: ``(n,)`` float scores.
        threshold: from :func:`adaptive_threshold` or :func:`fixed_threshold`.
        near_peak: in ``(0, 1]`` (default :data:`NEAR_PEAK`: the best window, ties included).

    Returns:
        ``(m, 2)`` int64 ``[start, end)`` sample intervals, sorted and disjoint.
    """
    s = _check_scores(scores, allow_empty=True)
    w = _check_windows(windows)
    if len(w) != len(s):
        raise InputError(f"need one score per window; got {len(s)} scores for {len(w)} windows")
    if not 0 < near_peak <= 1:
        raise InputError(f"near_peak must lie in (0, 1]; got {near_peak}")
    out: list[tuple[int, int]] = []
    for a, b in _runs(s > threshold.value):
        peak = float(s[a:b].max())
        level = threshold.background + near_peak * (peak - threshold.background)
        near = a + np.flatnonzero(s[a:b] >= min(level, peak))
        out.append((int(w[near, 0].min()), int(w[near, 1].max())))
    return _merge(np.array(out, np.int64).reshape(-1, 2), 1)


def fill_gaps(intervals: np.ndarray, max_gap: int) -> np.ndarray:
    """Stage 2: join events separated by fewer than ``max_gap`` samples (a gap of exactly ``max_gap`` stays).

    Args:
        intervals: ``(m, 2)`` int64 sorted, disjoint ``[start, end)`` samples.
        max_gap: samples, ``>= 0`` (0 fills nothing).
    """
    if max_gap < 0:
        raise InputError(f"max_gap must be >= 0 samples; got {max_gap}")
    return _merge(_check_intervals(intervals), max_gap)


def drop_short(intervals: np.ndarray, min_dur: int) -> np.ndarray:
    """Stage 3: drop events shorter than ``min_dur`` samples (an event of exactly ``min_dur`` stays)."""
    if min_dur < 0:
        raise InputError(f"min_dur must be >= 0 samples; got {min_dur}")
    iv = _check_intervals(intervals)
    return iv[(iv[:, 1] - iv[:, 0]) >= min_dur]


def detect(windows: np.ndarray, scores: np.ndarray, threshold: Threshold, max_gap: int, min_dur: int,
           near_peak: float = NEAR_PEAK) -> Events:
    """All three stages in order, then each event's peak and mean score.

    Args:
        windows: ``(n, 2)`` int64 ``[start, end)`` samples, sorted by start.
        scores: ``(n,)`` float scores.
        threshold: the threshold to apply.
        max_gap: gaps shorter than this many samples are filled.
        min_dur: events shorter than this many samples are dropped.
        near_peak: see :func:`threshold_events`.
    """
    iv = drop_short(fill_gaps(threshold_events(windows, scores, threshold, near_peak), max_gap), min_dur)
    s = np.asarray(scores, np.float64)
    w = np.asarray(windows, np.int64)
    peak_index = np.zeros(len(iv), np.int64)
    peak_score = np.zeros(len(iv))
    mean_score = np.zeros(len(iv))
    for j, (a, b) in enumerate(iv):
        inside = np.flatnonzero((w[:, 0] >= a) & (w[:, 1] <= b))  # never empty: an event covers whole windows
        best = inside[int(np.argmax(s[inside]))]
        peak_index[j], peak_score[j], mean_score[j] = best, s[best], s[inside].mean()
    return Events(iv, peak_index, peak_score, mean_score)


# -- internals -----------------------------------------------------------------------------


def _runs(active: np.ndarray) -> list[tuple[int, int]]:
    """``[a, b)`` index runs where ``active`` is True."""
    if active.size == 0:
        return []
    d = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _merge(iv: np.ndarray, max_gap: int) -> np.ndarray:
    """Union of sorted intervals, also joining those less than ``max_gap`` apart (``max_gap=1`` joins touching ones)."""
    if len(iv) == 0:
        return iv.reshape(0, 2).astype(np.int64)
    iv = iv[np.argsort(iv[:, 0], kind="stable")]
    out = [list(iv[0])]
    for a, b in iv[1:]:
        if a - out[-1][1] < max_gap:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return np.array(out, np.int64)


def _check_scores(scores: np.ndarray, allow_empty: bool = False) -> np.ndarray:
    s = np.asarray(scores, np.float64)
    if s.ndim != 1 or (s.size == 0 and not allow_empty):
        raise InputError(f"scores must be a non-empty (n,) array; got shape {s.shape}")
    if not np.isfinite(s).all():
        raise InputError(f"scores hold {int((~np.isfinite(s)).sum())} NaN or Inf values")
    return s


def _check_windows(windows: np.ndarray) -> np.ndarray:
    w = np.asarray(windows)
    if w.ndim != 2 or w.shape[1] != 2:
        raise InputError(f"windows must be (n, 2) [start, end) samples; got shape {w.shape}")
    if len(w) and (np.any(w[:, 1] <= w[:, 0]) or np.any(np.diff(w[:, 0]) < 0)):
        raise InputError("windows must be non-empty [start, end) ranges sorted by start")
    return w.astype(np.int64)


def _check_intervals(intervals: np.ndarray) -> np.ndarray:
    iv = np.asarray(intervals, np.int64).reshape(-1, 2)
    if len(iv) and (np.any(iv[:, 1] < iv[:, 0]) or np.any(iv[1:, 0] < iv[:-1, 1])):
        raise InputError("intervals must be sorted, disjoint [start, end) ranges")
    return iv
