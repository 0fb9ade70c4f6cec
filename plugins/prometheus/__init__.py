"""The Prometheus exporter plugin: every watched run, its alerts and the daemon's health as
Prometheus metrics, so that a fleet of boxes running tunewatch is one Prometheus target list.

Opt-in: `[prometheus] listen = "127.0.0.1:9464"` serves /metrics (`http_server`), and
`textfile_dir` writes `tunewatch.prom` for node_exporter's textfile collector (`textfile`).
With neither, it subscribes to nothing and imports nothing more. The values start from the
store (`restore`), so a restarted daemon exports what it exported before, and follow the events
(`fleet_state`); `collector` turns them into metric families at each scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

from tunewatch.daemon.events import (
    AnomalyDetected,
    MetricsEvent,
    RecordingFailed,
    ResourceAlert,
    SourceError,
    StatusChanged,
)
from tunewatch.daemon.plugin import PluginContext
from tunewatch.plugins.prometheus.config import ListenAddress, PrometheusConfig, parse_listen
from tunewatch.plugins.prometheus.fleet_state import FleetState

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from tunewatch.plugins.prometheus.collector import DaemonVitals
    from tunewatch.plugins.prometheus.http_server import MetricsServer

__all__ = ["ListenAddress", "PrometheusConfig", "PrometheusPlugin", "parse_listen"]

TEXTFILE_NAME = "tunewatch.prom"  # node_exporter reads *.prom; the temp file is .tunewatch.prom.*


class PrometheusPlugin:
    """Keeps the exported state current and serves it (socket, textfile, or both)."""

    name: ClassVar[str] = "prometheus"
    Config: ClassVar[type[PrometheusConfig]] = PrometheusConfig

    def __init__(self, ctx: PluginContext, clock: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.config: PrometheusConfig = ctx.config
        self.log = ctx.log if ctx.log is not None else structlog.get_logger(__name__)
        self.clock = clock
        self.fleet = FleetState()
        self.registry: CollectorRegistry | None = None
        self.server: MetricsServer | None = None
        self.started = clock()
        self._unsubscribe: list[Callable[[], None]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._statuses: asyncio.Task[None] | None = None
        self._statuses_wanted = False
        self._reload: asyncio.Task[None] | None = None
        self._failing: set[str] = set()  # what is failing now (logged once, until it works)

    @property
    def on(self) -> bool:
        return bool(self.config.listen or self.config.textfile_dir)

    def textfile_path(self) -> Path | None:
        if not self.config.textfile_dir:
            return None
        return Path(self.config.textfile_dir).expanduser() / TEXTFILE_NAME

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.on:
            return  # off: no socket, no file, no subscription
        from prometheus_client.registry import CollectorRegistry

        from tunewatch.plugins.prometheus.collector import ExportLimits, FleetCollector

        await self._read_store(with_alerts=True)
        bus = self.ctx.bus
        self._unsubscribe = [
            bus.subscribe(
                MetricsEvent, self._on_points, name="prometheus:points", on_drop=self._dropped
            ),
            bus.subscribe(StatusChanged, self._on_status, name="prometheus:status"),
            bus.subscribe(SourceError, self._on_source_error, name="prometheus:source-error"),
            bus.subscribe(AnomalyDetected, self._on_anomaly, name="prometheus:anomaly"),
            bus.subscribe(ResourceAlert, self._on_resource_alert, name="prometheus:resource"),
            bus.subscribe(RecordingFailed, self._on_recording_failed, name="prometheus:recording"),
        ]
        self.registry = CollectorRegistry()
        limits = ExportLimits(self.config.forget_after_hours * 3600.0, self.config.max_runs)
        self.registry.register(FleetCollector(self.fleet, limits, self.vitals, self.clock))
        address = self.config.address()
        if address is not None:
            self._tasks.append(self.ctx.spawn(self._listen(address), name="listen"))
        if self.config.textfile_dir:
            self._tasks.append(self.ctx.spawn(self._write_textfiles(), name="textfile"))

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        for task in (*self._tasks, self._statuses, self._reload):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.server is not None:
            await self.server.close()

    def render(self) -> bytes:
        """The current metrics in the Prometheus text format."""
        from tunewatch.plugins.prometheus.collector import render

        assert self.registry is not None, "render() before start()"
        return render(self.registry)

    def vitals(self) -> DaemonVitals:
        from tunewatch.plugins.prometheus.collector import DaemonVitals

        pending = self.ctx.store.oldest_pending()
        stats = self.ctx.bus.stats()
        health = self.ctx.health() if self.ctx.health is not None else None
        plugins = {} if health is None else dict(health.plugins)
        return DaemonVitals(
            started=health.started if health is not None else self.started,
            lag_s=pending[1] if pending is not None else 0.0,
            queued=sum(s.queued for s in stats),
            dropped=sum(s.dropped for s in stats),
            recording_failed=None if health is None else health.recording_failure is not None,
            unreadable_files=None if health is None else health.unreadable_files,
            plugins=plugins,
        )

    # -- serving --------------------------------------------------------------------------------

    async def _listen(self, address: ListenAddress) -> None:
        """Listen on `address`, retrying every `retry_s` while it cannot (the port taken)."""
        from tunewatch.plugins.prometheus.http_server import MetricsServer

        server = MetricsServer(address, self.render)
        while True:
            try:
                await server.start()
            except OSError as exc:
                self._failed(
                    "listen",
                    f"cannot listen on {address}: {exc.strerror or exc}; another program may "
                    f"hold the port (`ss -ltnp 'sport = :{address.port}'`), or choose another "
                    f"[prometheus] listen. Retried every {self.config.retry_s:g} s",
                )
                await asyncio.sleep(self.config.retry_s)
                continue
            self.server = server
            self._works("listen", f"serving metrics at http://{address}/metrics")
            return

    async def _write_textfiles(self) -> None:
        while True:
            await self.write_textfile()
            await asyncio.sleep(self.config.textfile_interval_s)

    async def write_textfile(self) -> None:
        """Write `<textfile_dir>/tunewatch.prom` atomically (temp file and rename in the same
        folder, as node_exporter requires: it must never read half a file)."""
        from tunewatch.daemon.atomic import write_atomic

        path = self.textfile_path()
        assert path is not None
        data = self.render()
        try:
            # The store's worker thread does the blocking write: a thread of its own would get
            # a malloc arena of its own (+25 MB of daemon RSS measured once) for a few ms.
            await self.ctx.store.call(write_atomic, path, data)
        except OSError as exc:
            self._failed(
                "textfile",
                f"cannot write {path}: {exc.strerror or exc}; check [prometheus] textfile_dir. "
                f"Retried every {self.config.textfile_interval_s:g} s",
            )
            return
        self._works("textfile", f"writing metrics to {path}")

    def _failed(self, what: str, why: str) -> None:
        """Log a failure once (until it works again) and show it in `tunewatch plugins`."""
        if what in self._failing:
            return
        self._failing.add(what)
        self.log.error(why)
        if self.ctx.on_failure is not None:
            self.ctx.on_failure(self.name, why)

    def _works(self, what: str, message: str) -> None:
        if what in self._failing:
            self._failing.discard(what)
            self.log.info(f"{message} (working again)")
            if not self._failing and self.ctx.on_recovered is not None:
                self.ctx.on_recovered(self.name)
        else:
            self.log.info(message)

    # -- events ---------------------------------------------------------------------------------

    def _on_points(self, event: MetricsEvent) -> None:
        self.fleet.add_points(event)

    def _on_status(self, event: StatusChanged) -> None:
        self.fleet.add_status(event.run, event.status, event.total_steps, event.seq, event.time)
        # Which status wins when sources disagree is the store's decision (it was committed
        # before this was published): read it back, once for a burst of changes.
        self._statuses_wanted = True
        if self._statuses is None or self._statuses.done():
            self._statuses = asyncio.get_running_loop().create_task(self._read_statuses())

    async def _read_statuses(self) -> None:
        store = self.ctx.store
        while self._statuses_wanted:
            self._statuses_wanted = False
            try:
                rows = await store.call(store.store.runs)
            except Exception:  # the statuses the events carried stand meanwhile
                self.log.warning("cannot read the runs' statuses back", exc_info=True)
                return
            self.fleet.set_statuses({row.name: (row.status, row.total_steps) for row in rows})

    def _on_source_error(self, event: SourceError) -> None:
        self.fleet.add_source_error(event.run, event.seq, event.time)

    def _on_anomaly(self, event: AnomalyDetected) -> None:
        self.fleet.add_alert(event.run, event.kind, event.severity, event.time)

    def _on_resource_alert(self, event: ResourceAlert) -> None:
        self.fleet.add_alert(event.run, event.resource, event.severity, event.time)

    def _on_recording_failed(self, event: RecordingFailed) -> None:
        self.fleet.recording_failures += 1

    def _dropped(self) -> None:
        # Points were lost from a full queue; every one of them is in the store (events are
        # published after their commit). Re-read it; what is still queued is then skipped by
        # seq (see FleetState.restored_seq).
        if self._reload is None or self._reload.done():
            self._reload = asyncio.get_running_loop().create_task(self._reread_store())

    async def _reread_store(self) -> None:
        try:
            await self._read_store()
        except Exception:  # the counts stay low until the next restart; said in the log
            self.log.warning("points were dropped and the store cannot be re-read", exc_info=True)

    async def _read_store(self, *, with_alerts: bool = False) -> None:
        from tunewatch.plugins.prometheus.restore import read_fleet

        store = self.ctx.store
        since = self.clock() - self.config.forget_after_hours * 3600.0
        stored = await store.call(read_fleet, store.store, active_since=since)
        self.fleet.restored_seq = stored.last_seq
        self.fleet.restore(stored.runs, stored.alerts if with_alerts else {})
