"""Every event that travels on the bus: the contract between sources, the core and plugins.

Events are frozen, slotted dataclasses. A plugin depends on this module and on the plugin API,
never on another plugin or on a source's internals.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["info", "normal", "critical"]


def _now() -> float:
    return time.time()


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event; subscribing to `Event` receives all of them."""


@dataclass(frozen=True, slots=True)
class MetricsEvent(Event):
    """Logged metric points, one (`MetricsLogged`) or many (`MetricsBatch`).

    A plugin that needs every point subscribes to this type and iterates `points()`: a long log
    caught up at start arrives in batches, a line appended later as a single point.
    """

    def points(self) -> Iterator[MetricsLogged]:
        """Each point, oldest first."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class MetricsLogged(MetricsEvent):
    """One logged point of a run: canonical metric names mapped to finite or non-finite floats.

    `seq` is the point's position in the store's durable log (0 before it is stored); plugins
    use it to resume exactly where they stopped after a restart.
    """

    run: str
    step: int
    metrics: Mapping[str, float]
    source: str
    time: float = field(default_factory=_now)
    seq: int = 0

    def points(self) -> Iterator[MetricsLogged]:
        yield self


@dataclass(frozen=True, slots=True)
class MetricsBatch(MetricsEvent):
    """Consecutive points of one source that all carry the same metrics, held column by column.

    Bulk input travels this way: catching up on a million-line log makes a few arrays per
    thousand points instead of a dict and an event per point. Column `name` holds point i's
    value at index i. The arrays belong to the event: nobody may change them.
    """

    run: str
    source: str
    steps: array[int]  # typecode "q"
    times: array[float]  # typecode "d": unix seconds, one per point
    columns: Mapping[str, array[float]]  # canonical name -> typecode "d", one value per point
    seq: int = 0  # seq of the first point; point i has seq + i (0 before it is stored)

    def __len__(self) -> int:
        return len(self.steps)

    def points(self) -> Iterator[MetricsLogged]:
        names = tuple(self.columns)
        run, source, seq = self.run, self.source, self.seq
        rows = zip(self.steps, self.times, *self.columns.values(), strict=True)
        for i, (step, when, *values) in enumerate(rows):
            yield MetricsLogged(
                run,
                step,
                dict(zip(names, values, strict=True)),
                source,
                when,
                seq + i if seq else 0,
            )


# Statuses (lower-case, as StatusChanged carries them) that mean the trainer is done with the run.
FINISHED_STATUSES = frozenset(
    {
        "completed",
        "complete",
        "finished",
        "done",
        "success",
        "succeeded",
        "failed",
        "error",
        "crashed",
        "killed",
        "stopped",
        "cancelled",
        "canceled",
        "aborted",
    }
)


@dataclass(frozen=True, slots=True)
class StatusChanged(Event):
    """The trainer reported a new status (training, completed, failed...) or progress total.

    `implied` when tunewatch inferred it from the metrics (total steps reached, the end-of-run
    summary logged) rather than the trainer saying so: the trainer's own word wins.
    """

    run: str
    status: str
    source: str
    step: int | None = None
    total_steps: int | None = None
    pid: int | None = None
    time: float = field(default_factory=_now)
    seq: int = 0
    implied: bool = False


@dataclass(frozen=True, slots=True)
class CheckpointSaved(Event):
    """A checkpoint folder (e.g. Hugging Face `checkpoint-N/`) was written."""

    run: str
    step: int
    path: str
    source: str
    best_metric: float | None = None
    best_checkpoint: str | None = None
    time: float = field(default_factory=_now)
    seq: int = 0


@dataclass(frozen=True, slots=True)
class SourceError(Event):
    """Input that could not be used: a malformed line, bad bytes, an oversized line.

    Counted and recorded, never fatal. `location` is `file:line` where a line is known.
    """

    run: str
    source: str
    kind: str
    message: str
    location: str
    time: float = field(default_factory=_now)
    seq: int = 0


@dataclass(frozen=True, slots=True)
class SourceUnreadable(Event):
    """A source file cannot be read at all: no permission, not a regular file, a symlink loop.

    Unlike `SourceError` (one bad line), nothing of the file is being recorded. It is retried
    with backoff; `SourceReadable` follows once it can be read again.
    """

    run: str
    source: str
    kind: str
    message: str
    location: str
    time: float = field(default_factory=_now)
    seq: int = 0


@dataclass(frozen=True, slots=True)
class SourceReadable(Event):
    """A source file that was unreadable is read again; nothing it holds was skipped."""

    run: str
    source: str
    location: str
    unreadable_s: float
    time: float = field(default_factory=_now)
    seq: int = 0


@dataclass(frozen=True, slots=True)
class CaughtUp(Event):
    """Everything written while tunewatch was not watching has been read and published.

    Events about points up to `last_seq` describe the past (a finished run, hours of history
    read at start), not what is happening now: a plugin reports them without pushing alerts.
    """

    last_seq: int
    time: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class RecordingFailed(Event):
    """The state database refuses writes (disk full, I/O error): nothing is being recorded.

    No file position advances meanwhile, so nothing is lost; ingest retries with backoff and
    `RecordingResumed` follows when it works again.
    """

    reason: str
    since: float
    time: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class RecordingResumed(Event):
    """The state database accepts writes again after `RecordingFailed`."""

    reason: str  # what had stopped it
    since: float  # when it stopped
    time: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class ResourceSample(Event):
    """Disk, memory and load of the machine (and of a run's directory), sampled periodically."""

    disk_path: str
    disk_used_fraction: float
    disk_free_bytes: int
    memory_used_fraction: float
    load_1m: float
    trainer_pid: int | None = None
    trainer_rss_bytes: int | None = None
    time: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class AnomalyDetected(Event):
    """A detector found something: recorded always, pushed to a person when `push`.

    `push` is False for `info` findings (worth recording, not worth waking anyone for) and for
    an episode of the same kind that comes back within the plugin's cooldown.
    """

    run: str
    step: int
    kind: str
    severity: Severity
    metric: str
    value: float
    expected: float | None
    detail: str
    time: float = field(default_factory=_now)
    push: bool = True


@dataclass(frozen=True, slots=True)
class AnomalyResolved(Event):
    """An active anomaly is over (the metric is back in range); `push` when its start was."""

    run: str
    step: int
    kind: str
    metric: str
    time: float = field(default_factory=_now)
    push: bool = True


@dataclass(frozen=True, slots=True)
class BestModelFound(Event):
    """A new best model. `historical` when it was found in what was read at start-up (see
    `CaughtUp`): worth recording and snapshotting if its checkpoint exists, not worth a push."""

    run: str
    step: int
    metric: str
    value: float
    checkpoint: str | None
    time: float = field(default_factory=_now)
    historical: bool = False


@dataclass(frozen=True, slots=True)
class SnapshotCreated(Event):
    run: str
    step: int
    path: str
    source_checkpoint: str
    time: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class InboxFileReady(Event):
    """A file dropped into an inbox stopped changing and can be validated."""

    run: str | None
    path: str
    sha256: str
    time: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class ValidationFinished(Event):
    run: str | None
    path: str
    score: int
    verdict: str
    errors: int
    warnings: int
    report_path: str | None
    time: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class ComparisonFinished(Event):
    """Two snapshots compared (`winner`: the one to use, None when neither), or the comparison
    failed (`failed`; `summary` says why)."""

    run: str | None
    model_a: str
    model_b: str
    winner: str | None
    summary: str
    report_path: str | None
    failed: bool = False
    time: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class ReportWritten(Event):
    """A report was written to `path` (Markdown); `health` is its one-line summary."""

    path: str
    period_hours: float
    health: str = ""
    time: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class ResourceAlert(Event):
    """A resource is running out before it kills a run: a disk filling, memory climbing.

    One per episode (the resources plugin keeps the episode open until it recovers); `push`
    False for an episode that comes back within the cooldown, recorded all the same.
    """

    resource: str  # "disk", "memory" (the host's RAM), "trainer_memory", "gpu_memory"
    severity: Severity
    summary: str  # what and when: "/data fills in 1.4 h at the rate checkpoints use it"
    advice: str  # what to do, naming paths: the checkpoints that can go and what that frees
    path: str | None = None  # the volume, or the GPU ("gpu0")
    run: str | None = None
    value: float | None = None  # the fraction used now
    push: bool = True
    time: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class ResourceRecovered(Event):
    """A resource episode is over (space freed, memory back down)."""

    resource: str
    summary: str
    path: str | None = None
    run: str | None = None
    push: bool = True
    time: float = field(default_factory=_now)


# Events that carry a run's progress; the ingest pipeline stores these before publishing them.
RunEvent = (
    MetricsLogged
    | MetricsBatch
    | StatusChanged
    | CheckpointSaved
    | SourceError
    | SourceUnreadable
    | SourceReadable
)
