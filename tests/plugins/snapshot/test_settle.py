"""A checkpoint is copied only once it is complete and its files stopped changing."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from tunewatch.plugins.snapshot.settle import NotSettled, tree_state, wait_until_settled

from .helpers import write_checkpoint


def test_the_state_lists_regular_files_by_size_without_following_symlinks(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path, 3)
    (folder / "sub").mkdir()
    (folder / "sub" / "part.bin").write_bytes(b"x" * 10)
    (folder / "outside").symlink_to(tmp_path)
    state = tree_state(folder)
    assert state is not None
    assert state["sub/part.bin"][0] == 10
    assert state["model.safetensors"][0] == 128 * 1024
    assert "outside" not in state
    assert tree_state(tmp_path / "missing") is None


def append_for(path: Path, seconds: float, done: threading.Event) -> None:
    end = time.monotonic() + seconds
    with path.open("ab") as handle:
        while time.monotonic() < end:
            handle.write(os.urandom(4096))
            handle.flush()
            time.sleep(0.05)
    done.set()


async def test_a_file_still_being_written_is_waited_for(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path, 3)
    weights = folder / "model.safetensors"
    done = threading.Event()
    writer = threading.Thread(target=append_for, args=(weights, 1.0, done))
    writer.start()
    try:
        state = await wait_until_settled(
            folder, settle_s=0.3, timeout_s=10, required="trainer_state.json"
        )
    finally:
        writer.join()
    assert done.is_set()
    assert state["model.safetensors"][0] == weights.stat().st_size
    assert state == tree_state(folder)


async def test_a_checkpoint_without_trainer_state_is_never_complete(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path, 3, state=False)
    with pytest.raises(NotSettled, match=r"no trainer_state\.json"):
        await wait_until_settled(
            folder, settle_s=0.05, timeout_s=0.3, required="trainer_state.json"
        )


async def test_a_folder_deleted_while_waiting_is_given_up(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path, 3, state=False)

    async def delete_soon() -> None:
        await asyncio.sleep(0.2)
        shutil.rmtree(folder)

    deleter = asyncio.create_task(delete_soon())
    with pytest.raises(NotSettled, match="disappeared"):
        await wait_until_settled(folder, settle_s=0.05, timeout_s=5, required="trainer_state.json")
    await deleter
