"""Taking one snapshot: all of it under its final name, or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunewatch.plugins.snapshot.copy import Aborted
from tunewatch.plugins.snapshot.manifest import MANIFEST_NAME, read_manifest
from tunewatch.plugins.snapshot.settle import tree_state
from tunewatch.plugins.snapshot.take import SnapshotRequest, SourceChanged, take_snapshot

from .helpers import files_under, sha256_file, write_checkpoint


def request_for(source: Path, snapshots: Path) -> SnapshotRequest:
    state = tree_state(source)
    assert state is not None
    return SnapshotRequest("run-a", 10, "eval_loss", 1.5, source, snapshots, True, state)


def test_a_snapshot_holds_the_checkpoint_and_its_manifest(tmp_path: Path) -> None:
    source = write_checkpoint(tmp_path / "run-a", 10)
    snapshots = tmp_path / "run-a" / "snapshots"
    taken = take_snapshot(request_for(source, snapshots), lambda: False)
    assert [p.name for p in snapshots.iterdir()] == [taken.path.name]
    assert files_under(taken.path) == files_under(source) | {MANIFEST_NAME}
    manifest = read_manifest(taken.path)
    assert manifest == taken.manifest
    assert manifest is not None and manifest.source == str(source)
    assert {w.path: w.sha256 for w in manifest.weights} == {
        name: sha256_file(source / name)
        for name in ("model.safetensors", "optimizer.pt", "rng_state.pth")
    }


def test_a_checkpoint_that_changed_since_it_settled_is_not_kept(tmp_path: Path) -> None:
    source = write_checkpoint(tmp_path / "run-a", 10)
    snapshots = tmp_path / "run-a" / "snapshots"
    request = request_for(source, snapshots)
    with (source / "model.safetensors").open("ab") as handle:
        handle.write(b"more")
    with pytest.raises(SourceChanged):
        take_snapshot(request, lambda: False)
    assert list(snapshots.iterdir()) == []


def test_an_interrupted_snapshot_leaves_nothing_behind(tmp_path: Path) -> None:
    source = write_checkpoint(tmp_path / "run-a", 10)
    snapshots = tmp_path / "run-a" / "snapshots"
    calls = iter(range(100))
    with pytest.raises(Aborted):
        take_snapshot(request_for(source, snapshots), lambda: next(calls) >= 3)
    assert list(snapshots.iterdir()) == []
