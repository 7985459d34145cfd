"""Keep glibc's malloc from handing freed memory back to the kernel between files.

An ingest allocates and frees arrays of a few hundred kB to a few MB for every batch of
windows (the spectra of a log-mel step, decoded files, encoder batches). glibc starts with
a 128 kB mmap threshold and a 128 kB trim threshold, and raises both only after the process
frees a large mmapped block. Until then every such array is either mapped and unmapped
again, or freed at the top of the heap and trimmed back to the kernel, and the next batch
faults the same pages in again. On FSDD (3000 files, ``--workers 0``) that was 92,000 minor
page faults and 0.35 s of system time in a 2.4 s run; with the thresholds below, 30,000
(``docs/benchmarks.md``, ingest).

4 MiB and 8 MiB cover the arrays that churn. glibc's own ceilings for its adaptive
thresholds (32 MiB and 64 MiB) saved 4,000 faults more but kept up to 31 MB more resident
at the peak of indexing a 1-hour file; with these the peak stays at or below what it was
(``scripts/bench_ingest.py --sections memory``). Arrays over 4 MiB (a long file's blocks)
are still mapped and returned whole. No library offers this (it is one ``mallopt`` call);
elsewhere than glibc, or when the user tuned malloc through ``MALLOC_*`` environment
variables, nothing is changed.
"""

from __future__ import annotations

import os

#: ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD

_done: list[bool] = []


def keep_freed_memory() -> bool:
    """Set the thresholds once per process; True when this call set them.

    Idempotent and cheap after the first call; a forked child inherits the setting.
    """
    if _done:
        return False
    _done.append(True)
    if any(name.startswith("MALLOC_") for name in os.environ) or not _glibc():
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):  # no mallopt in this C library
        return False


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError, AttributeError):
        return False
