"""Keeps the daemon's resident memory near what it uses, for a process that idles for days.

glibc gives each thread that allocates its own arena and keeps freed memory for reuse; both
leave a long-lived, mostly idle daemon holding tens of MB it no longer needs (measured in
docs/benchmarks.md, "Idle footprint").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_ARENA_MAX = -8  # from glibc's malloc.h
ARENAS = 2  # the event loop's thread and the store's thread do nearly all allocating


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas; call before any thread starts. False where not glibc."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    return bool(mallopt is not None and mallopt(_M_ARENA_MAX, arenas))


def release_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc keeps it otherwise)."""
    malloc_trim = getattr(_libc(), "malloc_trim", None)
    if malloc_trim is not None:
        malloc_trim(0)
