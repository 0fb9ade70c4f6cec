"""Samples disk, memory and load (and the trainer process, when a status file names its PID)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import psutil

from tunewatch.daemon.config import PositiveFloat
from tunewatch.daemon.events import ResourceSample
from tunewatch.daemon.plugin import PluginContext


@dataclass(frozen=True, slots=True)
class ResourcesConfig:
    enabled: bool = True
    interval_s: PositiveFloat = 300.0


def sample(disk_path: Path, trainer_pid: int | None) -> ResourceSample:
    usage = shutil.disk_usage(disk_path)
    rss: int | None = None
    if trainer_pid is not None:
        try:
            rss = psutil.Process(trainer_pid).memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            rss = None
    return ResourceSample(
        disk_path=str(disk_path),
        disk_used_fraction=usage.used / usage.total if usage.total else 0.0,
        disk_free_bytes=usage.free,
        memory_used_fraction=psutil.virtual_memory().percent / 100.0,
        load_1m=os.getloadavg()[0],
        trainer_pid=trainer_pid,
        trainer_rss_bytes=rss,
    )


def sample_if_present(run_dir: Path, trainer_pid: int | None) -> ResourceSample | None:
    return sample(run_dir, trainer_pid) if run_dir.exists() else None


class ResourcesPlugin:
    """Publishes a `ResourceSample` for each run's disk every `interval_s`."""

    name: ClassVar[str] = "resources"
    Config: ClassVar[type[ResourcesConfig]] = ResourcesConfig

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self.config: ResourcesConfig = ctx.config
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.config.enabled:
            self._task = self.ctx.spawn(self._loop(), name="sample")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await self.sample_once()
            await asyncio.sleep(self.config.interval_s)

    async def sample_once(self) -> None:
        runs = await self.ctx.store.call(self.ctx.store.store.runs)
        for run in runs:
            event = await asyncio.to_thread(sample_if_present, Path(run.path), run.pid)
            if event is not None:
                self.ctx.bus.publish(event)
