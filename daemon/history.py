"""How events become rows of the recorded history: a kind, a severity, a one-line summary and data.

`tunewatch events` prints these summaries; `--json` prints the data. Keeping the mapping in one
place means a new event type is recorded and shown by adding one entry here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunewatch.daemon import events as ev


@dataclass(frozen=True, slots=True)
class HistoryRow:
    time: float
    run: str | None
    kind: str
    severity: str
    summary: str
    data: dict[str, Any]


def fmt_value(value: float) -> str:
    """A metric value as a person reads it: 4 significant decimals, NaN/Inf spelled out."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
        return f"{value:.3e}"
    return f"{value:.4f}"


def fmt_step(step: int) -> str:
    return f"{step:,}"


def _status(e: ev.StatusChanged) -> str:
    progress = ""
    if e.step is not None and e.total_steps:
        progress = f" at step {fmt_step(e.step)} / {fmt_step(e.total_steps)}"
    elif e.total_steps:
        progress = f" ({fmt_step(e.total_steps)} steps planned)"
    return f"status {e.status}{progress}"


def _checkpoint(e: ev.CheckpointSaved) -> str:
    return f"checkpoint saved at step {fmt_step(e.step)}: {e.path}"


def _source_error(e: ev.SourceError) -> str:
    return f"{e.kind} at {e.location}: {e.message}"


def _unreadable(e: ev.SourceUnreadable) -> str:
    return f"{e.location} is not being read ({e.kind}): {e.message}"


def _readable(e: ev.SourceReadable) -> str:
    return f"{e.location} is read again after {fmt_duration(e.unreadable_s)}"


def _recording_resumed(e: ev.RecordingResumed) -> str:
    return f"nothing could be recorded for {fmt_duration(e.time - e.since)}: {e.reason}"


def fmt_duration(seconds: float) -> str:
    """A duration as a person says it: 45 s, 12 min, 3.5 h, 2.0 days."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _anomaly(e: ev.AnomalyDetected) -> str:
    expected = f" (expected {fmt_value(e.expected)})" if e.expected is not None else ""
    return f"{e.kind} at step {fmt_step(e.step)}: {e.metric} {fmt_value(e.value)}{expected}"


def _resolved(e: ev.AnomalyResolved) -> str:
    return f"{e.kind} on {e.metric} recovered at step {fmt_step(e.step)}"


def _best(e: ev.BestModelFound) -> str:
    return f"new best {e.metric} {fmt_value(e.value)} at step {fmt_step(e.step)}"


def _snapshot(e: ev.SnapshotCreated) -> str:
    return f"snapshot of step {fmt_step(e.step)} saved to {e.path}"


def _validation(e: ev.ValidationFinished) -> str:
    return f"{e.path}: {e.score}/100, {e.verdict} ({e.errors} errors, {e.warnings} warnings)"


def _comparison(e: ev.ComparisonFinished) -> str:
    return e.summary


def _report(e: ev.ReportWritten) -> str:
    return f"report written: {e.path}"


def _resources(e: ev.ResourceSample) -> str:
    return (
        f"disk {e.disk_used_fraction:.0%} used ({e.disk_free_bytes / 2**30:.1f} GiB free), "
        f"memory {e.memory_used_fraction:.0%}, load {e.load_1m:.2f}"
    )


def _resource_alert(e: ev.ResourceAlert) -> str:
    return f"{e.summary}. {e.advice}" if e.advice else e.summary


def _resource_recovered(e: ev.ResourceRecovered) -> str:
    return e.summary


_KINDS: dict[type[ev.Event], tuple[str, Callable[[Any], str]]] = {
    ev.StatusChanged: ("status", _status),
    ev.CheckpointSaved: ("checkpoint", _checkpoint),
    ev.SourceError: ("source_error", _source_error),
    ev.SourceUnreadable: ("source_unreadable", _unreadable),
    ev.SourceReadable: ("source_readable", _readable),
    ev.RecordingResumed: ("recording_resumed", _recording_resumed),
    ev.AnomalyDetected: ("anomaly", _anomaly),
    ev.AnomalyResolved: ("recovered", _resolved),
    ev.BestModelFound: ("best_model", _best),
    ev.SnapshotCreated: ("snapshot", _snapshot),
    ev.ValidationFinished: ("validation", _validation),
    ev.ComparisonFinished: ("comparison", _comparison),
    ev.ReportWritten: ("report", _report),
    ev.ResourceSample: ("resources", _resources),
    ev.ResourceAlert: ("resource_alert", _resource_alert),
    ev.ResourceRecovered: ("resource_recovered", _resource_recovered),
}

KINDS = tuple(kind for kind, _ in _KINDS.values())
_SEVERITY = {
    "source_error": "warning",
    "source_unreadable": "warning",
    "recording_resumed": "warning",
}


RECORDED_TYPES = tuple(_KINDS)


def is_recorded(event: ev.Event) -> bool:
    return type(event) in _KINDS


def to_row(event: ev.Event) -> HistoryRow:
    kind, summarise = _KINDS[type(event)]
    data = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    data.pop("seq", None)
    severity = getattr(event, "severity", None) or _SEVERITY.get(kind, "info")
    if getattr(event, "failed", False):
        severity = "warning"  # a comparison that failed: the person should know why
    return HistoryRow(
        time=event.time,  # type: ignore[attr-defined]
        run=getattr(event, "run", None),
        kind=kind,
        severity=severity,
        summary=summarise(event),
        data=data,
    )
