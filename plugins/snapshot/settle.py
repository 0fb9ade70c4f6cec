"""Decide when a checkpoint folder is complete: its files stopped changing for `settle_s`."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

# relative path -> (size, mtime in ns) of every regular file in the folder
TreeState = dict[str, tuple[int, int]]


class NotSettled(Exception):
    """The folder vanished, never became complete, or kept changing until the deadline."""


def tree_state(root: Path) -> TreeState | None:
    """Size and mtime of each regular file under `root` (symlinks not followed); None if absent."""
    if not root.is_dir():
        return None
    state: TreeState = {}
    _walk(root, "", state)
    return state


def _walk(directory: Path, prefix: str, state: TreeState) -> None:
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return  # removed while we looked: the next poll sees the change
    for entry in entries:
        rel = prefix + entry.name
        try:
            if entry.is_dir(follow_symlinks=False):
                _walk(Path(entry.path), rel + "/", state)
            elif entry.is_file(follow_symlinks=False):
                info = entry.stat(follow_symlinks=False)
                state[rel] = (info.st_size, info.st_mtime_ns)
        except FileNotFoundError:
            continue


def poll_interval(settle_s: float) -> float:
    return max(0.05, min(0.5, settle_s / 4))


# A trainer writes a checkpoint file by file over seconds or minutes; copying it half-written
# would keep a model that cannot be loaded. Sizes and mtimes are cheap to poll (a few stat calls).
async def wait_until_settled(
    root: Path, *, settle_s: float, timeout_s: float, required: str | None
) -> TreeState:
    """Return the folder's state once it holds `required` and nothing changed for `settle_s`.

    Raises NotSettled when the folder disappears or is not complete within `timeout_s`.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = await asyncio.to_thread(tree_state, root)
    stable_since = loop.time()
    while True:
        if last is None:
            raise NotSettled(f"{root} disappeared before it could be copied")
        complete = bool(last) and (required is None or required in last)
        if complete and loop.time() - stable_since >= settle_s:
            return last
        if loop.time() >= deadline:
            raise NotSettled(_why_not(root, last, required, timeout_s))
        await asyncio.sleep(poll_interval(settle_s))
        current = await asyncio.to_thread(tree_state, root)
        if current != last:
            last, stable_since = current, loop.time()


def _why_not(root: Path, state: TreeState, required: str | None, timeout_s: float) -> str:
    if not state:
        return f"{root} stayed empty for {timeout_s:g} s"
    if required is not None and required not in state:
        return f"{root} has no {required} after {timeout_s:g} s: the save never finished"
    return f"{root} was still changing after {timeout_s:g} s"
