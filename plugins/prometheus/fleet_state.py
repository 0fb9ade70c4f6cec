"""What the exporter knows about each run and the alerts so far, kept current from events.

Plain synchronous state: the plugin feeds it events (and, at start, what the store holds), the
collector reads it at each scrape. Nothing here waits on the store, so a scrape never does.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tunewatch.daemon.events import FINISHED_STATUSES, MetricsBatch, MetricsEvent, MetricsLogged

# Canonical metric names (daemon/sources/metric_names.py) whose newest value is exported.
EXPORTED_VALUES = ("loss", "eval_loss", "accuracy", "eval_accuracy", "learning_rate")
TOTAL_STEPS = "total_steps"  # also logged as a metric by some trainers (`max_steps`)
_KEPT = frozenset((*EXPORTED_VALUES, TOTAL_STEPS))

# Every value `tunewatch_run_status` takes: a bounded set, whatever a trainer writes in its status
# file, so that one label value per run is 1 and the others 0.
RUN_STATUSES = (
    "training",
    "paused",
    "stalled",
    "inactive",
    "finished",
    "failed",
    "stopped",
    "unknown",
)
_FAILED = frozenset({"failed", "error", "crashed", "killed"})
_STOPPED = frozenset({"stopped", "cancelled", "canceled", "aborted"})
_PAUSED = frozenset({"paused", "waiting", "suspended"})
# As `tunewatch status` says it (daemon/run_status.py): silent for 30 min is stalled, 1 h inactive.
STALLED_AFTER_S = 1800.0
INACTIVE_AFTER_S = 3600.0


@dataclass(slots=True)
class RunState:
    """One run as exported: its newest values, progress, status and counts."""

    name: str
    status: str | None = None  # as the store holds it (the trainer's word, or implied)
    total_steps: int | None = None
    newest_steps: dict[str, int] = field(default_factory=dict)  # source -> its newest step
    last_metric_time: float | None = None
    values: dict[str, float] = field(default_factory=dict)  # canonical name -> newest value
    points: int = 0
    source_errors: int = 0
    active: float = 0.0  # unix time of the newest thing heard of it (forgotten when old)

    @property
    def step(self) -> int | None:
        # The highest of each source's newest step, as `tunewatch status`: a run resumed from a
        # checkpoint shows the step it is at now.
        return max(self.newest_steps.values()) if self.newest_steps else None

    def planned_steps(self) -> int | None:
        """Total steps: the trainer's status, else a logged `total_steps`/`max_steps` metric."""
        if self.total_steps:
            return self.total_steps
        logged = self.values.get(TOTAL_STEPS)
        if logged is None or not math.isfinite(logged) or logged <= 0:
            return None
        return int(logged)

    def progress(self) -> float | None:
        step, total = self.step, self.planned_steps()
        if step is None or not total:
            return None
        return min(step / total, 1.0)

    def status_label(self, now: float) -> str:
        """The run's state as one of RUN_STATUSES (the rules of `tunewatch status`)."""
        status = (self.status or "").lower()
        if status in FINISHED_STATUSES:
            if status in _FAILED:
                return "failed"
            return "stopped" if status in _STOPPED else "finished"
        if self.last_metric_time is not None:
            silent = now - self.last_metric_time
            if silent > INACTIVE_AFTER_S:
                return "inactive"
            if silent > STALLED_AFTER_S:
                return "stalled"
        if status in _PAUSED:
            return "paused"
        if status or self.last_metric_time is not None:
            return "training"
        return "unknown"


@dataclass(frozen=True, slots=True)
class StoredRun:
    """A run as the store holds it, read at start (see `restore`)."""

    name: str
    status: str | None
    total_steps: int | None
    newest_steps: Mapping[str, int]  # source -> its newest step
    last_metric_time: float | None
    values: Mapping[str, float]
    points: int
    source_errors: int
    active: float


AlertKey = tuple[str, str, str]  # (run, or "" for the machine; kind; severity)


