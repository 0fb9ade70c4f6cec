"""Keeps the daemon's resident memory near what it uses, for a process that idles for days.

glibc gives each thread that allocates its own arena, raises its mmap threshold after each large
free (so later multi-MB read buffers land in the heap and stay there) and keeps freed memory for
reuse: each leaves a long-lived, mostly idle daemon holding MB it no longer needs (measured in
docs/benchmarks.md, "Idle footprint").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# From glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
ARENAS = 2  # the event loop's thread and the store's thread do nearly all allocating
# Blocks above this (4 MiB hash buffers, whole trainer_state.json documents) get a mapping of
# their own, returned to the OS when freed; a fixed value also stops glibc from raising it. The
# 1 MiB log reads stay below: reused from the heap, they cost no page faults (-10 % catch-up
# throughput at 256 KiB, measured).
MMAP_THRESHOLD_BYTES = 2 * 2**20
# Fixing the mmap threshold also fixes this one, at 128 KiB: the heap top would be handed back
# and faulted in again on every batch. The status loop's malloc_trim returns it once idle.
TRIM_THRESHOLD_BYTES = 64 * 2**20


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def tune_malloc() -> bool:
    """Cap glibc's arenas and fix its mmap and trim thresholds; call before any thread starts.

    Returns False where the C library is not glibc (nothing changed then).
    """
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    return all(
        mallopt(option, value)
        for option, value in (
            (_M_ARENA_MAX, ARENAS),
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
            (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
        )
    )


def release_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc keeps it otherwise)."""
    malloc_trim = getattr(_libc(), "malloc_trim", None)
    if malloc_trim is not None:
        malloc_trim(0)
