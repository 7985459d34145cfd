"""Keep glibc's malloc from handing freed memory back to the kernel between files.

An ingest allocates and frees arrays of a few hundred kB to a few MB for every batch of
windows (the spectra of a log-mel step, decoded files, encoder batches). glibc starts with
a 128 kB mmap threshold and a 128 kB trim threshold, and raises both only after the process
frees a large mmapped block. Until then every such array is either mapped and unmapped
again, or freed at the top of the heap and trimmed back to the kernel, and the next batch
faults the same pages in again. On FSDD (3000 files, ``--workers 0``) that was 92,000 minor
page faults and 0.4 s of system time in a 2.4 s run; with the thresholds below, 26,000 and
0.2 s, and the run 0.2-0.5 s shorter (``docs/benchmarks.md``, ingest).

The values set are glibc's own ceilings for its adaptive thresholds on 64-bit systems
(``DEFAULT_MMAP_THRESHOLD_MAX``, 32 MiB, and twice that for trimming): the state a long-running
process reaches by itself once it has freed one large array, reached at the start instead.
Arrays over 32 MiB (a long file's samples) are still mapped and returned whole. No library
offers this (it is one ``mallopt`` call); elsewhere than glibc, or when the user tuned malloc
through ``MALLOC_*`` environment variables, nothing is changed.
"""

from __future__ import annotations

import os

#: ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
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
