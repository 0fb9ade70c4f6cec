"""Place a checkpoint's files into a snapshot folder: hardlinks where possible, else copies."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class Aborted(Exception):
    """The daemon is stopping; the partial snapshot is thrown away."""


@dataclass
class CopyResult:
    files: list[str] = field(default_factory=list)  # relative paths, `/`-separated
    linked: int = 0
    copied: int = 0
    skipped: list[str] = field(default_factory=list)  # "path: why"


def copy_tree(
    source: Path, dest: Path, *, hardlink: bool, should_stop: Callable[[], bool]
) -> CopyResult:
    """Fill the existing, empty `dest` with the files of `source`; fsync everything placed.

    Symlinks are never followed out of `source`; sockets, FIFOs and devices are skipped.
    """
    result = CopyResult()
    _copy_dir(source, dest, "", source.resolve(), hardlink, should_stop, result)
    return result


def _copy_dir(
    src_dir: Path,
    dest_dir: Path,
    prefix: str,
    root: Path,
    hardlink: bool,
    should_stop: Callable[[], bool],
    result: CopyResult,
) -> None:
    for entry in sorted(os.scandir(src_dir), key=lambda e: e.name):
        if should_stop():
            raise Aborted("stopping")
        rel = prefix + entry.name
        src, dst = Path(entry.path), dest_dir / entry.name
        if entry.is_symlink():
            _copy_symlink(src, dst, rel, root, result)
        elif entry.is_dir(follow_symlinks=False):
            dst.mkdir()
            _copy_dir(src, dst, rel + "/", root, hardlink, should_stop, result)
        elif entry.is_file(follow_symlinks=False):
            _place(src, dst, hardlink, result)
            result.files.append(rel)
        else:
            result.skipped.append(f"{rel}: not a regular file (socket, FIFO or device)")
    fsync_dir(dest_dir)


def _copy_symlink(src: Path, dst: Path, rel: str, root: Path, result: CopyResult) -> None:
    # A link to a file inside the checkpoint is kept as a real file; anything that leads out of
    # it (or to a folder, which could loop) is not ours to copy.
    try:
        target = src.resolve()
    except (OSError, RuntimeError):  # a loop of links
        result.skipped.append(f"{rel}: broken symlink")
        return
    if not target.is_relative_to(root):
        result.skipped.append(f"{rel}: symlink leading out of the checkpoint")
        return
    if not target.is_file():
        result.skipped.append(f"{rel}: symlink to something other than a file")
        return
    _place(target, dst, hardlink=False, result=result)
    result.files.append(rel)


# Why hardlinks are safe here: a hardlink shares the file's data, so it is only a safe copy if the
# trainer never rewrites that file in place. The Hugging Face Trainer writes every checkpoint
# into a new `checkpoint-N/` folder and later deletes whole old folders (save_total_limit);
# deleting only drops the trainer's name for the data, so the snapshot's link keeps it intact.
# A folder overwritten in place (a `model_dir` of latest weights) is always copied, and so
# should be the checkpoints of a training restarted into the same output folder, which rewrites
# an existing `checkpoint-N/` file by file (`hardlink = false`); the manifest's sha256 sums
# would show the damage.
def _place(src: Path, dst: Path, hardlink: bool, result: CopyResult) -> None:
    if hardlink and _try_link(src, dst):
        result.linked += 1
    else:
        shutil.copy2(src, dst, follow_symlinks=False)
        result.copied += 1
    _fsync_file(dst)


def _try_link(src: Path, dst: Path) -> bool:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        # EXDEV (another filesystem), EPERM (filesystems that refuse links), EMLINK (too many
        # links)...: a real copy is always possible, so any failure falls back to one.
        return False
    return True


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
