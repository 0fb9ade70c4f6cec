"""The anomaly plugin: runs the detectors over every logged point and publishes what they find.

Detector state and the position in the store's metric log are persisted per run, so a restart
neither re-alerts nor forgets: points recorded while the plugin was down are replayed from the
store, and the state is saved before any alert is published. Only the runs fed last are kept in
memory; the others wait in the store until their next point.

A run's end (it finished, or has been silent for `INACTIVE_AFTER_S`) is judged once, after its
last point: some conditions only the end can tell (an eval loss that rose to the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Iterable
from itertools import groupby
from operator import attrgetter
from typing import Any, ClassVar

import psutil

from tunewatch.daemon.events import (
    FINISHED_STATUSES,
    AnomalyDetected,
    AnomalyResolved,
    BestModelFound,
    CaughtUp,
    Event,
    MetricsBatch,
    MetricsEvent,
    MetricsLogged,
)
from tunewatch.daemon.plugin import PluginContext
from tunewatch.daemon.run_status import INACTIVE_AFTER_S
from tunewatch.daemon.store import MetricPoint, Store
from tunewatch.plugins.anomaly.base import Finding, NewBest, Point
from tunewatch.plugins.anomaly.config import AnomalyConfig
from tunewatch.plugins.anomaly.gate import RunDetectors
from tunewatch.plugins.anomaly.stall import TRAINING_STATUSES, StallCheck
from tunewatch.plugins.anomaly.tracking import (
    POSITION_PREFIX,
    STATE_PREFIX,
    RunTracking,
    SavedPosition,
    restore_tracking,
    saved_cursor,
)

# Without an alert, state is saved at most this often; an alert always saves first. A crash
# loses no alert and repeats none (the points after the saved position are judged again), so
# saving rarely only makes that replay longer: with a hundred runs logging, saving every run's
# detectors every few seconds would cost more than judging the points.
SAVE_INTERVAL_S = 60.0
# Points judged per step of a replay (~30 ms of the event loop at ~14 µs a point).
REPLAY_PAGE = 2_000
# Points queued for the detectors. A catch-up publishes faster than the detectors run; past
# this the bus drops events and the plugin reads the points from the store instead, so memory
# stays bounded and no point is skipped. Counted in points, not events: a catch-up batch holds
# thousands, a line appended live one, and a hundred runs logging at once must not overflow it.
QUEUE_POINTS = 20_000
# Run trackers kept in memory, the most recently fed (about 20 kB each): ten thousand finished
# runs would otherwise hold 200 MB for nothing. Another run's tracker is loaded from its saved
# state when its next point comes (about a millisecond); the one it replaces is saved first.
MAX_TRACKED_RUNS = 128
# Ended runs judged per hold of the feeding lock (each loaded, judged and saved: ~1-2 ms).
END_PAGE = 100


class AnomalyPlugin:
    """Feeds every logged point to the run's detectors; publishes anomalies, recoveries, bests."""

    name: ClassVar[str] = "anomaly"
    Config: ClassVar[type[AnomalyConfig]] = AnomalyConfig

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self.config: AnomalyConfig = ctx.config
        # The trackers in memory, least recently used first. Held with `_feeding` only, so that
        # none is evicted while another coroutine is still changing it.
        self.runs: OrderedDict[str, RunTracking] = OrderedDict()
        self.stall = StallCheck(self.config)
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: list[Any] = []
        # Runs with an active stall alert, in memory or not: of the runs that are not training,
        # the stall check loads only these (to resolve it).
        self._stalled: set[str] = set()
        # Runs without a saved position (new, or saved by an older version): whether they hold
        # a stall alert is known only once they are loaded.
        self._unindexed: set[str] = set()
        # Runs whose end is to be judged when it comes (it could tell something): the end
        # check looks at these only.
        self._end_pending: set[str] = set()
        # Points up to this seq were read at start-up (see CaughtUp); None until it comes.
        self._history_end: int | None = None
        self._started_at = time.time()  # a run silent since before this is inactive, not stalled
        # Points and stall checks reach the trackers one at a time, points in seq order.
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
                maxsize=QUEUE_POINTS,
                overflow="drop_newest",
                on_drop=self._on_dropped,
                weigh=_points_in,
            )
        )
        self._unsubscribe.append(
            self.ctx.bus.subscribe(CaughtUp, self._on_caught_up, name="anomaly:caught-up")
        )
        await self.replay()
        self._tasks.append(self.ctx.spawn(self._stall_loop(), name="stall"))
        self._tasks.append(self.ctx.spawn(self._save_loop(), name="save"))

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
        # ...and the end of each run that ended (a finished run read by `--once` included).
        await self.check_ends()

    # -- state (hold `_feeding`) ----------------------------------------------------------------

    async def _tracking(self, run: str) -> RunTracking:
        """The run's tracker, loaded from the store when it is not in memory."""
        tracking = self.runs.get(run)
        if tracking is not None:
            self.runs.move_to_end(run)
            return tracking
        tracking = await self._load(run)
        if run in self._unindexed:
            self._unindexed.discard(run)
            tracking.dirty = True  # saved again, this time with its position
        self._note_stall(run, tracking.stall is not None)
        self.runs[run] = tracking
        await self._evict()
        return tracking

    async def _load(self, run: str) -> RunTracking:
        store = self.ctx.store
        saved = await store.call(store.store.plugin_get, self.name, STATE_PREFIX + run)
        if not saved:
            return RunTracking(RunDetectors(self.config))
        try:
            return restore_tracking(self.config, saved)
        except (ValueError, KeyError, TypeError) as exc:
            # An old or damaged state: start the detectors afresh, but keep the position so
            # that history is not replayed into a burst of stale alerts.
            self.ctx.log.warning(
                "detector state not restored; starting fresh", run=run, error=str(exc)
            )
            return RunTracking(RunDetectors(self.config), saved_cursor(saved))

    async def _evict(self) -> None:
        while len(self.runs) > MAX_TRACKED_RUNS:
            run, tracking = next(iter(self.runs.items()))
            if tracking.dirty:
                await self._save(run, tracking)
            del self.runs[run]

    async def _save(self, run: str, tracking: RunTracking) -> None:
        store = self.ctx.store
        await store.call(
            _put_state, store.store, self.name, run, tracking.state_json(), tracking.position()
        )
        tracking.dirty = False
        self._unindexed.discard(run)

    def _note_stall(self, run: str, stalled: bool) -> None:
        if stalled:
            self._stalled.add(run)
        else:
            self._stalled.discard(run)

    async def save_all(self) -> None:
        async with self._feeding:
            await self._save_dirty()

    async def _save_dirty(self) -> None:
        for run, tracking in list(self.runs.items()):
            if tracking.dirty:
                await self._save(run, tracking)

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(SAVE_INTERVAL_S)
            await self.save_all()

    async def _saved_positions(self) -> dict[str, SavedPosition]:
        """Each run's saved position; a damaged one is left out (its run loads the old way)."""
        store = self.ctx.store
        texts = await store.call(store.store.plugin_values, self.name, POSITION_PREFIX)
        positions: dict[str, SavedPosition] = {}
        for key, text in texts.items():
            position = SavedPosition.parse(text)
            if position is not None:
                positions[key.removeprefix(POSITION_PREFIX)] = position
        return positions

    # -- points ---------------------------------------------------------------------------------

    async def replay(self, deadline: float | None = None) -> None:
        """Feed the points recorded after each run's saved cursor (e.g. while tunewatch was off),
        all of them, or those judged by `deadline` (monotonic seconds)."""
        async with self._feeding:
            store = self.ctx.store
            for run_id, run in await self._runs_behind():
                tracking = await self._tracking(run)
                while deadline is None or time.monotonic() < deadline:
                    points: list[MetricPoint] = await store.call(
                        store.store.metrics, run_id, tracking.cursor, None, REPLAY_PAGE
                    )
                    await self._feed(run, ((p.seq, p.source, _point(p)) for p in points))
                    if len(points) < REPLAY_PAGE:
                        break
            await self._save_dirty()

    async def _runs_behind(self) -> list[tuple[int, str]]:
        """(id, name) of the runs with points after their cursor, found in three queries:
        ten thousand finished runs are not loaded one by one to learn that none is behind."""
        store = self.ctx.store
        names = await store.call(store.store.run_names)
        newest = await store.call(store.store.newest_point_seqs)
        positions = await self._saved_positions()
        self._unindexed = {r for r in names.values() if r not in positions and r not in self.runs}
        behind = []
        for run_id, run in sorted(names.items()):
            tracking, position = self.runs.get(run), positions.get(run)
            if tracking is not None:
                cursor = tracking.cursor
            elif position is not None:
                cursor = position.cursor
                self._note_stall(run, position.stalled)
                if not position.ended:
                    self._end_pending.add(run)
            else:
                cursor = -1  # no position: its cursor is inside its state, if it has one
            if newest.get(run_id, -1) > cursor:
                behind.append((run_id, run))
        return behind

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
        bests: dict[str, tuple[NewBest, float, int]] = {}
        for seq, source, point in points:
            if seq and seq <= tracking.cursor:
                continue  # already seen (replayed, or recorded before a restart)
            tracking.cursor = max(tracking.cursor, seq)
            tracking.dirty = True
            fresh = tracking.timeline.fresh(source, point)
            if fresh is None:
                continue
            verdict = tracking.detectors.update(fresh)
            events.extend(
                _anomaly(run, a.finding, push=a.push, when=fresh.time) for a in verdict.alerts
            )
            events.extend(
                AnomalyResolved(
                    run=run,
                    step=r.step,
                    kind=r.kind,
                    metric=r.metric,
                    time=fresh.time,
                    push=r.push,
                )
                for r in verdict.recoveries
            )
            if verdict.new_best is not None:
                bests[verdict.new_best.metric] = (verdict.new_best, fresh.time, seq)
        self._note_end(run, tracking)
        for best, when, seq in bests.values():
            if self._announce_best(best.metric, tracking, when):
                events.append(
                    BestModelFound(
                        run=run,
                        step=best.step,
                        metric=best.metric,
                        value=best.value,
                        checkpoint=None,
                        historical=self._from_history(seq),
                    )
                )
        if not events:
            return
        # Saved before publishing: after a crash the alert is not sent twice.
        await self._save(run, tracking)
        self.ctx.bus.publish_many(events)

    def _announce_best(self, metric: str, tracking: RunTracking, now: float) -> bool:
        if metric.startswith("eval"):
            return True
        # A train-loss best comes at nearly every step early in a run: announce it (and so
        # snapshot it) at most once per interval.
        if now - tracking.last_train_best_time < self.config.best_train_interval_s:
            return False
        tracking.last_train_best_time = now
        return True

    def _inactive_before_start(self, last_time: float | None) -> bool:
        return last_time is not None and last_time < self._started_at

    def _on_caught_up(self, event: CaughtUp) -> None:
        self._history_end = event.last_seq

    def _from_history(self, seq: int) -> bool:
        """Whether the point `seq` was read at start-up: a best found there is not news."""
        if self._history_end is None:
            return True  # the start-up catch-up is not over: whatever it fed is history
        return 0 < seq <= self._history_end

    # -- stalls ---------------------------------------------------------------------------------

    async def _stall_loop(self) -> None:
        interval = max(5.0, min(60.0, self.config.stall_minutes * 60 / 4))
        while True:
            await asyncio.sleep(interval)
            await self.check_stalls()
            await self.check_ends()

    # -- ends -----------------------------------------------------------------------------------

    async def check_ends(self, now: float | None = None) -> list[Event]:
        """Judge the end of each run that ended since its last point was judged: it finished,
        or it has been silent for `INACTIVE_AFTER_S` (a Lightning run says nothing when it
        stops; `status` shows "inactive since ..." then). What the end tells is recorded once;
        it is pushed unless the run had been silent for `INACTIVE_AFTER_S` already when
        tunewatch started (then it is history).
        """
        now = time.time() if now is None else now
        published: list[Event] = []
        if not self._end_pending:
            return published
        store = self.ctx.store
        runs = {row.name: row for row in await store.call(store.store.runs)}
        newest = await store.call(store.store.newest_points)
        seqs = await store.call(store.store.newest_point_seqs)
        ended: list[tuple[str, int, int, float]] = []  # run, its newest seq, last step, its time
        for name in sorted(self._end_pending):
            row = runs.get(name)
            last_step, last_time = newest.get(row.id, (0, None)) if row else (0, None)
            if row is None or last_time is None:
                self._end_pending.discard(name)  # no point recorded: nothing to judge
            elif row.status in FINISHED_STATUSES or now - last_time >= INACTIVE_AFTER_S:
                ended.append((name, seqs.get(row.id, -1), last_step, last_time))
        # A page at a time, so that a start-up over thousands of finished runs (each loaded,
        # judged and saved) lets the points of the live ones through in between.
        for page in range(0, len(ended), END_PAGE):
            events: list[Event] = []
            async with self._feeding:
                for name, seq, last_step, last_time in ended[page : page + END_PAGE]:
                    tracking = await self._tracking(name)
                    # Judged meanwhile; or its last points are still on their way to the
                    # detectors; or newer ones came since it was looked at (it goes on).
                    if name in self._end_pending and tracking.cursor == seq:
                        events.extend(await self._judge_end(name, tracking, last_step, last_time))
                self.ctx.bus.publish_many(events)
            published.extend(events)
        return published

    def _note_end(self, run: str, tracking: RunTracking) -> None:
        """After new points: whether the run's end is to be judged when it comes. Only runs
        whose end could tell something are (most never evaluate, or end at their best), so a
        start over ten thousand finished runs does not load each one again to judge nothing."""
        tracking.ended = not tracking.detectors.end_may_tell()
        if tracking.ended:
            self._end_pending.discard(run)
        else:
            self._end_pending.add(run)

    async def _judge_end(
        self, run: str, tracking: RunTracking, last_step: int, last_time: float
    ) -> list[Event]:
        """The end's alerts as events, saved (with the end marked judged) before publishing."""
        self._end_pending.discard(run)
        tracking.ended, tracking.dirty = True, True
        # Old news only when the run was already "inactive since ..." as tunewatch started: an
        # end missed by a crash or a restart right after the run ended is still told.
        news = last_time >= self._started_at - INACTIVE_AFTER_S
        events: list[Event] = [
            _anomaly(run, a.finding, push=a.push and news, when=last_time)
            for a in tracking.detectors.end(last_step, last_time)
        ]
        if events:
            await self._save(run, tracking)
        return events

    async def check_stalls(self, now: float | None = None) -> list[Event]:
        now = time.time() if now is None else now
        store = self.ctx.store
        published: list[Event] = []
        newest = await store.call(store.store.newest_points)
        runs = await store.call(store.store.runs)
        async with self._feeding:
            for run in runs:
                stalled, unknown = run.name in self._stalled, run.name in self._unindexed
                if run.status not in TRAINING_STATUSES and not stalled and not unknown:
                    continue  # cannot stall, and no stall to resolve: skip it (thousands of runs)
                last_step, last_time = newest.get(run.id, (0, None))
                alive = _pid_alive(run.pid) if run.pid else None
                finding = self.stall.check(
                    now, last_time, run.status, run.pid, alive, last_step=last_step
                )
                if finding is not None and not stalled and self._inactive_before_start(last_time):
                    # It stopped before tunewatch started: `status` says "inactive since ...";
                    # a stall alert now would be old news dressed as an emergency.
                    finding = None
                if (finding is not None) == stalled and not unknown:
                    continue  # nothing changes: its tracker need not be loaded
                event = await self._stall_changed(run.name, finding, last_step)
                if event is not None:
                    published.append(event)
            self.ctx.bus.publish_many(published)
        return published

    async def _stall_changed(
        self, run: str, finding: Finding | None, last_step: int
    ) -> Event | None:
        """The stall alert or its recovery, saved before it is published; None if neither."""
        tracking = await self._tracking(run)
        event: Event | None = None
        if finding is not None and tracking.stall is None:
            tracking.stall = (finding.metric, finding.step)
            event = _anomaly(run, finding)
        elif finding is None and tracking.stall is not None:
            metric, step = tracking.stall
            tracking.stall = None
            event = AnomalyResolved(run=run, step=last_step or step, kind="stall", metric=metric)
        self._note_stall(run, tracking.stall is not None)
        if event is not None:
            await self._save(run, tracking)  # before publishing, as for any alert
        return event


def _points_in(event: MetricsEvent) -> int:
    return len(event) if isinstance(event, MetricsBatch) else 1


def _point(logged: MetricPoint | MetricsLogged) -> Point:
    return Point(logged.step, logged.metrics, logged.time)


def _put_state(store: Store, plugin: str, run: str, state: str, position: SavedPosition) -> None:
    """Save a run's state and its position together (one transaction): they never disagree."""
    store.plugin_put_many(
        plugin, {STATE_PREFIX + run: state, POSITION_PREFIX + run: position.to_json()}
    )


def _anomaly(
    run: str, finding: Finding, *, push: bool = True, when: float | None = None
) -> AnomalyDetected:
    """The event of a finding; `when` is the point's own time (so the history says when it
    happened, not when tunewatch read it), now when unknown."""
    return AnomalyDetected(
        run=run,
        step=finding.step,
        kind=finding.kind,
        severity=finding.severity,
        metric=finding.metric,
        value=finding.value,
        expected=finding.expected,
        detail=finding.detail,
        time=time.time() if when is None else when,
        push=push,
    )


def _pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
