"""The resources plugin: samples disk, memory, load, each running trainer and each GPU, and warns
before a full disk or memory kills a run.

Every `interval_s` it publishes `ResourceSample`s (one per running trainer and one per other
volume holding runs) and, once per episode, a `ResourceAlert` when a volume will fill within
`disk_warn_hours` (see `disk_forecast`), memory nears `memory_warn_fraction` (`memory_watch`) or
a GPU's memory nears `gpu_warn_fraction` (`gpu`); `ResourceRecovered` when it is over
(`episodes`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import ClassVar

import structlog

from tunewatch.daemon.events import ResourceAlert
from tunewatch.daemon.plugin import PluginContext
from tunewatch.daemon.store import Store
from tunewatch.plugins.resources.config import ResourcesConfig
from tunewatch.plugins.resources.episodes import EpisodeGate, Opened
from tunewatch.plugins.resources.gpu import GpuReader
from tunewatch.plugins.resources.reclaim import RunBest
from tunewatch.plugins.resources.watch import ResourceWatch

__all__ = ["ResourceWatch", "ResourcesConfig", "ResourcesPlugin", "bests_of"]


class ResourcesPlugin:
    """Samples every `interval_s` and publishes samples, alerts and recoveries."""

    name: ClassVar[str] = "resources"
    Config: ClassVar[type[ResourcesConfig]] = ResourcesConfig

    def __init__(self, ctx: PluginContext, *, watch: ResourceWatch | None = None) -> None:
        self.ctx = ctx
        self.config: ResourcesConfig = ctx.config
        self.log = ctx.log if ctx.log is not None else structlog.get_logger(__name__)
        gpu = GpuReader(self.log) if self.config.gpu else None
        self.watch = watch if watch is not None else ResourceWatch(self.config, gpu=gpu)
        self.gate = EpisodeGate(
            recover_samples=self.config.recover_samples, cooldown_s=self.config.cooldown_s
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.config.enabled:
            self._task = self.ctx.spawn(self._loop(), name="sample")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.watch.gpu is not None:
            self.watch.gpu.close()

    async def _loop(self) -> None:
        while True:
            await self.sample_once()
            await asyncio.sleep(self.config.interval_s)

    async def sample_once(self) -> None:
        """One round: samples, then the alerts that open and the recoveries that close."""
        runs = await self.ctx.store.call(self.ctx.store.store.runs)
        # The store's worker thread, not `asyncio.to_thread`: a thread of its own would get a
        # malloc arena of its own, measured at +25 MB of daemon RSS for ~1 ms of work a round.
        observed = await self.ctx.store.call(self.watch.observe, runs)
        self.ctx.bus.publish_many(observed.samples)
        opened, recovered = self.gate.update(observed.findings, observed.time)
        alerts = [await self._alert(o) for o in opened]
        self.ctx.bus.publish_many([*alerts, *recovered])

    async def _alert(self, opened: Opened) -> ResourceAlert:
        finding = opened.finding
        advice = finding.advice
        if finding.resource == "disk" and finding.path is not None:
            names = self.watch.training_runs(finding.path)
            store = self.ctx.store
            bests = await store.call(bests_of, store.store, names)
            advice = await store.call(self.watch.reclaim_advice, finding.path, bests)
        return ResourceAlert(
            resource=finding.resource,
            severity=finding.severity,
            summary=finding.summary,
            advice=advice,
            path=finding.path,
            run=finding.run,
            value=finding.value,
            push=opened.push,
        )


def bests_of(store: Store, runs: Sequence[str]) -> dict[str, RunBest]:
    """Each run's current best, from its history: the newest `best_model` event (its step
    and checkpoint) and the trainer's newest `best_model_checkpoint`."""
    bests: dict[str, RunBest] = {}
    for run in runs:
        step: int | None = None
        names: dict[str, str] = {}
        for stored in store.history(run=run, kinds=("best_model", "checkpoint")):
            data = stored.row.data
            if stored.row.kind == "best_model":
                step = data.get("step")
                names["best_model"] = str(data.get("checkpoint") or "")
            elif data.get("best_checkpoint"):
                names["trainer"] = str(data["best_checkpoint"])
        folders = {name.rstrip("/").rsplit("/", 1)[-1] for name in names.values() if name}
        bests[run] = RunBest(
            steps=frozenset({step} if isinstance(step, int) else ()), names=frozenset(folders)
        )
    return bests
