"""Curve -> events, stage by stage, against hand-worked answers (integer samples throughout)."""

import numpy as np
import pytest

from retrieval.errors import InputError
from retrieval.locate.events import (
    Threshold,
    adaptive_threshold,
    detect,
    drop_short,
    fill_gaps,
    fixed_threshold,
    peak_heights,
    threshold_events,
)


def grid(n: int, window: int = 4, hop: int = 2) -> np.ndarray:
    """``n`` windows ``[i * hop, i * hop + window)``: centres at ``2, 4, 6, ...`` for the defaults."""
    starts = np.arange(n, dtype=np.int64) * hop
    return np.stack([starts, starts + window], axis=1)


def thr(value: float, background: float = 0.0) -> Threshold:
    return Threshold(value, background, "test")


# -- stage 1: which windows make an event -------------------------------------------------------


def test_a_copy_of_the_query_is_its_best_window():
    # Windows [0, 4), [2, 6), ...; one run above T = 0.5 (windows 1-3); its best window is 2: the event is [4, 8).
    scores = np.array([0, 0.6, 1.0, 0.8, 0])
    np.testing.assert_array_equal(threshold_events(grid(5), scores, thr(0.5)), [[4, 8]])
    # Exact ties are all kept.
    np.testing.assert_array_equal(threshold_events(grid(5), np.array([0, 1.0, 1.0, 0.8, 0]), thr(0.5)), [[2, 8]])


def test_near_peak_spans_every_window_close_to_the_peak():
    # A steady sound: windows 2-5 score within 5 % of the peak height -> from window 2's start to window 5's end.
    scores = np.array([0, 0.5, 1.0, 0.99, 1.0, 0.96, 0.5, 0])
    np.testing.assert_array_equal(threshold_events(grid(8), scores, thr(0.7), near_peak=0.95), [[4, 14]])
    np.testing.assert_array_equal(threshold_events(grid(8), scores, thr(0.7)), [[4, 12]])  # the two tied best


def test_near_peak_is_measured_from_the_background():
    # Peak 1.0 over a background of 0.5: 5 % of the height is 0.025, so 0.98 counts and 0.97 does not.
    scores = np.array([0.5, 0.97, 1.0, 0.98, 0.5])
    np.testing.assert_array_equal(threshold_events(grid(5), scores, thr(0.8, background=0.5), near_peak=0.95),
                                  [[4, 10]])


def test_events_at_the_file_edges_reach_sample_0_and_the_end():
    # As plan_windows cuts them, the first window starts at 0 and the last ends at the file's end (16 here).
    scores = np.array([1.0, 1.0, 0, 0, 0, 0, 1.0])
    iv = threshold_events(grid(7), scores, thr(0.5))
    np.testing.assert_array_equal(iv, [[0, 6], [12, 16]])


def test_equal_threshold_is_not_above_it_and_a_flat_curve_has_no_event():
    assert threshold_events(grid(4), np.array([0.5, 0.5, 0.5, 0.5]), thr(0.5)).shape == (0, 2)
    t = adaptive_threshold(grid(4), np.full(4, 0.3))
    assert t.value == pytest.approx(0.3) and "flat" in t.rule
    assert len(detect(grid(4), np.full(4, 0.3), t, 0, 0)) == 0


def test_events_that_touch_are_merged():
    # Runs at windows 1 and 3 give [2, 6) and [6, 10): touching, they become one event.
    scores = np.array([0, 1.0, 0.2, 1.0, 0])
    np.testing.assert_array_equal(threshold_events(grid(5), scores, thr(0.5)), [[2, 10]])
    # Windows 2 long every 3 samples leave a gap of 4 between [3, 5) and [9, 11).
    np.testing.assert_array_equal(threshold_events(grid(5, 2, 3), scores, thr(0.5)), [[3, 5], [9, 11]])


# -- stage 2 and 3: gaps and durations, with the boundary cases -----------------------------------


def test_a_gap_of_exactly_max_gap_is_not_filled():
    iv = np.array([[0, 10], [20, 30]])
    np.testing.assert_array_equal(fill_gaps(iv, 10), [[0, 10], [20, 30]])
    np.testing.assert_array_equal(fill_gaps(iv, 11), [[0, 30]])
    np.testing.assert_array_equal(fill_gaps(iv, 0), iv)


def test_an_event_of_exactly_min_dur_is_kept():
    iv = np.array([[0, 10], [20, 29], [40, 52]])
    np.testing.assert_array_equal(drop_short(iv, 10), [[0, 10], [40, 52]])
    np.testing.assert_array_equal(drop_short(iv, 0), iv)


def test_gaps_are_filled_before_short_events_are_dropped():
    # Windows of 2 samples every 2: two runs [4, 10) and [12, 18), each 6 long, 2 apart.
    scores = np.array([0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0])
    windows = grid(11, window=2, hop=2)
    t = thr(0.5)
    np.testing.assert_array_equal(threshold_events(windows, scores, t), [[4, 10], [12, 18]])
    merged = detect(windows, scores, t, max_gap=3, min_dur=10)
    np.testing.assert_array_equal(merged.intervals, [[4, 18]])  # 14 long: kept
    assert len(detect(windows, scores, t, max_gap=2, min_dur=10)) == 0  # gap not filled: both too short


