"""Samples disk, memory and load (and the trainer process, when a status file names its PID).

One sample per trainer that is running, and one per other volume holding runs: ten thousand
finished runs on one disk cost one sample, not ten thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import psutil

from tunewatch.daemon.config import PositiveFloat
from tunewatch.daemon.events import FINISHED_STATUSES, ResourceSample
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


def samples_for(runs: Sequence[tuple[Path, int | None]]) -> list[ResourceSample]:
    """Samples for (run directory, trainer pid or None) pairs: one per trainer, and one per
    volume that holds runs but no running trainer. Missing directories are skipped."""
    devices: dict[int, Path] = {}
    sampled_devices: set[int] = set()
    found: list[ResourceSample] = []
    for run_dir, pid in runs:
        try:
            device = os.stat(run_dir).st_dev
        except OSError:
            continue
        devices.setdefault(device, run_dir)
        if pid is not None:
            found.append(sample(run_dir, pid))
            sampled_devices.add(device)
    found.extend(sample(path, None) for dev, path in devices.items() if dev not in sampled_devices)
    return found


class ResourcesPlugin:
    """Publishes `ResourceSample`s (see `samples_for`) every `interval_s`."""

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
        wanted = [
            (Path(run.path), run.pid if run.status not in FINISHED_STATUSES else None)
            for run in runs
        ]
        self.ctx.bus.publish_many(await asyncio.to_thread(samples_for, wanted))
