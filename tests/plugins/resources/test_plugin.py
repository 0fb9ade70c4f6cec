"""The resources plugin end to end: real samples, a real store and bus, a real small disk that
real checkpoints fill."""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import Settings
from tunewatch.daemon.events import (
    BestModelFound,
    Event,
    ResourceAlert,
    ResourceRecovered,
    ResourceSample,
    StatusChanged,
)
from tunewatch.daemon.plugin import PluginContext
from tunewatch.daemon.store import AsyncStore
from tunewatch.plugins.resources import ResourcesConfig, ResourcesPlugin, ResourceWatch

from .conftest import MiB, run_row, write_checkpoint


@dataclass
class Daemon:
    """The plugin on a real store and bus, with what it published."""

    store: AsyncStore
    bus: EventBus
    seen: list[Event] = field(default_factory=list)

    def plugin(
        self, config: ResourcesConfig, watch: ResourceWatch | None = None
    ) -> ResourcesPlugin:
        ctx = PluginContext(
            name="resources",
            bus=self.bus,
            store=self.store,
            config=config,
            settings=Settings(),
            log=None,
            run_dirs={},
        )
        return ResourcesPlugin(ctx, watch=watch)

    async def add_run(self, run_dir: Path, name: str, **status: object) -> None:
        run_id = await self.store.call(self.store.store.ensure_run, str(run_dir), name)
        event = StatusChanged(run=name, source="s", status="training", **status)  # type: ignore[arg-type]
        await self.store.call(self.store.store.commit_batch, run_id, [event], None)

    async def round(self, plugin: ResourcesPlugin) -> list[Event]:
        before = len(self.seen)
        await plugin.sample_once()
        await self.bus.drain()
        return [e for e in self.seen[before:] if not isinstance(e, ResourceSample)]


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    store = await AsyncStore.open(tmp_path / "state.db")
    bus = EventBus()
    found = Daemon(store, bus)
    for kind in (ResourceSample, ResourceAlert, ResourceRecovered):
        bus.subscribe(kind, found.seen.append)
    yield found
    await bus.close()
    await store.close()


async def test_the_plugin_publishes_a_sample_per_run(tmp_path: Path, daemon: Daemon) -> None:
    run_dir = tmp_path / "run-a"
    run_dir.mkdir()
    await daemon.add_run(run_dir, "run-a", pid=os.getpid())
    plugin = daemon.plugin(ResourcesConfig(interval_s=3600, gpu=False))
    await plugin.start()
    for _ in range(100):
        if daemon.seen:
            break
        await asyncio.sleep(0.02)
    await plugin.stop()
    (sample,) = daemon.seen
    assert isinstance(sample, ResourceSample)
    assert sample.disk_path == str(run_dir) and sample.trainer_pid == os.getpid()
    assert 0.0 < sample.disk_used_fraction < 1.0 and 0.0 < sample.memory_used_fraction < 1.0
    assert sample.trainer_rss_bytes is not None and sample.trainer_rss_bytes > 10 * MiB


def test_finished_runs_on_one_disk_cost_one_sample_and_each_trainer_one(tmp_path: Path) -> None:
    runs = []
    for i in range(50):
        (tmp_path / f"run-{i}").mkdir()
        runs.append(run_row(tmp_path / f"run-{i}", f"run-{i}", status="completed", pid=1))
    trainer = tmp_path / "training-now"
    trainer.mkdir()
    runs.append(run_row(trainer, "now", pid=os.getpid()))
    runs.append(run_row(tmp_path / "deleted-run", "deleted"))
    watch = ResourceWatch(ResourcesConfig())
    samples = watch.observe(runs).samples
    assert [(s.disk_path, s.trainer_pid) for s in samples] == [(str(trainer), os.getpid())]
    (only,) = watch.observe(runs[:50]).samples
    assert only.trainer_pid is None  # a finished run's PID is not its trainer any more


