"""The resources plugin: real psutil samples of disk, memory, load and the trainer process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import Settings
from tunewatch.daemon.events import ResourceSample, StatusChanged
from tunewatch.daemon.plugin import PluginContext
from tunewatch.daemon.store import AsyncStore
from tunewatch.plugins.resources import ResourcesConfig, ResourcesPlugin, sample, samples_for


def test_a_sample_describes_the_disk_memory_and_trainer(tmp_path: Path) -> None:
    event = sample(tmp_path, os.getpid())
    assert 0.0 < event.disk_used_fraction < 1.0
    assert event.disk_free_bytes > 0
    assert 0.0 < event.memory_used_fraction < 1.0
    assert event.trainer_rss_bytes is not None and event.trainer_rss_bytes > 10 * 2**20


def test_a_trainer_that_is_gone_has_no_rss(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert sample(tmp_path, proc.pid).trainer_rss_bytes is None


async def test_the_plugin_publishes_a_sample_per_run(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "state.db")
    run_dir = tmp_path / "run-a"
    run_dir.mkdir()
    run_id = await store.call(store.store.ensure_run, str(run_dir), "run-a")
    status = StatusChanged(run="run-a", status="training", source="s", pid=os.getpid())
    await store.call(store.store.commit_batch, run_id, [status], None)
    bus = EventBus()
    seen: list[ResourceSample] = []
    bus.subscribe(ResourceSample, seen.append)
    ctx = PluginContext(
        name="resources",
        bus=bus,
        store=store,
        config=ResourcesConfig(interval_s=3600),
        settings=Settings(),
        log=None,
        run_dirs={"run-a": run_dir},
    )
    plugin = ResourcesPlugin(ctx)
    await plugin.start()
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.02)
    await plugin.stop()
    await bus.close()
    await store.close()
    assert len(seen) == 1
    assert seen[0].disk_path == str(run_dir)
    assert seen[0].trainer_pid == os.getpid()


def test_finished_runs_on_one_disk_cost_one_sample_and_each_trainer_one(tmp_path: Path) -> None:
    runs: list[tuple[Path, int | None]] = []
    for i in range(50):
        run_dir = tmp_path / f"run-{i}"
        run_dir.mkdir()
        runs.append((run_dir, None))
    trainer = tmp_path / "training-now"
    trainer.mkdir()
    runs.append((trainer, os.getpid()))
    runs.append((tmp_path / "deleted-run", None))
    samples = samples_for(runs)
    assert [(s.disk_path, s.trainer_pid) for s in samples] == [(str(trainer), os.getpid())]
    only_finished = samples_for(runs[:50])
    assert len(only_finished) == 1 and only_finished[0].trainer_pid is None
