"""How a snapshot appears atomically: built in a marked `.tmp-<name>` folder, then renamed.

A crash leaves a `.tmp-*` folder, removed at the next start only if tunewatch made it.
"""

from __future__ import annotations

import os
import re
import shutil
from datetime import datetime
from pathlib import Path

from tunewatch.plugins.snapshot.copy import fsync_dir
from tunewatch.plugins.snapshot.manifest import read_manifest

TMP_PREFIX = ".tmp-"
MARKER_NAME = ".tunewatch-staging"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class UnsafeRemoval(Exception):
    """A folder tunewatch was about to delete turned out not to be provably its own."""


def safe_component(run: str) -> str:
    """The run name as one harmless path component."""
    return _UNSAFE.sub("-", run).strip(".-") or "run"


def snapshot_name(run: str, step: int, when: datetime) -> str:
    """E.g. `run-a_step-017213_20261125-0312`: sorts by step, tells run and date at a glance."""
    return f"{safe_component(run)}_step-{step:06d}_{when:%Y%m%d-%H%M}"


def is_snapshot_name(name: str, run: str, step: int) -> bool:
    """Whether `name` is what `snapshot_name` gives (with a `-N` suffix after a clash)."""
    pattern = rf"{re.escape(safe_component(run))}_step-0*{step}_\d{{8}}-\d{{4}}(?:-\d+)?"
    return re.fullmatch(pattern, name) is not None


def start_staging(snapshots_dir: Path, name: str) -> Path:
    """Create `.tmp-<name>` in `snapshots_dir`, marked as ours before anything else goes in."""
    snapshots_dir.mkdir(parents=True, exist_ok=True)
    tmp = snapshots_dir / f"{TMP_PREFIX}{name}"
    if tmp.exists() or tmp.is_symlink():
        remove_staging(tmp)  # ours from a crash, or UnsafeRemoval leaves it to the user
    tmp.mkdir()
    with (tmp / MARKER_NAME).open("xb") as marker:
        os.fsync(marker.fileno())
    fsync_dir(snapshots_dir)
    return tmp


def commit(tmp: Path, snapshots_dir: Path, name: str) -> Path:
    """Rename the finished `tmp` to a free final name and make the rename durable."""
    # Without the marker a crash right here leaves a `.tmp-*` that is still recognised as ours
    # by its manifest, which is already written.
    (tmp / MARKER_NAME).unlink()
    fsync_dir(tmp)
    final = _free_name(snapshots_dir, name)
    os.rename(tmp, final)
    fsync_dir(snapshots_dir)
    return final


def _free_name(snapshots_dir: Path, name: str) -> Path:
    # rename() would silently replace an empty folder of the same name: never reuse a name.
    final = snapshots_dir / name
    n = 2
    while final.exists() or final.is_symlink():
        final = snapshots_dir / f"{name}-{n}"
        n += 1
    return final


def is_our_staging(path: Path) -> bool:
    """A real (not symlinked) `.tmp-*` folder holding our marker or our manifest."""
    if not path.name.startswith(TMP_PREFIX) or path.is_symlink() or not path.is_dir():
        return False
    marker = path / MARKER_NAME
    if marker.is_file() and not marker.is_symlink():
        return True
    return read_manifest(path) is not None


def remove_staging(tmp: Path) -> None:
    """Delete one of our staging folders; refuse anything else."""
    if not is_our_staging(tmp):
        raise UnsafeRemoval(f"{tmp} is not a tunewatch staging folder; leaving it alone")
    shutil.rmtree(tmp)


def clean_stale(snapshots_dir: Path) -> list[Path]:
    """Remove the staging folders a crash left in `snapshots_dir`; returns what was removed.

    The caller guarantees no snapshot is being built there meanwhile.
    """
    if not snapshots_dir.is_dir():
        return []
    removed: list[Path] = []
    for entry in os.scandir(snapshots_dir):
        path = Path(entry.path)
        if not is_our_staging(path):
            continue
        shutil.rmtree(path)
        removed.append(path)
    return removed
