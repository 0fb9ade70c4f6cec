"""Which checkpoints can go: neither newest nor best; what they free; the command, quoted."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from tunewatch.plugins.resources.checkpoints import CheckpointIndex
from tunewatch.plugins.resources.reclaim import RunBest, reclaim_advice, reclaimable

from .conftest import MiB, write_checkpoint


def test_only_checkpoints_neither_newest_nor_best_can_go(tmp_path: Path) -> None:
    run_dir = tmp_path / "my run $HOME"
    for step in (100, 200, 300, 400, 500):
        write_checkpoint(run_dir, step, MiB // 4)
    index = CheckpointIndex()
    best = RunBest(steps=frozenset({200}), names=frozenset({"checkpoint-300"}))
    found = reclaimable([("run-a", index.checkpoints(run_dir), best)], index.size)
    assert [c.checkpoint.step for c in found] == [100, 400]
    advice = reclaim_advice("/data", found)
    assert (
        "2 checkpoints can go and free 520.0 KiB: run-a/checkpoint-100, run-a/checkpoint-400"
        in advice
    )
    command = shlex.split(advice.split("To delete: ", 1)[1])
    assert command == ["rm", "-r", str(run_dir / "checkpoint-100"), str(run_dir / "checkpoint-400")]


def test_files_hard_linked_into_snapshots_are_not_counted_as_freed(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path, 100, MiB)
    write_checkpoint(tmp_path, 200, MiB)
    os.link(folder / "model.safetensors", tmp_path / "snapshot.safetensors")
    index = CheckpointIndex()
    found = reclaimable([("run-a", index.checkpoints(tmp_path), RunBest())], index.size)
    advice = reclaim_advice("/data", found)
    assert "free 4.0 KiB (1.0 MiB more is hard-linked elsewhere, e.g. into snapshots" in advice


def test_with_nothing_to_delete_the_advice_says_what_else_to_do() -> None:
    advice = reclaim_advice("/data", [])
    assert advice.startswith("No checkpoint can go without losing a run's newest or best")
    assert "save_total_limit" in advice
