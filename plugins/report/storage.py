"""Disk space for the report: the volumes holding runs, and what each run's checkpoints and
snapshots take (a bounded `du`: symlinks are not followed, a walk stops at its cap)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tunewatch.plugins.report.model import Checkpoint, RunStorage, Volume

# Entries one walk looks at, at most: a checkpoint is a handful of files, a snapshots folder a
# few checkpoints; a run directory that is really a dataset must not hold the report up.
MAX_WALK_ENTRIES = 20_000
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


@dataclass(frozen=True, slots=True)
class Usage:
    bytes: int
    freeable_bytes: int  # held by no other hardlink: what deleting the tree frees
    complete: bool


def tree_usage(root: Path, max_entries: int = MAX_WALK_ENTRIES) -> Usage:
    """Disk blocks under `root` like `du`, without following symlinks, stopping after
    `max_entries` entries; each hardlinked file counts once in `bytes`."""
    total = freeable = seen = 0
    inodes: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > max_entries:
                return Usage(total, freeable, complete=False)
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                    continue
                if entry.is_symlink():
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in inodes:
                continue
            inodes.add((st.st_dev, st.st_ino))
            size = _allocated(st)
            total += size
            if st.st_nlink <= 1:
                freeable += size
    return Usage(total, freeable, complete=True)


def _allocated(st: os.stat_result) -> int:
    blocks = getattr(st, "st_blocks", None)
    return int(blocks) * 512 if blocks is not None else int(st.st_size)


def checkpoint_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of each `checkpoint-N/` folder (not a symlink) in `run_dir`, by step."""
    found = []
    try:
        entries = list(os.scandir(run_dir))
    except OSError:
        return []
    for entry in entries:
        match = _CHECKPOINT.fullmatch(entry.name)
        if match and entry.is_dir(follow_symlinks=False):
            found.append((int(match.group(1)), Path(entry.path)))
    return sorted(found)


def run_storage(
    run: str, run_dir: Path, snapshots_dir: Path | None, best_steps: Iterable[int]
) -> RunStorage:
    """The size of `run`'s checkpoints and snapshots; which checkpoint is the newest, the best."""
    best = set(best_steps)
    found = checkpoint_dirs(run_dir)
    newest = found[-1][0] if found else None
    complete = True
    checkpoints = []
    for step, path in found:
        usage = tree_usage(path)
        complete = complete and usage.complete
        checkpoints.append(
            Checkpoint(
                path=str(path),
                step=step,
                bytes=usage.bytes,
                freeable_bytes=usage.freeable_bytes,
                newest=step == newest,
                best=step in best,
            )
        )
    snapshots_bytes = 0
    if snapshots_dir is not None and snapshots_dir.is_dir() and not snapshots_dir.is_symlink():
        usage = tree_usage(snapshots_dir)
        snapshots_bytes, complete = usage.bytes, complete and usage.complete
    else:
        snapshots_dir = None
    return RunStorage(
        run=run,
        checkpoints=tuple(checkpoints),
        snapshots_dir=None if snapshots_dir is None else str(snapshots_dir),
        snapshots_bytes=snapshots_bytes,
        complete=complete,
    )


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem holding `path` (the nearest existing parent's)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        device = path.stat().st_dev
        while path != path.parent and path.parent.stat().st_dev == device:
            path = path.parent
    except OSError:
        pass
    return path


def volumes(run_dirs: Sequence[tuple[str, Path]]) -> list[Volume]:
    """Disk usage of each volume holding one of `run_dirs` ((run name, directory) pairs)."""
    by_mount: dict[Path, list[str]] = {}
    for run, directory in run_dirs:
        by_mount.setdefault(mount_point(directory), []).append(run)
    result = []
    for mount, runs in sorted(by_mount.items()):
        try:
            usage = shutil.disk_usage(mount)
        except OSError:
            continue
        result.append(
            Volume(
                mount=str(mount),
                total_bytes=usage.total,
                used_bytes=usage.used,
                free_bytes=usage.free,
                # As df shows it: used against what a user can use (root's reserve excluded).
                used_fraction=usage.used / max(usage.used + usage.free, 1),
                runs=tuple(runs),
            )
        )
    return result
