"""Where runs live and what their trainers use: the volumes holding runs, and a trainer's RSS.

Runs are grouped by volume (`st_dev`), so ten thousand finished runs on one disk cost one
`disk_usage`, not ten thousand.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tunewatch.daemon.events import FINISHED_STATUSES
from tunewatch.daemon.store import RunRow


def is_training(run: RunRow) -> bool:
    """Not known to be finished: a run with no status file may still be saving checkpoints."""
    return run.status is None or run.status.lower() not in FINISHED_STATUSES


def trainer_pid(run: RunRow) -> int | None:
    """The PID of the run's trainer while the run is not finished (a finished run's PID may
    belong to another process by now)."""
    return run.pid if run.pid is not None and is_training(run) else None


def trainer_rss(pid: int) -> int | None:
    """The resident memory of process `pid`, or None when it is gone or not ours to read."""
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


@dataclass(slots=True)
class Volume:
    """One file system holding runs: `path` is the first run directory found on it."""

    device: int
    path: Path
    runs: list[RunRow] = field(default_factory=list)


def volumes_of(runs: Sequence[RunRow]) -> list[Volume]:
    """The volumes holding `runs`, in the order first seen; missing directories are skipped."""
    found: dict[int, Volume] = {}
    for run in runs:
        try:
            device = os.stat(run.path).st_dev
        except OSError:
            continue
        found.setdefault(device, Volume(device, Path(run.path))).runs.append(run)
    return list(found.values())


def mount_point(path: Path) -> Path:
    """The folder `path`'s file system is mounted on (`/data` for `/data/runs/a`): what a
    person calls the disk."""
    path = path.resolve()
    while not os.path.ismount(path) and path.parent != path:
        path = path.parent
    return path
