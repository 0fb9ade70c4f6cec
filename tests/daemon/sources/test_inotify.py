"""FileWakeups: the event loop wakes on writes to followed files, with no polling."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import DaemonSettings, Settings
from tunewatch.daemon.events import MetricsLogged
from tunewatch.daemon.sources.inotify import FileWakeups
from tunewatch.daemon.store import AsyncStore
from tunewatch.daemon.watcher import RunWatcher


async def wait_until(predicate: object, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_write_to_a_watched_file_calls_back(tmp_path: Path) -> None:
    seen: list[Path] = []
    wakeups = FileWakeups(seen.append, lambda: None)
    assert wakeups.open()
    log = tmp_path / "a.jsonl"
    log.write_text("")
    wakeups.watch(log)
    with log.open("a") as f:
        f.write("x\n")
    await wait_until(lambda: seen == [log])
    wakeups.close()


async def test_rename_and_delete_are_reported_and_a_replaced_file_can_be_rewatched(
    tmp_path: Path,
) -> None:
    seen: list[Path] = []
    wakeups = FileWakeups(seen.append, lambda: None)
    wakeups.open()
    log = tmp_path / "a.jsonl"
    log.write_text("1\n")
    wakeups.watch(log)
    os.rename(log, tmp_path / "a.jsonl.1")
    await wait_until(lambda: log in seen)
    seen.clear()
    log.write_text("")  # the new file after rotation
    wakeups.watch(log)
    with log.open("a") as f:
        f.write("2\n")
    await wait_until(lambda: log in seen)
    wakeups.close()


async def test_followed_files_do_not_wait_for_the_directory_watcher(tmp_path: Path) -> None:
    """With watchfiles told to look only every 30 s, appended lines still arrive at once."""
    run = tmp_path / "run"
    run.mkdir()
    log = run / "trainer_log.jsonl"
    log.write_text('{"step": 1, "loss": 1.0}\n')
    settings = Settings(
        daemon=DaemonSettings(state_dir=str(tmp_path / "state"), watch_step_ms=30_000)
    )
    store = await AsyncStore.open(settings.state_db())
    bus = EventBus()
    steps: list[int] = []
    bus.subscribe(MetricsLogged, lambda e: steps.append(e.step))
    watcher = RunWatcher(settings, store, bus, [str(run)])
    await watcher.catch_up()
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    await wait_until(lambda: steps == [1])
    await asyncio.sleep(1.0)  # past the watcher's start-up rescan
    with log.open("a") as f:
        f.write('{"step": 2, "loss": 0.9}\n')
    await wait_until(lambda: steps == [1, 2], timeout_s=1.0)
    stop.set()
    await task
    await bus.close()
    await store.close()
