"""Checkpoint folders: listed and sized cheaply, cached until they change; rotation noticed."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tunewatch.plugins.resources.checkpoints import CheckpointIndex, cadence, folder_size

from .conftest import write_checkpoint

KiB = 1024


def test_checkpoints_are_listed_by_step_and_their_cadence_is_the_median_gap(tmp_path: Path) -> None:
    for step, mtime in ((1000, 5000.0), (200, 1000.0), (400, 2000.0), (600, 3000.0)):
        write_checkpoint(tmp_path, step, KiB, mtime=mtime)
    (tmp_path / "checkpoint-notes.txt").write_text("not a checkpoint")
    (tmp_path / "checkpoint-800.tmp").mkdir()
    listing = CheckpointIndex().checkpoints(tmp_path)
    assert [c.step for c in listing] == [200, 400, 600, 1000]
    every = cadence(listing)
    assert (every.seconds, every.steps) == (1000.0, 200)


def test_a_folder_size_counts_blocks_and_what_deleting_it_frees(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path, 100, 64 * KiB)
    os.link(folder / "model.safetensors", tmp_path / "snapshot-model.safetensors")
    size = folder_size(folder)
    assert size.bytes >= 64 * KiB + 1
    assert size.freeable == size.bytes - (folder / "model.safetensors").stat().st_blocks * 512


def test_sizes_are_cached_until_the_folder_changes_and_settled(tmp_path: Path) -> None:
    now = [time.time() + 3600]  # every folder looks settled
    index = CheckpointIndex(clock=lambda: now[0])
    folder = write_checkpoint(tmp_path, 100, 16 * KiB, mtime=time.time() - 600)
    first = index.size(index.checkpoints(tmp_path)[0])
    saved = folder.stat()
    (folder / "model.safetensors").write_bytes(os.urandom(64 * KiB))
    os.utime(folder, ns=(saved.st_atime_ns, saved.st_mtime_ns))  # the folder looks unchanged
    assert index.size(index.checkpoints(tmp_path)[0]) == first  # cached: nothing re-walked
    (folder / "optimizer.pt").write_bytes(os.urandom(16 * KiB))  # a new file: the folder changed
    assert index.size(index.checkpoints(tmp_path)[0]).bytes > first.bytes


def test_a_run_whose_old_checkpoints_disappear_rotates(tmp_path: Path) -> None:
    index = CheckpointIndex()
    for step in (100, 200):
        write_checkpoint(tmp_path, step, KiB)
    index.checkpoints(tmp_path)
    assert not index.rotating(tmp_path)
    write_checkpoint(tmp_path, 300, KiB)
    for name in ("model.safetensors", "trainer_state.json"):
        (tmp_path / "checkpoint-100" / name).unlink()
    (tmp_path / "checkpoint-100").rmdir()
    os.utime(tmp_path, (time.time() + 1, time.time() + 1))
    assert [c.step for c in index.checkpoints(tmp_path)] == [200, 300]
    assert index.rotating(tmp_path)
