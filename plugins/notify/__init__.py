"""The notify plugin: tells a person about anomalies, recoveries, best models, finished work and
resources running out.

Every alert is logged. Unless notifications are off, it also goes to the desktop (when a session
bus and a notification server exist) and to the configured remote channels, under one global cap.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

from tunewatch.daemon.config import PositiveFloat
from tunewatch.daemon.events import (
    FINISHED_STATUSES,
    AnomalyDetected,
    AnomalyResolved,
    BestModelFound,
    CaughtUp,
    CheckpointSaved,
    ComparisonFinished,
    RecordingFailed,
    RecordingResumed,
    ReportWritten,
    ResourceAlert,
    ResourceRecovered,
    SnapshotCreated,
    SourceUnreadable,
    StatusChanged,
    ValidationFinished,
)
from tunewatch.daemon.plugin import PluginContext
from tunewatch.plugins import alert_messages as messages
from tunewatch.plugins.alert_messages import Alert
from tunewatch.plugins.notify.opener import FileOpener
from tunewatch.plugins.notify.remote import RemoteChannels
from tunewatch.plugins.notify.throttle import Throttle

if TYPE_CHECKING:
    from tunewatch.plugins.notify.desktop import DesktopChannel

__all__ = ["Alert", "NotifyConfig", "NotifyPlugin"]

# Snapshots remembered in case one is announced before its best model (bounded memory).
RECENT_SNAPSHOTS = 64
# Runs whose latest best, best checkpoint and snapshot are remembered for the message that says
# they finished (the most recently active first).
REMEMBERED_RUNS = 1024
# A run's end is told this long after its finished status, so that the best found in its last
# points (judged just after they were recorded) is in the message.
FINISH_WAIT_S = 3.0
CLOSE_GRACE_S = 2.0


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    enabled: bool = True
    desktop: bool = True
    remote_urls: tuple[str, ...] = ()
    max_per_window: int = 5  # 0: no cap
    window_s: PositiveFloat = 60.0
    best_wait_s: float = 120.0  # 0: do not wait for the snapshot
    send_timeout_s: PositiveFloat = 10.0
    retry_s: PositiveFloat = 30.0
    retry_max_s: PositiveFloat = 900.0


RunKey = tuple[str, int]


class NotifyPlugin:
    """Turns events into alerts: logs each, then sends it to the desktop and remote channels."""

    name: ClassVar[str] = "notify"
    Config: ClassVar[type[NotifyConfig]] = NotifyConfig

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self.config: NotifyConfig = ctx.config
        self.log = ctx.log if ctx.log is not None else structlog.get_logger(__name__)
        self.throttle = Throttle(self.config.max_per_window, self.config.window_s)
        self.opener = FileOpener(self.log)
        self.desktop: DesktopChannel | None = None  # created only when notifications are on
        self.remote: RemoteChannels | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self._waiting_best: dict[RunKey, tuple[BestModelFound, asyncio.Task[None]]] = {}
        self._snapshots: OrderedDict[RunKey, str] = OrderedDict()
        self._flush_task: asyncio.Task[None] | None = None
        # Per run: its latest best, the trainer's best checkpoint, the latest snapshot.
        self._ends: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._history_end: int | None = None  # seq where start-up history ends (CaughtUp)
        self._finishing: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def doctor_checks(cls, config: NotifyConfig, settings: Any) -> list[Any]:
        from tunewatch.plugins.notify.doctor import checks

        return checks(config)

    async def start(self) -> None:
        if not self.config.enabled:
            return
        self._start_channels()
        bus = self.ctx.bus
        self._unsubscribe = [
            bus.subscribe(AnomalyDetected, self.on_anomaly, name="notify:anomaly"),
            bus.subscribe(AnomalyResolved, self.on_recovery, name="notify:recovery"),
            bus.subscribe(BestModelFound, self.on_best_model, name="notify:best"),
            bus.subscribe(SnapshotCreated, self.on_snapshot, name="notify:snapshot"),
            bus.subscribe(ValidationFinished, self.on_validation, name="notify:validation"),
            bus.subscribe(ComparisonFinished, self.on_comparison, name="notify:comparison"),
            bus.subscribe(ReportWritten, self.on_report, name="notify:report"),
            bus.subscribe(ResourceAlert, self.on_resource_alert, name="notify:resource"),
            bus.subscribe(ResourceRecovered, self.on_resource_recovered, name="notify:resource"),
            bus.subscribe(RecordingFailed, self.on_recording_failed, name="notify:recording"),
            bus.subscribe(RecordingResumed, self.on_recording_resumed, name="notify:recording"),
            bus.subscribe(SourceUnreadable, self.on_source_unreadable, name="notify:source"),
            bus.subscribe(StatusChanged, self.on_status, name="notify:status"),
            bus.subscribe(CheckpointSaved, self.on_checkpoint, name="notify:checkpoint"),
            bus.subscribe(CaughtUp, self.on_caught_up, name="notify:caught-up"),
        ]

    def _start_channels(self) -> None:
        if not self.ctx.notifications:
            self.log.info("notifications are off: alerts go to the log only")
            return
        cfg = self.config
        if cfg.desktop:
            # Imported here: desktop-notifier and dbus-fast cost a few MB of the daemon's memory,
            # wasted on a headless box or with notifications off.
            from tunewatch.plugins.notify.desktop import DesktopChannel

            self.desktop = DesktopChannel(
                self.log,
                timeout_s=cfg.send_timeout_s,
                retry_s=cfg.retry_s,
                retry_max_s=cfg.retry_max_s,
                opener=self.opener.open,
            )
            self.desktop.start()
        if cfg.remote_urls:
            self.remote = RemoteChannels(cfg.remote_urls, self.log, timeout_s=cfg.send_timeout_s)
            self.remote.start()

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        # A run that just finished is still told (after its short wait); a best model still
        # waiting for its snapshot, and alerts held by the cap, are told now.
        await asyncio.gather(*self._finishing, return_exceptions=True)
        timers = [timer for _best, timer in self._waiting_best.values()]
        for best, timer in list(self._waiting_best.values()):
            timer.cancel()
            self._emit(messages.best_model_alert(best, None))
        self._waiting_best.clear()
        if self._flush_task is not None:
            timers.append(self._flush_task)
            self._flush_task.cancel()
        await asyncio.gather(*timers, return_exceptions=True)
        self._send_summary(self.throttle.drain())
        if self.desktop is not None:
            await self.desktop.close(CLOSE_GRACE_S)
        if self.remote is not None:
            await self.remote.close(CLOSE_GRACE_S)
        await self.opener.close()

    # -- events ---------------------------------------------------------------------------------

    def on_anomaly(self, event: AnomalyDetected) -> None:
        if event.push:  # the rest is recorded (`tunewatch events`) and summarised, not pushed
            self._emit(messages.anomaly_alert(event, self._run_dir(event.run)))

    def on_recovery(self, event: AnomalyResolved) -> None:
        if event.push:
            self._emit(messages.recovery_alert(event, self._run_dir(event.run)))

    def on_validation(self, event: ValidationFinished) -> None:
        self._emit(messages.validation_alert(event))

    def on_comparison(self, event: ComparisonFinished) -> None:
        self._emit(messages.comparison_alert(event))

    def on_report(self, event: ReportWritten) -> None:
        self._emit(messages.report_alert(event))

    def on_resource_alert(self, event: ResourceAlert) -> None:
        if event.push:  # an episode back within the cooldown is recorded, not pushed
            self._emit(messages.resource_alert(event))

    def on_resource_recovered(self, event: ResourceRecovered) -> None:
        if event.push:
            self._emit(messages.resource_recovered_alert(event))

    def on_recording_failed(self, event: RecordingFailed) -> None:
        self._emit(messages.recording_failed_alert(event))

    def on_recording_resumed(self, event: RecordingResumed) -> None:
        self._emit(messages.recording_resumed_alert(event))

    def on_source_unreadable(self, event: SourceUnreadable) -> None:
        self._emit(messages.source_unreadable_alert(event, self._run_dir(event.run)))

    def on_best_model(self, event: BestModelFound) -> None:
        """Wait up to `best_wait_s` for the snapshot, so one notification can say it is saved."""
        self._remember(event.run, best=event)
        if event.historical:
            # Found in what was read at start-up (thousands of finished runs): old news, and
            # `tunewatch events` already has it. Neither a push nor a line in the log.
            return
        key = (event.run, event.step)
        snapshot = self._snapshots.pop(key, None)
        if snapshot is not None or self.config.best_wait_s <= 0:
            self._emit(messages.best_model_alert(event, snapshot))
            return
        previous = self._waiting_best.pop(key, None)
        if previous is not None:
            previous[1].cancel()
        timer = asyncio.create_task(self._best_without_snapshot(key), name="notify-best-wait")
        self._waiting_best[key] = (event, timer)

    def on_snapshot(self, event: SnapshotCreated) -> None:
        self._remember(event.run, snapshot=event.path)
        key = (event.run, event.step)
        waiting = self._waiting_best.pop(key, None)
        if waiting is None:
            self._snapshots[key] = event.path
            while len(self._snapshots) > RECENT_SNAPSHOTS:
                self._snapshots.popitem(last=False)
            return
        best, timer = waiting
        timer.cancel()
        self._emit(messages.best_model_alert(best, event.path))

    async def _best_without_snapshot(self, key: RunKey) -> None:
        await asyncio.sleep(self.config.best_wait_s)
        waiting = self._waiting_best.pop(key, None)
        if waiting is not None:
            self._emit(messages.best_model_alert(waiting[0], None))

    def on_checkpoint(self, event: CheckpointSaved) -> None:
        if event.best_checkpoint is not None:
            self._remember(event.run, best_checkpoint=event.best_checkpoint)

    def on_caught_up(self, event: CaughtUp) -> None:
        self._history_end = event.last_seq

    def on_status(self, event: StatusChanged) -> None:
        """A run that finished (or failed) now is told, with its final and best metrics; one
        found finished in start-up history is not news."""
        if event.status not in FINISHED_STATUSES:
            return
        if self._history_end is None or event.seq <= self._history_end:
            return
        task = asyncio.create_task(self._tell_finished(event), name="notify-finished")
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _tell_finished(self, event: StatusChanged) -> None:
        await asyncio.sleep(FINISH_WAIT_S)
        store = self.ctx.store
        final = await store.call(store.store.latest_of, event.run, messages.FINAL_METRICS)
        known = self._ends.get(event.run, {})
        end = messages.RunEnd(
            step=event.step,
            total_steps=event.total_steps,
            final={name: latest.value for name, latest in final.items()},
            best=known.get("best"),
            best_checkpoint=known.get("best_checkpoint"),
            snapshot=known.get("snapshot"),
        )
        self._emit(messages.finished_alert(event, end, self._run_dir(event.run)))

    def _remember(self, run: str, **facts: object) -> None:
        self._ends.setdefault(run, {}).update(facts)
        self._ends.move_to_end(run)
        while len(self._ends) > REMEMBERED_RUNS:
            self._ends.popitem(last=False)

    def _run_dir(self, run: str) -> str | None:
        path = self.ctx.run_dirs.get(run)
        return str(path) if path is not None else None

    # -- delivery -------------------------------------------------------------------------------

    def _emit(self, alert: Alert) -> None:
        """Log `alert`, then send it (or hold it under the cap). Never blocks, never raises."""
        log = self.log.warning if alert.critical else self.log.info
        log("alert", title=alert.title, body=alert.body, run=alert.run, kind=alert.kind)
        if self.desktop is None and self.remote is None:
            return
        now = time.monotonic()
        self._send_summary(self.throttle.due(now))
        if self.throttle.offer(alert, now):
            self._fan_out(alert)
            return
        self._arm_flush()

    def _fan_out(self, alert: Alert) -> None:
        if self.desktop is not None:
            self.desktop.submit(alert)
        if self.remote is not None:
            self.remote.submit(alert)

    def _arm_flush(self) -> None:
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.create_task(self._flush_when_due(), name="notify-flush")

    async def _flush_when_due(self) -> None:
        while (flush_at := self.throttle.flush_at()) is not None:
            await asyncio.sleep(max(flush_at - time.monotonic(), 0.0))
            self._send_summary(self.throttle.due(time.monotonic()))

    def _send_summary(self, summary: Alert | None) -> None:
        if summary is None:
            return
        self.log.info("alerts collapsed under the cap", title=summary.title, body=summary.body)
        self._fan_out(summary)