def test_a_trainer_that_is_gone_has_no_rss(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (sample,) = ResourceWatch(ResourcesConfig()).observe([run_row(tmp_path, pid=proc.pid)]).samples
    assert sample.trainer_pid == proc.pid and sample.trainer_rss_bytes is None


class Clock:
    """Real time at first, then five minutes a sampling round."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_a_small_disk_filling_with_checkpoints_is_told_once_and_recovers_when_freed(
    small_disk: Path, daemon: Daemon
) -> None:
    clock = Clock()
    run_dir = small_disk / "run a's"  # a name the rm command has to quote
    for i, step in enumerate((100, 200, 300)):
        write_checkpoint(run_dir, step, 512 * 1024, mtime=clock.now - 60 - 600 * (2 - i))
    filler = small_disk / "dataset.bin"
    filler.write_bytes(os.urandom(4 * MiB))
    await daemon.add_run(run_dir, "run-a", total_steps=1000, step=300)
    best = BestModelFound(run="run-a", step=200, metric="eval_loss", value=0.5, checkpoint=None)
    await daemon.store.call(daemon.store.store.record, best)
    config = ResourcesConfig(gpu=False, recover_samples=3)
    plugin = daemon.plugin(config, ResourceWatch(config, clock=clock))

    # 2.4 MiB free; 7 more checkpoints of 516 KiB until step 1000, every 10 min: the 5th fails.
    (alert,) = await daemon.round(plugin)
    assert isinstance(alert, ResourceAlert)
    assert (alert.resource, alert.severity, alert.path, alert.push) == (
        "disk",
        "critical",
        str(small_disk),
        True,
    )
    assert "at the rate checkpoints use it: the 5 checkpoints due by then need" in alert.summary
    assert alert.summary.startswith(f"{small_disk} fills in 4")
    # Neither the newest (300) nor the best (200): only checkpoint-100 can go.
    assert "tunewatch deletes nothing: you decide" in alert.advice
    assert "1 checkpoint can go and free 516.0 KiB: run-a/checkpoint-100. " in alert.advice
    command = alert.advice.split("To delete: ", 1)[1]
    assert shlex.split(command) == ["rm", "-r", str(run_dir / "checkpoint-100")]

    # Still filling, a new checkpoint on the way: the episode is open, nothing new is told.
    clock.now += 300
    write_checkpoint(run_dir, 400, 512 * 1024, mtime=clock.now)
    assert await daemon.round(plugin) == []

    # The person frees space: clear for three samples, then one recovery.
    filler.unlink()
    recovered = []
    for _ in range(3):
        clock.now += 300
        recovered.extend(await daemon.round(plugin))
    (recovery,) = recovered
    assert isinstance(recovery, ResourceRecovered)
    assert (recovery.resource, recovery.path, recovery.push) == ("disk", str(small_disk), True)
    assert recovery.summary.startswith(f"Disk space ({small_disk}) is fine again")

    # Filling again within the cooldown: recorded, not pushed.
    clock.now += 300
    filler.write_bytes(os.urandom(int(4.5 * MiB)))
    (again,) = await daemon.round(plugin)
    assert isinstance(again, ResourceAlert) and not again.push


async def test_alerts_and_recoveries_are_recorded_in_the_history(daemon: Daemon) -> None:
    alert = ResourceAlert(
        resource="disk",
        severity="critical",
        summary="/data fills in 40 min",
        advice="rm -r /data/run-a/checkpoint-100",
        path="/data",
        value=0.97,
    )
    recovered = ResourceRecovered(resource="disk", summary="Disk space (/data) is fine again")
    await daemon.store.call(daemon.store.store.record_many, [alert, recovered])
    rows = await daemon.store.call(
        daemon.store.store.history, kinds=("resource_alert", "resource_recovered")
    )
    assert [(r.row.kind, r.row.severity, r.row.summary) for r in rows] == [
        ("resource_alert", "critical", "/data fills in 40 min. rm -r /data/run-a/checkpoint-100"),
        ("resource_recovered", "info", "Disk space (/data) is fine again"),
    ]
    assert rows[0].row.data["path"] == "/data" and rows[0].row.data["push"] is True
