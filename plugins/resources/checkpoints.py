"""The `checkpoint-N/` folders of a run: their steps, ages and sizes, read cheaply and cached.

A sample lists each training run's folder only when its mtime changed (a new checkpoint changes
it) and walks a checkpoint for its size only when that checkpoint changed: a quiet run costs one
`stat` per sample.
"""

from __future__ import annotations

import itertools
import os
import re
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")
# A folder changed this recently may still be being written: its listing and size are read
# again next time instead of cached.
SETTLE_S = 120.0
# A size walk stops after this many entries (a checkpoint holds tens of files): bounded cost,
# even for a folder named like a checkpoint that holds a dataset.
MAX_WALK_ENTRIES = 20_000
# Cadence: the median gap between the newest few checkpoints (one slow save is not a trend).
CADENCE_CHECKPOINTS = 6


@dataclass(frozen=True, slots=True)
class Checkpoint:
    path: Path
    step: int
    mtime: float  # of the folder: when its last file was created


@dataclass(frozen=True, slots=True)
class FolderSize:
    bytes: int  # allocated on disk
    freeable: int  # of files with no other hard link: what deleting the folder gives back


@dataclass(frozen=True, slots=True)
class Cadence:
    seconds: float | None  # between saves
    steps: int | None  # between saves


def list_checkpoints(run_dir: Path) -> tuple[Checkpoint, ...]:
    """The `checkpoint-N` folders directly in `run_dir`, by step; () when it cannot be read."""
    found: list[Checkpoint] = []
    try:
        with os.scandir(run_dir) as entries:
            for entry in entries:
                match = CHECKPOINT_NAME.fullmatch(entry.name)
                if match is None or not entry.is_dir(follow_symlinks=False):
                    continue
                try:
                    mtime = entry.stat(follow_symlinks=False).st_mtime
                except OSError:
                    continue
                found.append(Checkpoint(Path(entry.path), int(match.group(1)), mtime))
    except OSError:
        return ()
    return tuple(sorted(found, key=lambda c: c.step))


def folder_size(path: Path) -> FolderSize:
    """What `path` holds on disk (blocks, not lengths: sparse files count what they use)."""
    total = freeable = seen = 0
    pending = [path]
    while pending and seen < MAX_WALK_ENTRIES:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    seen += 1
                    if seen > MAX_WALK_ENTRIES:
                        break
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(Path(entry.path))
                        continue
                    used = st.st_blocks * 512
                    total += used
                    if st.st_nlink <= 1:
                        freeable += used
        except OSError:
            continue
    return FolderSize(total, freeable)


def cadence(checkpoints: tuple[Checkpoint, ...]) -> Cadence:
    """How often a run saves: median gaps in time and steps between its newest checkpoints."""
    newest = checkpoints[-CADENCE_CHECKPOINTS:]
    pairs = list(itertools.pairwise(newest))
    seconds = [b.mtime - a.mtime for a, b in pairs if b.mtime > a.mtime]
    steps = [b.step - a.step for a, b in pairs if b.step > a.step]
    return Cadence(
        statistics.median(seconds) if seconds else None,
        int(statistics.median(steps)) if steps else None,
    )


class CheckpointIndex:
    """Listings and sizes of checkpoints, cached by folder mtime; knows which runs rotate
    their checkpoints (the trainer's `save_total_limit` deletes old ones)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._listings: dict[Path, tuple[int, tuple[Checkpoint, ...]]] = {}
        self._sizes: dict[Path, tuple[int, FolderSize]] = {}
        self._rotating: set[Path] = set()

    def checkpoints(self, run_dir: Path) -> tuple[Checkpoint, ...]:
        try:
            mtime_ns = os.stat(run_dir).st_mtime_ns
        except OSError:
            return ()
        cached = self._listings.get(run_dir)
        if cached is not None and cached[0] == mtime_ns and not self._recent(mtime_ns):
            return cached[1]
        listing = list_checkpoints(run_dir)
        if cached is not None and self._lost_old(cached[1], listing):
            self._rotating.add(run_dir)
        self._listings[run_dir] = (mtime_ns, listing)
        return listing

    def rotating(self, run_dir: Path) -> bool:
        """Whether old checkpoints of this run were seen to disappear: its trainer keeps a
        fixed number, so each save costs one checkpoint's room only until the oldest goes."""
        return run_dir in self._rotating

    def size(self, checkpoint: Checkpoint) -> FolderSize:
        path = checkpoint.path
        try:
            mtime_ns = os.stat(path).st_mtime_ns
        except OSError:
            return FolderSize(0, 0)
        cached = self._sizes.get(path)
        if cached is not None and cached[0] == mtime_ns and not self._recent(mtime_ns):
            return cached[1]
        size = folder_size(path)
        self._sizes[path] = (mtime_ns, size)
        return size

    def keep_only(self, run_dirs: Iterable[Path]) -> None:
        """Forget runs no longer watched, and sizes of checkpoints no longer listed: the
        cache stays as small as what is being trained now."""
        keep = set(run_dirs)
        self._listings = {d: v for d, v in self._listings.items() if d in keep}
        self._rotating &= keep
        listed = {c.path for _, listing in self._listings.values() for c in listing}
        self._sizes = {p: v for p, v in self._sizes.items() if p in listed}

    def _recent(self, mtime_ns: int) -> bool:
        return self._clock() - mtime_ns / 1e9 < SETTLE_S

    @staticmethod
    def _lost_old(before: tuple[Checkpoint, ...], now: tuple[Checkpoint, ...]) -> bool:
        if not before or not now:
            return False
        steps = {c.step for c in now}
        return any(c.step not in steps and c.step < now[-1].step for c in before)