class FleetState:
    """Every exported run by name, the alerts counted by (run, kind, severity), and the
    recording failures seen."""

    def __init__(self, restored_seq: int = 0) -> None:
        self.runs: dict[str, RunState] = {}
        self.alerts: Counter[AlertKey] = Counter()
        self.recording_failures = 0
        # Run events up to this seq were counted from the store at start: not counted twice.
        self.restored_seq = restored_seq

    def run(self, name: str) -> RunState:
        state = self.runs.get(name)
        if state is None:
            state = self.runs[name] = RunState(name)
        return state

    def restore(self, stored: Iterable[StoredRun], alerts: Mapping[AlertKey, int]) -> None:
        """Start from what the store holds, so a restarted daemon exports what it did before."""
        for row in stored:
            state = self.run(row.name)
            state.status, state.total_steps = row.status, row.total_steps
            state.newest_steps.update(row.newest_steps)
            state.last_metric_time = row.last_metric_time
            state.values.update(row.values)
            state.points, state.source_errors, state.active = (
                row.points,
                row.source_errors,
                row.active,
            )
        self.alerts.update(alerts)

    def add_points(self, event: MetricsEvent) -> None:
        if isinstance(event, MetricsBatch):
            self._add_batch(event)
        elif isinstance(event, MetricsLogged):
            self._add_point(event)
        else:  # another kind of MetricsEvent: its points one by one
            for point in event.points():
                self._add_point(point)

    def _add_batch(self, batch: MetricsBatch) -> None:
        count = len(batch)
        if not count:
            return
        new = count
        if batch.seq and self.restored_seq:
            new = min(count, batch.seq + count - 1 - self.restored_seq)
            if new <= 0:
                return
        last = count - 1
        state = self.run(batch.run)
        state.points += new
        state.newest_steps[batch.source] = batch.steps[last]
        for name, column in batch.columns.items():
            if name in _KEPT:
                state.values[name] = column[last]
        self._heard(state, batch.times[last])

    def _add_point(self, point: MetricsLogged) -> None:
        if self._restored(point.seq):
            return
        state = self.run(point.run)
        state.points += 1
        state.newest_steps[point.source] = point.step
        for name, value in point.metrics.items():
            if name in _KEPT:
                state.values[name] = value
        self._heard(state, point.time)

    @staticmethod
    def _heard(state: RunState, when: float) -> None:
        if state.last_metric_time is None or when > state.last_metric_time:
            state.last_metric_time = when
        state.active = max(state.active, when)

    def add_status(
        self, run: str, status: str, total_steps: int | None, seq: int, when: float
    ) -> None:
        """A status change; the store's own rules for which status wins are applied again by
        `set_statuses` once the plugin has re-read them."""
        if self._restored(seq):
            return
        state = self.run(run)
        state.status = status
        if total_steps:
            state.total_steps = total_steps
        state.active = max(state.active, when)

    def set_statuses(self, statuses: Mapping[str, tuple[str | None, int | None]]) -> None:
        """Each known run's status and total steps as the store decided them."""
        for name, (status, total) in statuses.items():
            state = self.runs.get(name)
            if state is not None:
                state.status = status
                state.total_steps = total or state.total_steps

    def add_source_error(self, run: str, seq: int, when: float) -> None:
        if self._restored(seq):
            return
        state = self.run(run)
        state.source_errors += 1
        state.active = max(state.active, when)

    def add_alert(self, run: str | None, kind: str, severity: str, when: float) -> None:
        """An alert of `kind`; `run` None for the machine (a disk, the memory)."""
        if run:
            state = self.run(run)
            state.active = max(state.active, when)
        self.alerts[(run or "", kind, severity)] += 1

    def exported(self, now: float, forget_after_s: float, max_runs: int) -> list[RunState]:
        """The runs to export, most recently active first: those heard of within
        `forget_after_s`, at most `max_runs`. Older runs are forgotten here, with their alert
        counts, so neither the series nor this state grows without bound."""
        for name in [name for name, s in self.runs.items() if now - s.active > forget_after_s]:
            del self.runs[name]
        for key in [k for k in self.alerts if k[0] and k[0] not in self.runs]:
            del self.alerts[key]
        ordered = sorted(self.runs.values(), key=lambda s: s.active, reverse=True)
        return ordered[:max_runs]

    def _restored(self, seq: int) -> bool:
        return bool(seq) and seq <= self.restored_seq
