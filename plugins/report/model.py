"""What a daily report says, as plain frozen data: collected by `content`, written by `markdown`.

Every field is a number, a string or a tuple of these records, so the same tree gives the
Markdown, the `--json` output (`dataclasses.asdict`) and the chart's input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# What a run is doing, in the words of the health line. "inactive": not finished, silent for an
# hour (run_status.INACTIVE_AFTER_S); "stalled": an unresolved stall alert says it should move.
Condition = Literal["training", "finished", "stalled", "inactive", "unknown"]


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One run's training status at the end of the period."""

    name: str
    path: str
    condition: Condition
    state: str  # as `tunewatch status` says it: "training", "completed", "inactive since ..."
    step: int | None
    total_steps: int | None
    progress: float | None  # 0..1
    progress_text: str  # "17,601 / 37,487 steps (47.0 %)"
    loss: float | None
    eval_loss: float | None
    accuracy: float | None
    steps_per_hour: float | None  # over the period
    eta_s: float | None  # at that rate, to total_steps
    last_metric_time: float | None
    diverged_at_step: int | None  # the first divergence or non-finite alert still unresolved


@dataclass(frozen=True, slots=True)
class Validation:
    run: str | None
    path: str
    score: int
    verdict: str
    passed: bool  # score >= PASS_SCORE: trainable as is
    errors: int
    warnings: int
    report_path: str | None
    time: float


@dataclass(frozen=True, slots=True)
class SourceErrors:
    run: str
    count: int
    last_message: str


@dataclass(frozen=True, slots=True)
class Saved:
    """A checkpoint written or a snapshot taken."""

    run: str
    step: int
    path: str
    time: float


@dataclass(frozen=True, slots=True)
class ComparisonMade:
    run: str | None
    model_a: str
    model_b: str
    winner: str | None
    summary: str
    failed: bool
    report_path: str | None
    time: float


@dataclass(frozen=True, slots=True)
class Activity:
    validations: tuple[Validation, ...]
    source_errors: tuple[SourceErrors, ...]
    checkpoints: tuple[Saved, ...]
    snapshots: tuple[Saved, ...]
    comparisons: tuple[ComparisonMade, ...]


@dataclass(frozen=True, slots=True)
class Alert:
    """A pushed anomaly: what a person was told."""

    run: str
    kind: str
    severity: str
    metric: str
    step: int
    value: float
    detail: str
    time: float


@dataclass(frozen=True, slots=True)
class QuietFindings:
    """Findings of one kind on one metric that were recorded, not pushed."""

    run: str
    kind: str
    metric: str
    count: int


@dataclass(frozen=True, slots=True)
class BestModel:
    run: str
    step: int
    metric: str
    value: float
    snapshot: str | None  # the snapshot taken of that step, if any
    time: float


@dataclass(frozen=True, slots=True)
class ResourceEpisode:
    """A resource alert (a disk filling, memory climbing) or its recovery."""

    resource: str
    severity: str
    summary: str
    advice: str
    path: str | None
    run: str | None
    recovered: bool
    time: float


@dataclass(frozen=True, slots=True)
class Anomalies:
    alerts: tuple[Alert, ...]
    quiet: tuple[QuietFindings, ...]
    best_models: tuple[BestModel, ...]
    resources: tuple[ResourceEpisode, ...]


@dataclass(frozen=True, slots=True)
class Volume:
    mount: str
    total_bytes: int
    used_bytes: int
    free_bytes: int
    used_fraction: float
    runs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    path: str
    step: int
    bytes: int
    # What deleting it frees: files hardlinked elsewhere (into a snapshot) free nothing.
    freeable_bytes: int
    newest: bool
    best: bool


@dataclass(frozen=True, slots=True)
class RunStorage:
    run: str
    checkpoints: tuple[Checkpoint, ...]
    snapshots_dir: str | None
    snapshots_bytes: int
    complete: bool  # False when a walk stopped at its cap: the sizes are lower bounds


@dataclass(frozen=True, slots=True)
class HostMemory:
    total_bytes: int
    available_bytes: int
    used_fraction: float


@dataclass(frozen=True, slots=True)
class Gpu:
    index: int
    name: str
    memory_used_bytes: int
    memory_total_bytes: int
    utilisation_percent: int | None


@dataclass(frozen=True, slots=True)
class Resources:
    volumes: tuple[Volume, ...]
    storage: tuple[RunStorage, ...]
    memory: HostMemory | None
    gpus: tuple[Gpu, ...]
    gpu_note: str  # "no GPU" when NVML has none to show, else ""


@dataclass(frozen=True, slots=True)
class Recommendation:
    """Something a person can do now: what and why, the paths, the command to run."""

    run: str | None
    title: str
    detail: str
    command: str | None


@dataclass(frozen=True, slots=True)
class Series:
    """One metric of one run: steps, times and values, oldest first (finite values only)."""

    steps: tuple[int, ...]
    times: tuple[float, ...]
    values: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class AlertMark:
    step: int
    time: float
    kind: str
    severity: str


@dataclass(frozen=True, slots=True)
class RunSeries:
    run: str
    loss: Series  # within the period, at most MAX_SERIES_POINTS
    eval_loss: Series
    whole_loss: Series  # the whole run, lightly: at most MAX_SERIES_POINTS
    whole_eval_loss: Series
    alerts: tuple[AlertMark, ...]


@dataclass(frozen=True, slots=True)
class ChartData:
    since: float
    until: float
    runs: tuple[RunSeries, ...]


@dataclass(frozen=True, slots=True)
class Report:
    since: float
    until: float
    generated: float
    runs: tuple[RunSummary, ...]
    quiet_runs: int  # finished or long silent, nothing in the period: counted, not listed
    activity: Activity
    anomalies: Anomalies
    resources: Resources
    recommendations: tuple[Recommendation, ...]
    chart: ChartData
