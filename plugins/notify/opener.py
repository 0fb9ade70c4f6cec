"""Opens a report or snapshot folder when a notification is clicked (where xdg-open exists)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from typing import Any

OPENER_TIMEOUT_S = 30.0


class FileOpener:
    """Opens a path with `xdg-open` (when installed), without waiting on the desktop."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self._tasks: set[asyncio.Task[None]] = set()

    def open(self, path: str) -> None:
        exe = shutil.which("xdg-open")
        if exe is None:
            self.log.info("cannot open from a notification: xdg-open is not installed", path=path)
            return
        task = asyncio.get_running_loop().create_task(self._run(exe, path))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, exe: str, path: str) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                exe,
                path,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            self.log.info("cannot run xdg-open", path=path, error=str(exc))
            return
        try:
            code = await asyncio.wait_for(proc.wait(), OPENER_TIMEOUT_S)
        except TimeoutError:
            return  # a file manager that keeps xdg-open alive is still a success
        if code != 0:
            self.log.info("xdg-open failed", path=path, exit_code=code)

    async def close(self, grace_s: float = 2.0) -> None:
        """Let running openers finish (up to `grace_s`): a cancelled wait leaks the child's
        transport until it exits, which may be after the event loop is gone."""
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(list(self._tasks), timeout=grace_s)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
