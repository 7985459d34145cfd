"""How many of this process's cores stand idle right now: what ``auto_workers`` sizes a pool by.

A decoding worker pays for itself only on a core nobody else is using. On a quiet 2-core
machine one log-mel worker indexed 60 minutes of 44.1 kHz stereo 1.6x faster than none
(5.0-6.5 s against 8.2-9.7 s) and FSDD no slower; with another process spinning on one of
the two cores it gained 0-15 % on the long files and cost FSDD 0-50 %
(``docs/bench_ingest.md``). The load average cannot tell these apart in time: it trails by
a minute, and counts the run before this one. So an ingest reads the kernel's per-CPU idle counters
(``/proc/stat``) when it starts and again when it chooses its workers (after discovery),
and counts the cores that stood idle in between. Its own process keeps one core busy all
along, so an otherwise idle 2-core machine reads about one spare core; where it was not
busy all along (waiting for the disk, or the meter waiting for a readable interval), the
core it left idle is not counted spare.

Only the CPUs this process may run on count (``os.sched_getaffinity``); a CPU quota set by
a container is not visible here. Where there is no ``/proc/stat`` (macOS, Windows) the
reading is None and ``auto_workers`` keeps its rule by core count.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

#: Shortest interval read: below it, the meter waits for the rest (the counters tick 100
#: times a second, so 0.1 s is 10 ticks per CPU).
MIN_INTERVAL_S = 0.1
PROC_STAT = Path("/proc/stat")

#: ``{cpu: (idle ticks, all ticks)}``
Counters = dict[int, tuple[int, int]]


def read_counters(text: str | None = None, cpus: set[int] | None = None) -> Counters | None:
    """Idle (idle + iowait) and total ticks of each CPU in ``cpus`` from ``/proc/stat`` text.

    ``text`` None reads the file; ``cpus`` None means this process's CPUs. Returns None when
    the file cannot be read or names none of them.
    """
    if text is None:
        try:
            text = PROC_STAT.read_text()
        except OSError:
            return None
    if cpus is None:
        cpus = allowed_cpus()
    out: Counters = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        try:
            cpu = int(name[3:])
            ticks = [int(v) for v in rest.split()[:8]]  # user nice system idle iowait irq softirq steal
        except ValueError:
            continue
        if (cpus is None or cpu in cpus) and len(ticks) >= 5:
            out[cpu] = (ticks[3] + ticks[4], sum(ticks))
    return out or None


def spare_between(before: Counters, after: Counters) -> float | None:
    """Cores' worth of idle time between two readings: the sum over CPUs of each one's idle share."""
    spare, seen = 0.0, 0
    for cpu, (idle0, total0) in before.items():
        if cpu not in after:
            continue
        idle1, total1 = after[cpu]
        if total1 > total0:
            spare += min(max((idle1 - idle0) / (total1 - total0), 0.0), 1.0)
            seen += 1
    return spare if seen else None


class SpareCores:
    """A reading started now; :meth:`spare` ends it (once: later calls return the same value).

    Args:
        read: the counters reader (tests pass a fake); :func:`read_counters` by default.
        clock, cpu_clock, sleep: wall clock, this process's CPU time and sleep, for tests.
    """

    def __init__(self, read: Callable[[], Counters | None] = read_counters,
                 clock: Callable[[], float] = time.monotonic, cpu_clock: Callable[[], float] = time.process_time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._read, self._clock, self._cpu_clock, self._sleep = read, clock, cpu_clock, sleep
        self._start = read()
        self._t0, self._cpu0 = clock(), cpu_clock()
        self._value: tuple[float | None] | None = None

    def spare(self) -> float | None:
        """Idle cores since the reading started (e.g. 1.0 on an idle 2-core machine while this
        process computes), or None where the counters cannot be read."""
        if self._value is None:
            value = None
            if self._start is not None:
                wait = MIN_INTERVAL_S - (self._clock() - self._t0)
                if wait > 0:
                    self._sleep(wait)
                end = self._read()
                value = spare_between(self._start, end) if end is not None else None
                if value is not None:  # the share of its core this process left idle is its own
                    elapsed = max(self._clock() - self._t0, 1e-9)
                    busy = min(max((self._cpu_clock() - self._cpu0) / elapsed, 0.0), 1.0)
                    value = max(value - (1.0 - busy), 0.0)
            self._value = (value,)
        return self._value[0]


def allowed_cpus() -> set[int] | None:
    """The CPUs this process may run on, or None where the system cannot say (not Linux)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
