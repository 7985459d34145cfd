import numpy as np
import pytest

from retrieval.audio.windows import DB_FLOOR, cut_stream, plan_windows, rms_db, to_samples
from retrieval.errors import InputError


@pytest.mark.parametrize("n", [1, 5, 99, 100, 101, 250, 1001, 1234])
@pytest.mark.parametrize("window,hop", [(100, 50), (100, 100), (100, 30), (7, 3)])
@pytest.mark.parametrize("block", [1, 13, 64, 5000])
def test_streamed_windows_equal_the_plan_and_the_samples(n, window, hop, block):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    got = list(cut_stream((x[i:i + block] for i in range(0, n, block)), window, hop))
    plan = plan_windows(n, window, hop)
    assert [(w.start, w.end) for w in got] == [tuple(r) for r in plan]
    for w in got:
        np.testing.assert_array_equal(w.audio, x[w.start:w.end])


def test_plan_covers_every_sample_with_full_windows():
    plan = plan_windows(1050, 400, 200)
    assert plan.tolist() == [[0, 400], [200, 600], [400, 800], [600, 1000], [650, 1050]]
    assert plan_windows(30, 400, 200).tolist() == [[0, 30]]
    assert plan_windows(0, 400, 200).shape == (0, 2)


def test_bad_window_and_hop_are_refused():
    with pytest.raises(InputError, match="must not exceed"):
        plan_windows(10, 4, 5)
    with pytest.raises(InputError, match="positive"):
        plan_windows(10, 0, 1)


def test_seconds_round_to_samples_once():
    assert to_samples(0.5, 16000) == 8000
    assert to_samples(1 / 3, 48000) == 16000
    assert to_samples(0.00003125, 16000) == 0  # 0.5 sample rounds to even


def test_rms_db():
    assert rms_db(np.zeros(10, np.float32)) == DB_FLOOR
    assert rms_db(np.ones(10, np.float32)) == pytest.approx(0.0)
    assert rms_db(np.full(10, 0.1, np.float32)) == pytest.approx(-20.0, abs=1e-4)
