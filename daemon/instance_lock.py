"""One daemon per state directory, and what the running daemon says about its own health.

Two daemons on one state database would both ingest every line (each point stored twice, each
alert sent twice). `tunewatch run` therefore holds an advisory `flock` on `daemon.lock` in the
state directory for as long as it runs; the kernel drops it when the process dies, even by
SIGKILL, so a stale lock never blocks a restart. The same file carries the daemon's health,
rewritten in place: a fixed-size record over blocks allocated at start, so it can still be
updated when the disk is full, which is exactly when `tunewatch status` needs to say so.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import orjson

LOCK_NAME = "daemon.lock"
# Room for the health record; written whole at offset 0, padded with spaces.
RECORD_BYTES = 16384
# Unreadable files listed by name in the record (the count covers the rest).
LISTED_FAULTS = 20
# A reader's brief shared lock (see `read_health`) can meet a daemon that is starting.
_ACQUIRE_TRIES = 10
_ACQUIRE_PAUSE_S = 0.05


class AlreadyRunning(Exception):
    """Another daemon holds the state directory."""

    def __init__(self, pid: int | None, state_dir: Path) -> None:
        who = f"pid {pid}" if pid else "pid unknown"
        super().__init__(
            f"another tunewatch ({who}) is using {state_dir}; stop it first "
            "(`systemctl --user stop tunewatch`), or give this one its own [daemon] state_dir"
        )
        self.pid = pid


@dataclass(frozen=True, slots=True)
class DaemonHealth:
    """What the running daemon reports about itself (see `tunewatch status`)."""

    pid: int
    started: float
    updated: float
    recording_failure: str | None = None  # why nothing can be recorded, if so
    recording_failure_since: float | None = None
    unreadable_files: int = 0
    # (path, kind, message, since) of the first LISTED_FAULTS unreadable files.
    unreadable: tuple[tuple[str, str, str, float], ...] = ()
    plugins: dict[str, str] = field(default_factory=dict)  # name -> "running" / "failed: ..."

    def to_bytes(self) -> bytes:
        data = orjson.dumps(asdict(self))
        if len(data) > RECORD_BYTES and self.unreadable:  # long paths: list fewer
            return replace(self, unreadable=self.unreadable[:-1]).to_bytes()
        return data[:RECORD_BYTES].ljust(RECORD_BYTES, b" ")

    @classmethod
    def from_bytes(cls, data: bytes) -> DaemonHealth | None:
        try:
            fields = orjson.loads(data.strip() or b"null")
            if not isinstance(fields, dict):
                return None
            fields["unreadable"] = tuple(tuple(f) for f in fields.get("unreadable", ()))
            return cls(**fields)
        except (orjson.JSONDecodeError, TypeError, ValueError):
            return None


class InstanceLock:
    """The held lock on a state directory; `update` rewrites the health record."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self.path = path

    @classmethod
    def acquire(cls, state_dir: Path) -> InstanceLock:
        """Lock `state_dir` for this process, or raise `AlreadyRunning`.

        OSError (the directory cannot be created or written) is left to the caller.
        """
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            _lock_exclusive(fd, state_dir)
            os.ftruncate(fd, 0)
            # Allocate the record's blocks now, while there is room (best effort).
            with contextlib.suppress(OSError):
                os.posix_fallocate(fd, 0, RECORD_BYTES)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, path)

    def update(self, health: DaemonHealth) -> bool:
        """Rewrite the health record in place; False if the write failed (it is retried later)."""
        try:
            os.pwrite(self._fd, health.to_bytes(), 0)
        except OSError:
            return False
        return True

    def release(self) -> None:
        if self._fd < 0:
            return
        # The file stays: removing it would race with a daemon that is starting.
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = -1


def _lock_exclusive(fd: int, state_dir: Path) -> None:
    for attempt in range(_ACQUIRE_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt + 1 == _ACQUIRE_TRIES:
                health = DaemonHealth.from_bytes(os.pread(fd, RECORD_BYTES, 0))
                raise AlreadyRunning(health.pid if health else None, state_dir) from None
            time.sleep(_ACQUIRE_PAUSE_S)


def read_health(state_dir: Path) -> tuple[bool, DaemonHealth | None]:
    """(whether a daemon holds `state_dir` now, the health it last wrote)."""
    try:
        fd = os.open(state_dir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False, None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            running = True
        else:
            running = False
            fcntl.flock(fd, fcntl.LOCK_UN)
        return running, DaemonHealth.from_bytes(os.pread(fd, RECORD_BYTES, 0))
    finally:
        os.close(fd)