def test_peak_and_mean_scores_of_an_event():
    scores = np.array([0, 0.2, 1.0, 0.96, 0])
    ev = detect(grid(5), scores, thr(0.5), 0, 0, near_peak=0.95)
    # Windows 2 and 3 are within 5 % of the peak: event [4, 10); the windows entirely inside it are 2 and 3.
    np.testing.assert_array_equal(ev.intervals, [[4, 10]])
    assert ev.peak_index.tolist() == [2] and ev.peak_score.tolist() == [1.0]
    assert ev.mean_score[0] == pytest.approx((1.0 + 0.96) / 2)
    one = detect(grid(5), scores, thr(0.5), 0, 0)  # the best window alone: its mean is its peak
    np.testing.assert_array_equal(one.intervals, [[4, 8]])
    assert one.mean_score.tolist() == [1.0]


# -- the adaptive threshold -------------------------------------------------------------------------


def _curve(peaks: dict[int, float], n: int = 200, seed: int = 0) -> np.ndarray:
    """A seeded background in [-0.1, 0.1] with triangular bumps (half-width 3 windows) at ``peaks``."""
    s = np.random.default_rng(seed).uniform(-0.1, 0.1, n)
    for i, h in peaks.items():
        for d in range(-3, 4):
            s[i + d] = max(s[i + d], h * (1 - abs(d) / 4))
    return s


def test_adaptive_threshold_separates_equal_copies_from_the_rest():
    s = _curve({30: 1.0, 90: 1.0, 150: 0.98, 120: 0.45})
    t = adaptive_threshold(grid(200), s)
    # Candidates above the half-way level (median ~0 + 0.5 * 1.0): 1.0, 1.0, 0.98; the largest drop is to the level.
    assert 0.5 < t.value < 0.98
    ev = detect(grid(200), s, t, 0, 0)
    assert len(ev) == 3 and sorted(ev.peak_index.tolist()) == [30, 90, 150]


def test_adaptive_threshold_cuts_at_the_largest_drop():
    s = _curve({30: 1.0, 90: 0.95, 150: 0.62})
    t = adaptive_threshold(grid(200), s)
    # Heights 1.0, 0.95, 0.62, then the level ~0.5: drops 0.05, 0.33, ~0.12 -> threshold ~(0.95 + 0.62) / 2.
    assert t.value == pytest.approx((0.95 + 0.62) / 2)
    assert len(detect(grid(200), s, t, 0, 0)) == 2


def test_a_single_match_is_found_alone():
    s = _curve({100: 0.9})
    t = adaptive_threshold(grid(200), s)
    ev = detect(grid(200), s, t, 0, 0)
    assert len(ev) == 1 and ev.peak_index.tolist() == [100]


def test_adaptive_threshold_does_not_depend_on_offset_or_scale():
    s = _curve({30: 1.0, 90: 0.95, 150: 0.62})
    a, b = adaptive_threshold(grid(200), s), adaptive_threshold(grid(200), 0.3 * s - 0.2)
    assert b.value == pytest.approx(0.3 * a.value - 0.2)


def test_one_peak_per_sound_not_per_hop():
    s = np.array([0, 0.2, 0.5, 0.9, 1.0, 0.9, 0.5, 0.2, 0, 0, 0.7, 0])
    # Windows 4 long every 1: neighbours within 2 windows of a peak must not be higher.
    assert peak_heights(grid(12, window=4, hop=1), s).tolist() == [1.0, 0.7]


def test_fixed_threshold_keeps_the_background_for_the_edges():
    t = fixed_threshold(np.array([0.1, 0.2, 0.3, 0.9]), 0.5)
    assert t.value == 0.5 and t.background == pytest.approx(0.25)


# -- bad input ------------------------------------------------------------------------------------


def test_bad_input_raises_typed_errors_naming_the_values():
    with pytest.raises(InputError, match="NaN"):
        adaptive_threshold(grid(3), np.array([0.1, np.nan, 0.2]))
    with pytest.raises(InputError, match="3 scores for 4 windows"):
        threshold_events(grid(4), np.zeros(3), thr(0.5))
    with pytest.raises(InputError, match="sorted"):
        threshold_events(grid(3)[::-1], np.zeros(3), thr(0.5))
    with pytest.raises(InputError, match="near_peak"):
        threshold_events(grid(3), np.zeros(3), thr(0.5), near_peak=0.0)
    with pytest.raises(InputError, match="max_gap"):
        fill_gaps(np.array([[0, 1]]), -1)
    with pytest.raises(InputError, match="min_dur"):
        drop_short(np.array([[0, 1]]), -5)
    with pytest.raises(InputError, match="floor"):
        adaptive_threshold(grid(3), np.zeros(3), floor=1.0)
    with pytest.raises(InputError, match="finite"):
        fixed_threshold(np.zeros(3), float("nan"))
