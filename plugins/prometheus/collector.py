"""The exported metrics: names, help texts and labels, built from the fleet state at each scrape.

A custom prometheus_client collector on a private registry: each scrape builds the families
from `FleetState` (no per-run metric objects to create or delete as runs come and go), and
prometheus_client's own exposition writes the text format. Labels are bounded: the run name,
an alert's kind and severity, a status out of RUN_STATUSES, a plugin name; never a step or a
value.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from tunewatch.plugins.prometheus.fleet_state import RUN_STATUSES, FleetState, RunState

# name -> help text of every per-run gauge whose value is a logged metric (canonical name).
RUN_VALUE_GAUGES = {
    "loss": ("tunewatch_run_loss", "Newest training loss logged by the run (NaN when it is)."),
    "eval_loss": ("tunewatch_run_eval_loss", "Newest evaluation loss logged by the run."),
    "accuracy": ("tunewatch_run_accuracy", "Newest training accuracy logged by the run."),
    "eval_accuracy": (
        "tunewatch_run_eval_accuracy",
        "Newest evaluation accuracy logged by the run.",
    ),
    "learning_rate": ("tunewatch_run_learning_rate", "Newest learning rate logged by the run."),
}

# Every metric name this collector writes (counters without their `_total`), with its type.
METRICS: dict[str, str] = {
    "tunewatch_run_step": "gauge",
    "tunewatch_run_total_steps": "gauge",
    "tunewatch_run_progress_ratio": "gauge",
    **{name: "gauge" for name, _help in RUN_VALUE_GAUGES.values()},
    "tunewatch_run_last_metric_timestamp_seconds": "gauge",
    "tunewatch_run_seconds_since_last_metric": "gauge",
    "tunewatch_run_status": "gauge",
    "tunewatch_run_points": "counter",
    "tunewatch_run_source_errors": "counter",
    "tunewatch_alerts": "counter",
    "tunewatch_runs_exported": "gauge",
    "tunewatch_recording_failures": "counter",
    "tunewatch_recording_failed": "gauge",
    "tunewatch_pipeline_lag_seconds": "gauge",
    "tunewatch_unreadable_files": "gauge",
    "tunewatch_plugin_failed": "gauge",
    "tunewatch_bus_events_queued": "gauge",
    "tunewatch_bus_events_dropped": "counter",
    "tunewatch_daemon_start_time_seconds": "gauge",
}


def exposed_names() -> frozenset[str]:
    """The sample names a scrape can show (a counter's sample is its name with `_total`)."""
    return frozenset(f"{n}_total" if t == "counter" else n for n, t in METRICS.items())


@dataclass(frozen=True, slots=True)
class DaemonVitals:
    """The daemon's own health at one moment, as the plugin reads it from its context."""

    started: float  # unix time the exporter started (the daemon, within a second)
    lag_s: float  # how long the oldest store call has been waiting (0 when none)
    queued: int  # events waiting in the bus's subscriber queues
    dropped: int  # events the bus dropped from full queues since start
    recording_failed: bool | None = None  # None: the daemon's health is not known
    unreadable_files: int | None = None
    plugins: dict[str, str] = field(default_factory=dict)  # name -> "running" / "failed: ..."


@dataclass(frozen=True, slots=True)
class ExportLimits:
    forget_after_s: float
    max_runs: int


class FleetCollector(Collector):
    """Writes `FleetState` and the daemon's vitals as Prometheus metric families."""

    def __init__(
        self,
        fleet: FleetState,
        limits: ExportLimits,
        vitals: Callable[[], DaemonVitals],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fleet = fleet
        self.limits = limits
        self.vitals = vitals
        self.clock = clock

    def describe(self) -> Iterator[Metric]:
        # Names only: lets the registry check them without building the families.
        for name, kind in METRICS.items():
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(name, "")

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        runs = self.fleet.exported(now, self.limits.forget_after_s, self.limits.max_runs)
        yield from _run_families(runs, now)
        yield _alerts(self.fleet, {r.name for r in runs})
        yield GaugeMetricFamily(
            "tunewatch_runs_exported",
            "Runs exported now (heard of within forget_after_hours, at most max_runs).",
            value=len(runs),
        )
        yield CounterMetricFamily(
            "tunewatch_recording_failures",
            "Times the state database refused writes (disk full, I/O error) since start.",
            value=self.fleet.recording_failures,
        )
        yield from _vitals_families(self.vitals())


def _run_families(runs: list[RunState], now: float) -> Iterator[Metric]:
    def gauge(name: str, documentation: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, documentation, labels=["run"])

    step = gauge("tunewatch_run_step", "Newest optimizer step logged by the run.")
    total = gauge("tunewatch_run_total_steps", "Steps the run is planned to take.")
    progress = gauge("tunewatch_run_progress_ratio", "Step over total steps, from 0 to 1.")
    values = {key: gauge(name, doc) for key, (name, doc) in RUN_VALUE_GAUGES.items()}
    last = gauge(
        "tunewatch_run_last_metric_timestamp_seconds", "Unix time of the run's newest point."
    )
    age = gauge(
        "tunewatch_run_seconds_since_last_metric",
        "Seconds since the run's newest point, when this was written.",
    )
    status = GaugeMetricFamily(
        "tunewatch_run_status",
        "1 for the run's state (" + ", ".join(RUN_STATUSES) + "), 0 for the others.",
        labels=["run", "status"],
    )
    points = CounterMetricFamily(
        "tunewatch_run_points", "Metric points recorded for the run.", labels=["run"]
    )
    errors = CounterMetricFamily(
        "tunewatch_run_source_errors",
        "Input of the run that could not be used (malformed lines, bad values).",
        labels=["run"],
    )
    for run in runs:
        label = [run.name]
        if run.step is not None:
            step.add_metric(label, run.step)
        planned = run.planned_steps()
        if planned is not None:
            total.add_metric(label, planned)
        fraction = run.progress()
        if fraction is not None:
            progress.add_metric(label, fraction)
        for key, family in values.items():
            value = run.values.get(key)
            if value is not None:
                family.add_metric(label, value)
        if run.last_metric_time is not None:
            last.add_metric(label, run.last_metric_time)
            age.add_metric(label, max(now - run.last_metric_time, 0.0))
        state = run.status_label(now)
        for choice in RUN_STATUSES:
            status.add_metric([run.name, choice], 1.0 if choice == state else 0.0)
        points.add_metric(label, run.points)
        errors.add_metric(label, run.source_errors)
    yield from (step, total, progress, *values.values(), last, age, status, points, errors)


def _alerts(fleet: FleetState, exported: set[str]) -> CounterMetricFamily:
    alerts = CounterMetricFamily(
        "tunewatch_alerts",
        'Alerts (anomalies, resources running out) by run, kind and severity; run="" for '
        "the machine.",
        labels=["run", "kind", "severity"],
    )
    for (run, kind, severity), count in sorted(fleet.alerts.items()):
        if not run or run in exported:
            alerts.add_metric([run, kind, severity], count)
    return alerts


def _vitals_families(vitals: DaemonVitals) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "tunewatch_pipeline_lag_seconds",
        "How long the oldest call to the state database has been waiting (0: none waits).",
        value=vitals.lag_s,
    )
    yield GaugeMetricFamily(
        "tunewatch_bus_events_queued",
        "Events waiting in the plugins' queues.",
        value=vitals.queued,
    )
    yield CounterMetricFamily(
        "tunewatch_bus_events_dropped",
        "Events dropped from full plugin queues since start (re-read from the store).",
        value=vitals.dropped,
    )
    yield GaugeMetricFamily(
        "tunewatch_daemon_start_time_seconds",
        "Unix time the daemon started.",
        value=vitals.started,
    )
    if vitals.recording_failed is not None:
        yield GaugeMetricFamily(
            "tunewatch_recording_failed",
            "1 while the state database refuses writes: nothing new is recorded.",
            value=1.0 if vitals.recording_failed else 0.0,
        )
    if vitals.unreadable_files is not None:
        yield GaugeMetricFamily(
            "tunewatch_unreadable_files",
            "Watched files that cannot be read at all (retried).",
            value=vitals.unreadable_files,
        )
    failed = GaugeMetricFamily(
        "tunewatch_plugin_failed",
        "1 for a plugin that failed to load, start or run; 0 for one running.",
        labels=["plugin"],
    )
    for plugin, state in sorted(vitals.plugins.items()):
        failed.add_metric([plugin], 0.0 if state == "running" else 1.0)
    yield failed


def render(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format (0.0.4), as scrapes and textfiles take it."""
    return generate_latest(registry)
