"""Event-driven wake-ups for the log files being tailed: one inotify descriptor in the event loop.

watchfiles finds new files and checkpoint folders anywhere under a run, but its Rust thread polls
for pending changes every `step` ms: a short step costs idle CPU, a long one costs latency (see
docs/benchmarks.md). The files already being followed are where latency matters (an alert should
pop within a second of the line), so they get a plain inotify watch whose descriptor the event
loop waits on, as `tail -F` does: no wake-up at all while nothing is written.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import struct
from collections.abc import Callable
from pathlib import Path

import structlog

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC

# When changes come less than BUSY_GAP_S apart (many runs logging at once), the descriptor is
# left unread for GROUP_WINDOW_S: the kernel keeps the events, merging repeats to one file, and
# the next read takes them all, so one wake-up serves many lines. A lone change is read at once.
BUSY_GAP_S = 0.010
GROUP_WINDOW_S = 0.050

FILE_EVENTS = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)
_READ_BYTES = 64 * 1024

log = structlog.get_logger(__name__)


def _load_libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.inotify_init1  # noqa: B018 - probe: absent outside Linux
    except (OSError, AttributeError):
        return None
    return libc


class FileWakeups:
    """Calls `on_change(path)` when a watched file is written, moved or deleted.

    `on_overflow()` is called if the kernel's queue overflowed (events were lost), so the caller
    can re-read every file. Unavailable (no inotify): `open()` returns False and callers rely
    on the directory watcher alone.
    """

    def __init__(self, on_change: Callable[[Path], None], on_overflow: Callable[[], None]) -> None:
        self.on_change = on_change
        self.on_overflow = on_overflow
        self._libc = _load_libc()
        self._fd = -1
        self._paths: dict[int, Path] = {}  # watch descriptor -> path
        self._wds: dict[Path, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_read = -1.0  # loop time of the last read
        self._paused: asyncio.TimerHandle | None = None  # set while not listening (busy)

    @property
    def active(self) -> bool:
        return self._fd >= 0

    def open(self) -> bool:
        if self._libc is None:
            return False
        fd = int(self._libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC))
        if fd < 0:
            log.warning(
                "inotify unavailable; relying on the directory watcher",
                error=os.strerror(ctypes.get_errno()),
            )
            return False
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._read)
        return True

    def close(self) -> None:
        if self._fd < 0:
            return
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._paths.clear()
        self._wds.clear()

    def watch(self, path: Path) -> None:
        """Watch the file now at `path` (again, if it was replaced); cheap to repeat."""
        if self._fd < 0 or self._libc is None:
            return
        wd = int(self._libc.inotify_add_watch(self._fd, os.fsencode(path), FILE_EVENTS))
        if wd < 0:
            return  # gone or unreadable: the directory watcher will see it come back
        old = self._wds.get(path)
        if old is not None and old != wd:
            self._paths.pop(old, None)
        self._wds[path] = wd
        self._paths[wd] = path

    def unwatch(self, path: Path) -> None:
        """Stop watching `path` (the file was let go; a rescan or a directory watch finds it)."""
        wd = self._wds.pop(path, None)
        if wd is None or self._fd < 0 or self._libc is None:
            return
        self._paths.pop(wd, None)
        self._libc.inotify_rm_watch(self._fd, wd)  # fails harmlessly if the file is gone

    def is_watching(self, path: Path) -> bool:
        return path in self._wds

    def _read(self) -> None:
        try:
            data = os.read(self._fd, _READ_BYTES)
        except BlockingIOError:
            return
        changed: list[Path] = []
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, name_len = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size + name_len
            if mask & IN_Q_OVERFLOW:
                self.on_overflow()
                continue
            path = self._paths.get(wd)
            if path is None:
                continue
            if mask & IN_IGNORED:
                # The watched inode is gone (deleted, or replaced by a rename onto the path).
                self._paths.pop(wd, None)
                if self._wds.get(path) == wd:
                    del self._wds[path]
            if path not in changed:
                changed.append(path)
        for path in changed:
            self.on_change(path)
        self._pause_if_busy()

    def _pause_if_busy(self) -> None:
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        busy = now - self._last_read < BUSY_GAP_S
        self._last_read = now
        if busy and self._fd >= 0:
            loop.remove_reader(self._fd)
            self._paused = loop.call_later(GROUP_WINDOW_S, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if self._fd >= 0 and self._loop is not None:
            self._loop.add_reader(self._fd, self._read)
