"""Retention keeps the K best snapshots and can delete nothing but tunewatch's own snapshots."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tunewatch.plugins.snapshot.retention import (
    list_snapshots,
    lower_is_better,
    prune,
    remove_snapshot,
)
from tunewatch.plugins.snapshot.settle import tree_state
from tunewatch.plugins.snapshot.staging import UnsafeRemoval
from tunewatch.plugins.snapshot.take import SnapshotRequest, take_snapshot

from .helpers import write_checkpoint


def snap(root: Path, snapshots: Path, run: str, step: int, value: float, metric: str) -> Path:
    source = write_checkpoint(root / run, step)
    state = tree_state(source)
    assert state is not None
    request = SnapshotRequest(run, step, metric, value, source, snapshots, True, state)
    return take_snapshot(request, lambda: False).path


def steps_left(snapshots: Path, run: str = "run-a") -> list[int]:
    return sorted(m.step for _, m in list_snapshots(snapshots) if m.run == run)


@pytest.mark.parametrize(
    ("metric", "lower"),
    [
        ("eval_loss", True),
        ("loss", True),
        ("eval/perplexity", True),
        ("eval_wer", True),
        ("eval_accuracy", False),
        ("eval_f1", False),
        ("rouge_l", False),
    ],
)
def test_losses_are_better_lower_and_scores_higher(metric: str, lower: bool) -> None:
    assert lower_is_better(metric) is lower


def test_the_k_lowest_losses_are_kept(tmp_path: Path) -> None:
    snapshots = tmp_path / "snapshots"
    for step, value in [(10, 0.9), (20, 0.5), (30, 0.7), (40, 0.4), (50, 0.8)]:
        snap(tmp_path, snapshots, "run-a", step, value, "eval_loss")
    deleted = prune(snapshots, "run-a", "eval_loss", keep=3)
    assert len(deleted) == 2
    assert steps_left(snapshots) == [20, 30, 40]


def test_the_k_highest_accuracies_are_kept(tmp_path: Path) -> None:
    snapshots = tmp_path / "snapshots"
    for step, value in [(10, 0.6), (20, 0.8), (30, 0.7)]:
        snap(tmp_path, snapshots, "run-a", step, value, "eval_accuracy")
    prune(snapshots, "run-a", "eval_accuracy", keep=2)
    assert steps_left(snapshots) == [20, 30]


def test_keep_zero_keeps_everything(tmp_path: Path) -> None:
    snapshots = tmp_path / "snapshots"
    for step in (10, 20):
        snap(tmp_path, snapshots, "run-a", step, 1.0 / step, "eval_loss")
    assert prune(snapshots, "run-a", "eval_loss", keep=0) == []
    assert steps_left(snapshots) == [10, 20]


def test_other_runs_and_everything_a_user_put_there_are_left_alone(tmp_path: Path) -> None:
    snapshots = tmp_path / "snapshots"
    mine = [snap(tmp_path, snapshots, "run-a", s, 1.0 / s, "eval_loss") for s in (10, 20, 30)]
    other = snap(tmp_path, snapshots, "run-b", 5, 9.0, "eval_loss")
    worst = snap(tmp_path, snapshots, "run-a", 1, 99.0, "eval_loss")
    # A user's folder, a renamed copy of a real snapshot, a plain file, a symlink to a snapshot.
    (snapshots / "notes").mkdir()
    (snapshots / "notes" / "todo.txt").write_text("compare step 10 and 20")
    shutil.copytree(worst, snapshots / "my-favourite")
    (snapshots / "README.txt").write_text("my snapshots")
    outside = snap(tmp_path / "elsewhere", tmp_path / "away", "run-a", 2, 50.0, "eval_loss")
    link = snapshots / outside.name
    link.symlink_to(outside)

    assert sorted(prune(snapshots, "run-a", "eval_loss", keep=1)) == sorted([*mine[:2], worst])
    assert steps_left(snapshots) == [30]
    assert steps_left(snapshots, "run-b") == [5] and other.exists()
    assert (snapshots / "notes" / "todo.txt").read_text() == "compare step 10 and 20"
    assert (snapshots / "my-favourite").is_dir() and (snapshots / "README.txt").exists()
    assert link.is_symlink() and outside.exists()


def test_remove_refuses_anything_outside_the_snapshots_folder(tmp_path: Path) -> None:
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    elsewhere = snap(tmp_path, tmp_path / "other", "run-a", 10, 1.0, "eval_loss")
    with pytest.raises(UnsafeRemoval, match="not directly inside"):
        remove_snapshot(snapshots, elsewhere)
    link = snapshots / elsewhere.name
    link.symlink_to(elsewhere)
    with pytest.raises(UnsafeRemoval, match="symlink"):
        remove_snapshot(snapshots, link)
    users = snapshots / "run-a_step-000010_20260101-0000"
    users.mkdir()
    with pytest.raises(UnsafeRemoval, match="no valid tunewatch manifest"):
        remove_snapshot(snapshots, users)
    assert elsewhere.exists() and users.exists()
