"""Fixtures of the resources plugin's tests: real checkpoint folders, a small real disk, runs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.tmpfs import tmpfs

from tunewatch.daemon.store import RunRow

MiB = 2**20


def write_checkpoint(run_dir: Path, step: int, size: int, mtime: float | None = None) -> Path:
    """A `checkpoint-<step>/` holding `size` bytes of real (allocated) data, as a trainer
    writes it; `mtime` dates the folder (when it was saved)."""
    folder = run_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(os.urandom(size))
    (folder / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    if mtime is not None:
        os.utime(folder, (mtime, mtime))
    return folder


def run_row(
    path: Path,
    name: str = "run-a",
    *,
    status: str | None = "training",
    total_steps: int | None = None,
    pid: int | None = None,
) -> RunRow:
    return RunRow(1, str(path), name, status, total_steps, pid, 0.0)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB disk that a few real checkpoints fill."""
    with tmpfs(tmp_path / "disk", "8m") as mount:
        yield mount
