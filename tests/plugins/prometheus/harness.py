"""The exporter on a real store, bus and history recorder, and its output parsed back with
prometheus_client's own parser of the text format."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import Settings
from tunewatch.daemon.events import Event, RunEvent
from tunewatch.daemon.instance_lock import DaemonHealth
from tunewatch.daemon.plugin import PluginContext, PluginHost
from tunewatch.daemon.recorder import HistoryRecorder
from tunewatch.daemon.store import AsyncStore
from tunewatch.plugins.prometheus import PrometheusConfig, PrometheusPlugin

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def parse(text: str) -> Samples:
    """Sample name -> sorted labels -> value, as a Prometheus server would read them."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get(name, {}).get(tuple(sorted(labels.items())))


@dataclass
class Exporter:
    """A running exporter and the daemon parts around it."""

    store: AsyncStore
    bus: EventBus
    plugin: PrometheusPlugin
    failures: list[str] = field(default_factory=list)

    async def commit(self, run: str, *events: RunEvent) -> None:
        """What the ingest does: commit the run's events, then publish them."""
        run_id = await self.store.call(self.store.store.ensure_run, f"/runs/{run}", run)
        await self.store.commit(run_id, list(events), None)
        self.bus.publish_many(events)
        await self.settle()

    async def publish(self, *events: Event) -> None:
        self.bus.publish_many(events)
        await self.settle()

    async def settle(self) -> None:
        assert await self.bus.drain(10.0)
        await asyncio.sleep(0)  # a status read back from the store
        for _ in range(100):
            task = self.plugin._statuses
            if task is None or task.done():
                break
            await asyncio.sleep(0.01)

    def scrape(self) -> Samples:
        return parse(self.plugin.render().decode())


@asynccontextmanager
async def exporter(
    db: Path,
    config: PrometheusConfig | None = None,
    *,
    clock: Callable[[], float] = time.time,
    **context: Any,
) -> AsyncIterator[Exporter]:
    """The plugin started as the daemon starts it (textfile mode unless `config` says)."""
    config = config or PrometheusConfig(textfile_dir=str(db.parent / "textfile"))
    store = await AsyncStore.open(db)
    bus = EventBus()
    recorder = HistoryRecorder(store, bus)
    failures: list[str] = []
    host = PluginHost()  # the daemon's record of failed plugins, as `tunewatch plugins` shows

    def failed(plugin: str, why: str) -> None:
        failures.append(why)
        host.task_failed(plugin, why)

    def health() -> DaemonHealth:
        # As in the daemon, where the started plugin is "running" unless it reported a failure.
        plugins = {"prometheus": "running", **host.states()}
        return DaemonHealth(pid=1, started=1.7e9, updated=time.time(), plugins=plugins)

    context.setdefault("health", health)
    ctx = PluginContext(
        name="prometheus",
        bus=bus,
        store=store,
        config=config,
        settings=Settings(),
        log=None,
        run_dirs={},
        on_failure=failed,
        on_recovered=host.task_recovered,
        **context,
    )
    plugin = PrometheusPlugin(ctx, clock=clock)
    await plugin.start()
    try:
        yield Exporter(store, bus, plugin, failures)
    finally:
        await plugin.stop()
        await bus.close()
        await recorder.close()
        await store.close()
