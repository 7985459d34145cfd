"""Mask-aware pooling against hand-computed answers, and exact file pooling."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.errors import InputError, UnknownNameError
from retrieval.pooling import (
    POOLING_MODES,
    PYRAMID_BLOCKS,
    check_mode,
    group_means,
    keeps_file_vectors,
    lift,
    pool_file,
    pool_windows,
    pooled_dim,
)


def frames(values: list[float], valid: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """One window of 1-D frames: ``(1, T, 1)`` and its ``(1, T)`` mask."""
    return np.array(values, np.float32)[None, :, None], np.array(valid)[None, :]


def test_modes_and_dims() -> None:
    assert POOLING_MODES == ("mean", "max", "meanmax", "meanstd", "pyramid", "none")
    assert [pooled_dim(m, 4) for m in POOLING_MODES] == [4, 4, 8, 8, 32, 4]
    assert PYRAMID_BLOCKS == 8
    assert keeps_file_vectors("pyramid") and not keeps_file_vectors("none")
    with pytest.raises(UnknownNameError, match="mean, max, meanmax, meanstd, pyramid, none"):
        check_mode("median")


def test_pyramid_by_hand_ignores_masked_frames() -> None:
    # Valid frames 1..5 between a masked lead-in (99) and masked padding (-99).
    x, m = frames([99, 1, 2, 3, 4, 5, -99], [False, True, True, True, True, True, False])
    v, counts = pool_windows(x, m, "pyramid")
    # mean 3, std sqrt(2); halves: ranks [0,2) [2,5) -> 1.5, 4;
    # quarters: bounds floor(j*5/4) = 0,1,2,3,5 -> 1, 2, 3, 4.5.
    assert counts.tolist() == [5]
    assert v[0].tolist() == pytest.approx([3, np.sqrt(2), 1.5, 4, 1, 2, 3, 4.5])


def test_pyramid_with_fewer_frames_than_parts_lends_the_nearest() -> None:
    # Two valid frames: quarters [0,1) [0,1) [1,2) [1,2) -> 10, 10, 20, 20.
    x, m = frames([10, 20, 0], [True, True, False])
    v, _ = pool_windows(x, m, "pyramid")
    assert v[0].tolist() == pytest.approx([15, 5, 10, 20, 10, 10, 20, 20])
    empty, counts = pool_windows(*frames([1, 2], [False, False]), "pyramid")
    assert counts.tolist() == [0] and empty.tolist() == [[0.0] * 8]


def test_mean_max_meanstd_by_hand() -> None:
    x, m = frames([1, 3, 8, 100], [True, True, True, False])
    assert pool_windows(x, m, "mean")[0][0].tolist() == pytest.approx([4])
    assert pool_windows(x, m, "max")[0][0].tolist() == pytest.approx([8])
    assert pool_windows(x, m, "meanmax")[0][0].tolist() == pytest.approx([4, 8])
    assert pool_windows(x, m, "meanstd")[0][0].tolist() == pytest.approx([4, np.sqrt(26 / 3)])


@pytest.mark.parametrize("mode", ["mean", "meanstd", "max", "meanmax"])
def test_file_pooling_equals_pooling_all_frames(mode: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 9, 4)).astype(np.float32)
    m = np.zeros((3, 9), bool)
    m[0, :9], m[1, :5], m[2, :7] = True, True, True
    v, counts = pool_windows(x, m, mode)
    all_frames = x[m][None]
    whole, _ = pool_windows(all_frames, np.ones(all_frames.shape[:2], bool), mode)
    np.testing.assert_allclose(pool_file(v, counts, mode), whole[0], rtol=1e-5, atol=1e-6)


def test_pyramid_file_vector_is_exact_meanstd_plus_average_window_shape() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 8, 3)).astype(np.float32)
    m = np.ones((2, 8), bool)
    m[1, 6:] = False  # window 1 has 6 valid frames, window 0 has 8
    v, counts = pool_windows(x, m, "pyramid")
    out = pool_file(v, counts, "pyramid")
    ms, _ = pool_windows(x[m][None], np.ones((1, 14), bool), "meanstd")
    np.testing.assert_allclose(out[:6], ms[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[6:], (8 * v[0, 6:] + 6 * v[1, 6:]) / 14, rtol=1e-5, atol=1e-6)
    # One window: the file vector is the window vector.
    np.testing.assert_array_equal(pool_file(v[:1], counts[:1], "pyramid"), v[0])
    assert pool_file(v, np.zeros(2, np.int64), "pyramid") is None


def test_lift_matches_pooling_a_constant_signal() -> None:
    vec = np.array([[0.5, -2.0, 3.0]], np.float32)
    constant = np.repeat(vec[:, None, :], 6, axis=1)
    for mode in ("mean", "max", "meanmax", "meanstd", "pyramid"):
        pooled, _ = pool_windows(constant, np.ones((1, 6), bool), mode)
        np.testing.assert_allclose(lift(vec, mode), pooled, atol=1e-6)


def test_bad_shapes_raise() -> None:
    with pytest.raises(InputError, match=r"need embeddings \(n, T, D\) and mask \(n, T\)"):
        pool_windows(np.zeros((2, 3)), np.ones((2, 3), bool), "pyramid")


def test_group_means_are_unit_mean_directions_in_order_of_appearance():
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(7, 5)).astype(np.float32) * rng.uniform(0.1, 9, size=(7, 1)).astype(np.float32)
    groups = np.array([30, 30, 10, 20, 10, 30, 20])  # not sorted: the order of first rows is 30, 10, 20
    first, means = group_means(vectors, groups)
    assert first.tolist() == [0, 2, 3] and first.dtype == np.int64
    assert means.shape == (3, 5) and means.dtype == np.float32
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for row, key in enumerate([30, 10, 20]):
        mean = unit[groups == key].mean(axis=0)
        np.testing.assert_allclose(means[row], mean / np.linalg.norm(mean), atol=1e-6)
    first, means = group_means(np.zeros((0, 5), np.float32), np.zeros(0, np.int64))
    assert first.shape == (0,) and means.shape == (0, 5)
