"""Snapshots appear atomically: a crash leaves only a marked `.tmp-*` folder, cleaned up later."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from tunewatch.plugins.snapshot.staging import (
    UnsafeRemoval,
    clean_stale,
    commit,
    is_snapshot_name,
    remove_staging,
    snapshot_name,
    start_staging,
)

from .helpers import files_under, write_checkpoint


def test_a_snapshot_name_carries_run_step_and_date() -> None:
    name = snapshot_name("run-a", 17213, datetime(2026, 11, 25, 3, 12))
    assert name == "run-a_step-017213_20261125-0312"
    assert is_snapshot_name(name, "run-a", 17213)
    assert is_snapshot_name(name + "-2", "run-a", 17213)
    assert not is_snapshot_name(name, "run-a", 1721)
    assert not is_snapshot_name("my-best-model", "run-a", 17213)


def test_a_run_name_cannot_escape_the_snapshots_folder() -> None:
    name = snapshot_name("../../etc/x y", 1, datetime(2026, 1, 1))
    assert "/" not in name and not name.startswith(".")


def test_commit_never_replaces_an_existing_folder(tmp_path: Path) -> None:
    (tmp_path / "run-a_step-000001_20260101-0000").mkdir()  # an empty folder rename() would eat
    tmp = start_staging(tmp_path, "run-a_step-000001_20260101-0000")
    (tmp / "weights.bin").write_bytes(b"w")
    final = commit(tmp, tmp_path, "run-a_step-000001_20260101-0000")
    assert final.name == "run-a_step-000001_20260101-0000-2"
    assert files_under(final) == {"weights.bin"}
    assert not tmp.exists()


CRASH_BEFORE_RENAME = """
import os, signal, sys
from pathlib import Path
from tunewatch.plugins.snapshot.settle import tree_state
from tunewatch.plugins.snapshot.take import SnapshotRequest, take_snapshot

def crash(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # the power goes out just before the rename

os.rename = crash
source, snapshots = Path(sys.argv[1]), Path(sys.argv[2])
state = tree_state(source)
request = SnapshotRequest("run-a", 10, "eval_loss", 1.5, source, snapshots, True, state)
take_snapshot(request, lambda: False)
"""


def test_a_crash_before_the_rename_leaves_only_a_tmp_folder_that_is_cleaned_up(
    tmp_path: Path,
) -> None:
    source = write_checkpoint(tmp_path / "run-a", 10)
    snapshots = tmp_path / "run-a" / "snapshots"
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_BEFORE_RENAME, str(source), str(snapshots)], timeout=60
    )
    assert proc.returncode == -signal.SIGKILL
    (left,) = snapshots.iterdir()
    assert left.name.startswith(".tmp-run-a_step-000010_")
    assert "model.safetensors" in files_under(left)

    users = snapshots / ".tmp-my-own-work"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    assert clean_stale(snapshots) == [left]
    assert sorted(p.name for p in snapshots.iterdir()) == [".tmp-my-own-work"]
    assert (users / "notes.txt").read_text() == "mine"


def test_a_folder_without_the_marker_is_never_removed(tmp_path: Path) -> None:
    users = tmp_path / ".tmp-mine"
    users.mkdir()
    with pytest.raises(UnsafeRemoval):
        remove_staging(users)
    assert users.exists()
