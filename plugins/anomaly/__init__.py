"""The anomaly plugin: runs the detectors over every logged point and publishes what they find.

Detector state and the position in the store's metric log are persisted per run, so a restart
neither re-alerts nor forgets: points recorded while the plugin was down are replayed from the
store, and the state is saved before any alert is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import groupby
from operator import attrgetter
from typing import Any, ClassVar

import psutil

from tunewatch.daemon.events import (
    AnomalyDetected,
    AnomalyResolved,
    BestModelFound,
    Event,
    MetricsEvent,
    MetricsLogged,
)
from tunewatch.daemon.plugin import PluginContext
from tunewatch.daemon.store import MetricPoint
from tunewatch.plugins.anomaly.base import Finding, NewBest, Point
from tunewatch.plugins.anomaly.config import AnomalyConfig
from tunewatch.plugins.anomaly.gate import RunDetectors
from tunewatch.plugins.anomaly.stall import TRAINING_STATUSES, StallCheck
from tunewatch.plugins.anomaly.timeline import StepTimeline

# Without an alert, state is saved at most this often; an alert always saves first.
SAVE_INTERVAL_S = 5.0
# Points judged per step of a replay (~30 ms of the event loop at ~14 µs a point).
REPLAY_PAGE = 2_000
# Events queued for the detectors. A catch-up publishes faster than the detectors run; past
# this the bus drops events and the plugin reads the points from the store instead, so memory
# stays bounded (a batch holds up to ~5,000 points) and no point is skipped.
QUEUE_EVENTS = 32


@dataclass
class _RunTracking:
    detectors: RunDetectors
    cursor: int = 0  # seq of the last point fed to the detectors
    dirty: bool = False
    stall: tuple[str, int] | None = None  # (metric, step) of an active stall alert
    last_train_best_time: float = 0.0
    # Which values are new: copies from a second source are judged once, a resume again.
    timeline: StepTimeline = field(default_factory=StepTimeline)


class AnomalyPlugin:
    """Feeds every logged point to the run's detectors; publishes anomalies, recoveries, bests."""

    name: ClassVar[str] = "anomaly"
    Config: ClassVar[type[AnomalyConfig]] = AnomalyConfig

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self.config: AnomalyConfig = ctx.config
        self.runs: dict[str, _RunTracking] = {}
        self.stall = StallCheck(self.config)
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: list[Any] = []
        self._last_save = 0.0
        # Points reach the detectors one at a time, in seq order, from the bus or the store.
        self._feeding = asyncio.Lock()
        self._replay_wanted = False
        self._replay_task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        # Subscribe first so nothing published during the replay is missed; points the replay
        # already covered are recognised by their seq and skipped.
        self._unsubscribe.append(
            self.ctx.bus.subscribe(
                MetricsEvent,
                self.on_metrics,
                name="anomaly",
                maxsize=QUEUE_EVENTS,
                overflow="drop_newest",
                on_drop=self._on_dropped,
            )
        )
        await self.replay()
        self._tasks.append(asyncio.create_task(self._stall_loop(), name="anomaly-stall"))
        self._tasks.append(asyncio.create_task(self._save_loop(), name="anomaly-save"))

    async def stop(self) -> None:
        async with self._feeding:
            # No point is between its verdict and the publishing of it now, so cancelling the
            # bus handler and the replay task cannot lose an alert.
            for unsubscribe in self._unsubscribe:
                unsubscribe()
            if self._replay_task is not None:
                self._replay_task.cancel()
        for task in [*self._tasks, self._replay_task]:
            if task is None:
                continue
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # What was recorded before the stop is judged now rather than at the next start, so
        # that `tunewatch run --once` reports what it read; within the bus's drain time, so a
        # stop in the middle of a long catch-up still ends in time (the rest waits for a start).
        await self.replay(deadline=time.monotonic() + self.ctx.settings.daemon.drain_timeout_s)

    # -- state ----------------------------------------------------------------------------------

    async def _tracking(self, run: str) -> _RunTracking:
        tracking = self.runs.get(run)
        if tracking is not None:
            return tracking
        tracking = _RunTracking(RunDetectors(self.config))
        saved = await self.ctx.store.call(self.ctx.store.store.plugin_get, self.name, f"run:{run}")
        if saved:
            try:
                data = json.loads(saved)
                tracking.detectors.restore(data["detectors"])
                tracking.cursor = int(data["cursor"])
                stall = data.get("stall")
                tracking.stall = (str(stall[0]), int(stall[1])) if stall else None
                tracking.last_train_best_time = float(data.get("last_train_best_time", 0.0))
                # A state saved before segments kept only a newest step per metric, which may be
                # the very bogus step that hid every later value: it is not trusted, and the
                # timeline starts afresh at the saved cursor.
                if "timeline" in data:
                    tracking.timeline.restore(data["timeline"])
            except (ValueError, KeyError, TypeError) as exc:
                # An old or damaged state: start the detectors afresh, but keep the position so
                # that history is not replayed into a burst of stale alerts.
                self.ctx.log.warning(
                    "detector state not restored; starting fresh", run=run, error=str(exc)
                )
                tracking = _RunTracking(RunDetectors(self.config), _saved_cursor(saved))
        self.runs[run] = tracking
        return tracking

    async def _save(self, run: str, tracking: _RunTracking) -> None:
        data = json.dumps(
            {
                "cursor": tracking.cursor,
                "detectors": tracking.detectors.state(),
                "stall": list(tracking.stall) if tracking.stall else None,
                "last_train_best_time": tracking.last_train_best_time,
                "timeline": tracking.timeline.state(),
            }
        )
        await self.ctx.store.call(self.ctx.store.store.plugin_put, self.name, f"run:{run}", data)
        tracking.dirty = False

    async def save_all(self) -> None:
        for run, tracking in self.runs.items():
            if tracking.dirty:
                await self._save(run, tracking)
        self._last_save = time.monotonic()

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(SAVE_INTERVAL_S)
            await self.save_all()

    # -- points ---------------------------------------------------------------------------------

    async def replay(self, deadline: float | None = None) -> None:
        """Feed the points recorded after each run's saved cursor (e.g. while tunewatch was off),
        all of them, or those judged by `deadline` (monotonic seconds)."""
        async with self._feeding:
            runs = await self.ctx.store.call(self.ctx.store.store.runs)
            for run in runs:
                tracking = await self._tracking(run.name)
                while deadline is None or time.monotonic() < deadline:
                    points: list[MetricPoint] = await self.ctx.store.call(
                        self.ctx.store.store.metrics, run.id, tracking.cursor, None, REPLAY_PAGE
                    )
                    await self._feed(run.name, ((p.seq, p.source, _point(p)) for p in points))
                    if len(points) < REPLAY_PAGE:
                        break
            await self.save_all()

    def _on_dropped(self) -> None:
        # Events are published after their commit, so every dropped point is in the store. The
        # replay waits for the point being fed, then runs before any queued event (the lock is
        # fair), and moves the cursor past everything queued, which is then skipped by seq.
        self._replay_wanted = True
        if self._replay_task is None or self._replay_task.done():
            self._replay_task = asyncio.create_task(self._replay_dropped(), name="anomaly-replay")

    async def _replay_dropped(self) -> None:
        while self._replay_wanted:
            self._replay_wanted = False
            await self.replay()

    async def on_metrics(self, event: MetricsEvent) -> None:
        async with self._feeding:
            for run, points in groupby(event.points(), key=attrgetter("run")):
                await self._feed(run, ((p.seq, p.source, _point(p)) for p in points))

    async def _feed(self, run: str, points: Iterable[tuple[int, str, Point]]) -> None:
        """Judge one run's points in order, then publish what they raised.

        Of the new bests in one batch only the last per metric is announced: the others were
        already beaten by the time tunewatch read them (a catch-up of a long history), and a
        person wants the best model, not a notification for each step of the way.
        """
        tracking = await self._tracking(run)
        events: list[Event] = []
        bests: dict[str, tuple[NewBest, float]] = {}
        for seq, source, point in points:
            if seq and seq <= tracking.cursor:
                continue  # already seen (replayed, or recorded before a restart)
            tracking.cursor = max(tracking.cursor, seq)
            tracking.dirty = True
            fresh = tracking.timeline.fresh(source, point)
            if fresh is None:
                continue
            verdict = tracking.detectors.update(fresh)
            events.extend(_anomaly(run, a.finding) for a in verdict.alerts)
            events.extend(
                AnomalyResolved(run=run, step=r.step, kind=r.kind, metric=r.metric)
                for r in verdict.recoveries
            )
            if verdict.new_best is not None:
                bests[verdict.new_best.metric] = (verdict.new_best, fresh.time)
        for best, when in bests.values():
            if self._announce_best(best.metric, tracking, when):
                events.append(
                    BestModelFound(
                        run=run,
                        step=best.step,
                        metric=best.metric,
                        value=best.value,
                        checkpoint=None,
                    )
                )
        if not events:
            return
        # Saved before publishing: after a crash the alert is not sent twice.
        await self._save(run, tracking)
        self.ctx.bus.publish_many(events)

    def _announce_best(self, metric: str, tracking: _RunTracking, now: float) -> bool:
        if metric.startswith("eval"):
            return True
        # A train-loss best comes at nearly every step early in a run: announce it (and so
        # snapshot it) at most once per interval.
        if now - tracking.last_train_best_time < self.config.best_train_interval_s:
            return False
        tracking.last_train_best_time = now
        return True

    # -- stalls ---------------------------------------------------------------------------------

    async def _stall_loop(self) -> None:
        interval = max(5.0, min(60.0, self.config.stall_minutes * 60 / 4))
        while True:
            await asyncio.sleep(interval)
            await self.check_stalls()

    async def check_stalls(self, now: float | None = None) -> list[Event]:
        now = time.time() if now is None else now
        store = self.ctx.store
        published: list[Event] = []
        newest = await store.call(store.store.newest_points)
        for run in await store.call(store.store.runs):
            known = self.runs.get(run.name)
            if run.status not in TRAINING_STATUSES and (known is None or known.stall is None):
                continue  # cannot stall, and no stall to resolve: skip it (thousands of runs)
            last_step, last_time = newest.get(run.id, (0, None))
            alive = _pid_alive(run.pid) if run.pid else None
            finding = self.stall.check(
                now, last_time, run.status, run.pid, alive, last_step=last_step
            )
            tracking = await self._tracking(run.name)
            event: Event | None = None
            if finding is not None and tracking.stall is None:
                tracking.stall = (finding.metric, finding.step)
                event = _anomaly(run.name, finding)
            elif finding is None and tracking.stall is not None:
                metric, step = tracking.stall
                tracking.stall = None
                step = last_step or step
                event = AnomalyResolved(run=run.name, step=step, kind="stall", metric=metric)
            if event is not None:
                await self._save(run.name, tracking)  # before publishing, as for any alert
                published.append(event)
        self.ctx.bus.publish_many(published)
        return published


def _point(logged: MetricPoint | MetricsLogged) -> Point:
    return Point(logged.step, logged.metrics, logged.time)


def _saved_cursor(saved: str) -> int:
    try:
        return int(json.loads(saved).get("cursor", 0))
    except (ValueError, AttributeError, TypeError):
        return 0


def _anomaly(run: str, finding: Finding) -> AnomalyDetected:
    return AnomalyDetected(
        run=run,
        step=finding.step,
        kind=finding.kind,
        severity=finding.severity,
        metric=finding.metric,
        value=finding.value,
        expected=finding.expected,
        detail=finding.detail,
    )


def _pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
