"""Hardlinks where the filesystem allows them, real copies otherwise, nothing from outside."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tunewatch.plugins.snapshot.copy import Aborted, copy_tree

from .helpers import files_under, same_file, write_checkpoint

CHECKPOINT_FILES = {
    "model.safetensors",
    "optimizer.pt",
    "rng_state.pth",
    "config.json",
    "tokenizer.json",
    "trainer_state.json",
}


def never() -> bool:
    return False


def test_files_are_hardlinked_on_the_same_filesystem(tmp_path: Path) -> None:
    source = write_checkpoint(tmp_path, 10)
    dest = tmp_path / "snap"
    dest.mkdir()
    result = copy_tree(source, dest, hardlink=True, should_stop=never)
    assert set(result.files) == CHECKPOINT_FILES == files_under(dest)
    assert result.linked == len(CHECKPOINT_FILES) and result.copied == 0
    assert all(same_file(source / name, dest / name) for name in CHECKPOINT_FILES)


def test_a_hardlinked_snapshot_survives_the_trainer_deleting_its_checkpoint(
    tmp_path: Path,
) -> None:
    # What save_total_limit does to old checkpoints: the snapshot's links keep the data.
    source = write_checkpoint(tmp_path, 10)
    before = (source / "model.safetensors").read_bytes()
    dest = tmp_path / "snap"
    dest.mkdir()
    copy_tree(source, dest, hardlink=True, should_stop=never)
    shutil.rmtree(source)
    assert (dest / "model.safetensors").read_bytes() == before


def test_a_cross_device_link_error_falls_back_to_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_checkpoint(tmp_path, 10)
    dest = tmp_path / "snap"
    dest.mkdir()
    real_link = os.link

    def link(src: str | Path, dst: str | Path, **kwargs: bool) -> None:
        if Path(src).name == "model.safetensors":
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_link(src, dst, **kwargs)

    monkeypatch.setattr(os, "link", link)
    result = copy_tree(source, dest, hardlink=True, should_stop=never)
    assert result.copied == 1 and result.linked == len(CHECKPOINT_FILES) - 1
    assert not same_file(source / "model.safetensors", dest / "model.safetensors")
    assert (dest / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    assert same_file(source / "optimizer.pt", dest / "optimizer.pt")


@pytest.fixture
def other_filesystem(tmp_path: Path) -> Iterator[Path]:
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("no /dev/shm to act as a second filesystem")
    if shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("/dev/shm is on the same filesystem as the temp dir")
    with tempfile.TemporaryDirectory(dir=shm) as folder:
        yield Path(folder)


def test_a_checkpoint_on_another_filesystem_is_really_copied(
    tmp_path: Path, other_filesystem: Path
) -> None:
    source = write_checkpoint(other_filesystem, 10)
    dest = tmp_path / "snap"
    dest.mkdir()
    result = copy_tree(source, dest, hardlink=True, should_stop=never)
    assert result.copied == len(CHECKPOINT_FILES) and result.linked == 0
    for name in CHECKPOINT_FILES:
        assert (dest / name).read_bytes() == (source / name).read_bytes()


def test_hardlinks_can_be_turned_off(tmp_path: Path) -> None:
    source = write_checkpoint(tmp_path, 10)
    dest = tmp_path / "snap"
    dest.mkdir()
    result = copy_tree(source, dest, hardlink=False, should_stop=never)
    assert result.linked == 0
    assert not any(same_file(source / name, dest / name) for name in CHECKPOINT_FILES)


def test_symlinks_never_lead_out_of_the_checkpoint_and_fifos_are_skipped(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not part of the model")
    source = write_checkpoint(tmp_path, 10)
    (source / "leak.txt").symlink_to(secret)
    (source / "home").symlink_to(tmp_path, target_is_directory=True)
    (source / "alias.json").symlink_to(source / "config.json")
    os.mkfifo(source / "pipe")
    (source / "nested").mkdir()
    (source / "nested" / "adapter.bin").write_bytes(b"adapter")
    dest = tmp_path / "snap"
    dest.mkdir()
    result = copy_tree(source, dest, hardlink=True, should_stop=never)
    assert files_under(dest) == CHECKPOINT_FILES | {"alias.json", "nested/adapter.bin"}
    assert not (dest / "alias.json").is_symlink()
    assert (dest / "alias.json").read_text() == '{"model_type": "llama"}'
    assert not (dest / "leak.txt").exists() and not (dest / "home").exists()
    assert not (dest / "pipe").exists()
    assert sorted(s.split(":")[0] for s in result.skipped) == ["home", "leak.txt", "pipe"]


def test_a_stop_request_interrupts_the_copy(tmp_path: Path) -> None:
    source = write_checkpoint(tmp_path, 10)
    dest = tmp_path / "snap"
    dest.mkdir()
    calls = iter(range(100))
    with pytest.raises(Aborted):
        copy_tree(source, dest, hardlink=True, should_stop=lambda: next(calls) >= 2)
    assert len(files_under(dest)) == 2
