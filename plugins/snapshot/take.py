"""Take one snapshot from start to finish (blocking code for a worker thread): stage, copy,
hash, check the source held still, write the manifest, rename. Never half-written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tunewatch.plugins.snapshot.copy import Aborted, CopyResult, copy_tree
from tunewatch.plugins.snapshot.manifest import Manifest, describe_weights, write_manifest
from tunewatch.plugins.snapshot.retention import lower_is_better
from tunewatch.plugins.snapshot.settle import TreeState, tree_state
from tunewatch.plugins.snapshot.staging import commit, remove_staging, snapshot_name, start_staging


class SourceChanged(Exception):
    """The checkpoint changed while it was being copied; it must settle again."""


class Refused(Exception):
    """This folder cannot be snapshotted at all (the reason is the message)."""


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    run: str
    step: int
    metric: str
    value: float
    source: Path
    snapshots_dir: Path
    hardlink: bool
    settled: TreeState  # the source as it was when it stopped changing


@dataclass(frozen=True, slots=True)
class Taken:
    path: Path
    manifest: Manifest
    copy: CopyResult


def take_snapshot(request: SnapshotRequest, should_stop: Callable[[], bool]) -> Taken:
    """Copy `request.source` into a new snapshot folder and return it; all or nothing."""
    if request.snapshots_dir.resolve().is_relative_to(request.source.resolve()):
        # Copying a folder into itself would recurse into the snapshot being built.
        raise Refused(f"the snapshots folder {request.snapshots_dir} is inside {request.source}")
    created = time.time()
    name = snapshot_name(request.run, request.step, datetime.fromtimestamp(created))
    tmp = start_staging(request.snapshots_dir, name)
    try:
        copied = copy_tree(request.source, tmp, hardlink=request.hardlink, should_stop=should_stop)
        manifest = Manifest(
            run=request.run,
            step=request.step,
            metric=request.metric,
            value=request.value,
            lower_is_better=lower_is_better(request.metric),
            created=created,
            source=str(request.source),
            files=tuple(copied.files),
            weights=describe_weights(tmp, copied.files),
            skipped=tuple(copied.skipped),
        )
        # Checked after hashing: a hardlinked file rewritten in place would change the
        # snapshot's bytes too, and the manifest must describe a checkpoint that held still.
        if tree_state(request.source) != request.settled:
            raise SourceChanged(f"{request.source} changed while it was being copied")
        write_manifest(tmp, manifest)
        if should_stop():
            raise Aborted("stopping")
        final = commit(tmp, request.snapshots_dir, name)
    except BaseException:
        if tmp.exists():  # absent if the rename itself went through
            remove_staging(tmp)
        raise
    return Taken(final, manifest, copied)
