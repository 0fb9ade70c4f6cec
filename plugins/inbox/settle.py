"""When a file dropped into an inbox is complete: it stopped changing for a settle period."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Names of files still being written by common tools (browsers, rsync, editors, our own writes).
_TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", ".swp", "~")


def is_candidate(path: Path) -> bool:
    """A regular, visible, finished-looking file name (not `*.part`, `.~lock*`, `.hidden`...)."""
    name = path.name
    if name.startswith(".") or name.startswith("~"):
        return False
    return not name.lower().endswith(_TEMP_SUFFIXES)


@dataclass(frozen=True, slots=True)
class _Seen:
    size: int
    mtime_ns: int
    since: float


class SettleTracker:
    """Reports a file ready once its size and mtime stayed the same for `settle_s` seconds."""

    def __init__(self, settle_s: float) -> None:
        self.settle_s = settle_s
        self._seen: dict[Path, _Seen] = {}

    def observe(self, path: Path, size: int, mtime_ns: int, now: float) -> bool:
        seen = self._seen.get(path)
        if seen is None or (seen.size, seen.mtime_ns) != (size, mtime_ns):
            self._seen[path] = _Seen(size, mtime_ns, now)
            return False
        return now - seen.since >= self.settle_s

    def forget(self, path: Path) -> None:
        self._seen.pop(path, None)

    def pending(self) -> bool:
        return bool(self._seen)
