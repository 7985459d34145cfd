"""retrieval.spare_cores: idle cores from the kernel's per-CPU counters, between two readings."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from retrieval.spare_cores import MIN_INTERVAL_S, SpareCores, read_counters, spare_between

STAT = """cpu  300 0 100 1000 20 0 5 0 0 0
cpu0 100 0 50 500 10 0 2 0 0 0
cpu1 200 0 50 500 10 0 3 0 0 0
cpu2 0 0 0 0 0 0 0 0 0 0
intr 12345 1 2 3
ctxt 999
"""


def test_counters_are_idle_plus_iowait_against_every_tick_of_each_allowed_cpu():
    assert read_counters(STAT, {0, 1}) == {0: (510, 662), 1: (510, 763)}
    assert read_counters(STAT, {1}) == {1: (510, 763)}
    assert read_counters(STAT, {7}) is None  # none of this process's CPUs
    assert read_counters("garbage\ncpuX 1 2 3\n", {0}) is None


def test_spare_is_the_sum_of_each_cpus_idle_share():
    before = {0: (100, 200), 1: (100, 200)}
    after = {0: (200, 300), 1: (110, 300)}  # cpu0 idle all along, cpu1 busy 90 %
    assert spare_between(before, after) == pytest.approx(1.1)
    assert spare_between(before, {0: (100, 200)}) is None  # no tick went by
    assert spare_between(before, {5: (1, 2)}) is None


def test_the_meter_waits_for_a_readable_interval_and_answers_once():
    readings = iter([{0: (0, 100), 1: (0, 100)}, {0: (10, 110), 1: (0, 110)}])
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    cpu = [0.0]  # this process's CPU time: it computes, then the meter sleeps
    meter = SpareCores(read=lambda: next(readings), clock=lambda: now[0], cpu_clock=lambda: cpu[0], sleep=sleep)
    now[0] = cpu[0] = 0.03
    value = meter.spare()
    assert slept == [pytest.approx(MIN_INTERVAL_S - 0.03)]
    # cpu0 idle throughout, cpu1 busy; this process computed 0.03 s of the 0.1 s and slept the
    # rest, so 0.7 of the idle core is the one it left idle itself
    assert value == pytest.approx(1.0 - 0.7)
    assert meter.spare() == value and len(slept) == 1  # the same answer, not a new reading


def test_a_process_busy_all_along_counts_no_idle_time_of_its_own():
    readings = iter([{0: (0, 100), 1: (0, 100)}, {0: (100, 200), 1: (0, 200)}])
    now = [0.0]
    meter = SpareCores(read=lambda: next(readings), clock=lambda: now[0], cpu_clock=lambda: now[0],
                       sleep=lambda s: None)
    now[0] = 0.5
    assert meter.spare() == pytest.approx(1.0)


def test_no_counters_no_reading():
    meter = SpareCores(read=lambda: None, sleep=lambda s: None)
    assert meter.spare() is None


@pytest.mark.skipif(read_counters() is None, reason="no /proc/stat here")
def test_live_readings_see_this_process_and_another_one_busy():
    """On this machine: while this process spins, its core is never counted spare (whatever else
    runs); and where a core stands idle, a second process spinning takes it (by most of a
    core; the margin allows a shared machine's other jobs). The second half needs an idle
    core to take: under a full load (the suite's own workers) it has nothing to show."""
    cpus = len(read_counters() or {})

    def reading(spin: bool) -> float:
        meter = SpareCores()
        end = time.monotonic() + 0.4
        while time.monotonic() < end:
            if not spin:
                time.sleep(0.01)
        value = meter.spare()
        assert value is not None
        return value

    assert 0.0 <= reading(spin=True) <= cpus - 0.5
    quiet = reading(spin=False)
    assert 0.0 <= quiet <= cpus
    if quiet < 0.7:
        return  # no idle core now: nothing for the spinner to take
    spin = "import time\nend = time.time() + 5\nwhile time.time() < end: pass"
    spinner = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.3)
        busy = reading(spin=False)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy < quiet - 0.5, (quiet, busy)
