"""What happened in the period, from the recorded history: activity, alerts, best models.

The history rows' `data` are the events' fields (daemon/history.py), so each section reads the
field names of `tunewatch.daemon.events`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tunewatch.daemon.store import StoredEvent
from tunewatch.plugins.report.model import (
    Activity,
    Alert,
    Anomalies,
    BestModel,
    ComparisonMade,
    QuietFindings,
    ResourceEpisode,
    Saved,
    SourceErrors,
    Validation,
)

# Validation scores from this up are trainable as is (validate: < 70 "fix before training").
PASS_SCORE = 70
# History kinds of the resources plugin's alerts, when it records them.
RESOURCE_ALERT, RESOURCE_RECOVERED = "resource_alert", "resource_recovered"
# Alert kinds that mean the weights are no longer worth training on.
BROKEN_KINDS = frozenset({"divergence", "non_finite"})
STALL_KIND = "stall"


@dataclass(frozen=True, slots=True)
class Episodes:
    """What the whole history says about each run at the end of the period."""

    # (run, kind, metric) -> the unresolved alert that opened the episode
    open: dict[tuple[str, str, str], dict[str, Any]]
    # run -> step -> snapshot path
    snapshots: dict[str, dict[int, str]]
    # run -> steps of its best models
    best_steps: dict[str, list[int]]

    def broken_at(self, run: str) -> int | None:
        """The step of the earliest open divergence or non-finite episode of `run`."""
        steps = [
            int(data["step"])
            for (name, kind, _metric), data in self.open.items()
            if name == run and kind in BROKEN_KINDS
        ]
        return min(steps) if steps else None

    def stalled(self, run: str) -> bool:
        return any(name == run and kind == STALL_KIND for name, kind, _ in self.open)


def episodes(history: Iterable[StoredEvent]) -> Episodes:
    """Read the anomaly, recovery, snapshot and best-model rows of the history, oldest first."""
    found = Episodes({}, {}, {})
    for stored in history:
        row, data = stored.row, stored.row.data
        if row.run is None:
            continue
        if row.kind == "anomaly":
            found.open.setdefault((row.run, data["kind"], data["metric"]), data)
        elif row.kind == "recovered":
            found.open.pop((row.run, data["kind"], data["metric"]), None)
        elif row.kind == "snapshot":
            found.snapshots.setdefault(row.run, {})[int(data["step"])] = str(data["path"])
        elif row.kind == "best_model":
            found.best_steps.setdefault(row.run, []).append(int(data["step"]))
    return found


def activity(period: Sequence[StoredEvent]) -> Activity:
    errors: dict[str, list[str]] = {}
    for stored in period:
        if stored.row.kind == "source_error" and stored.row.run is not None:
            errors.setdefault(stored.row.run, []).append(stored.row.summary)
    return Activity(
        validations=tuple(_validation(s) for s in _of(period, "validation")),
        source_errors=tuple(
            SourceErrors(run, len(messages), messages[-1]) for run, messages in errors.items()
        ),
        checkpoints=tuple(_saved(s) for s in _of(period, "checkpoint")),
        snapshots=tuple(_saved(s) for s in _of(period, "snapshot")),
        comparisons=tuple(_comparison(s) for s in _of(period, "comparison")),
    )


def anomalies(period: Sequence[StoredEvent], found: Episodes) -> Anomalies:
    alerts, quiet = [], Counter[tuple[str, str, str]]()
    for stored in _of(period, "anomaly"):
        data, run = stored.row.data, stored.row.run or "?"
        if data.get("push", True):
            alerts.append(_alert(stored))
        else:
            quiet[(run, str(data["kind"]), str(data["metric"]))] += 1
    bests = [
        BestModel(
            run=s.row.run or "?",
            step=int(s.row.data["step"]),
            metric=str(s.row.data["metric"]),
            value=_number(s.row.data.get("value")),
            snapshot=found.snapshots.get(s.row.run or "", {}).get(int(s.row.data["step"])),
            time=s.row.time,
        )
        for s in _of(period, "best_model")
    ]
    resources = [_resource(s) for s in period if s.row.kind in (RESOURCE_ALERT, RESOURCE_RECOVERED)]
    return Anomalies(
        alerts=tuple(alerts),
        quiet=tuple(QuietFindings(r, k, m, n) for (r, k, m), n in quiet.items()),
        best_models=tuple(bests),
        resources=tuple(resources),
    )


def _of(period: Sequence[StoredEvent], kind: str) -> list[StoredEvent]:
    return [s for s in period if s.row.kind == kind]


def _validation(stored: StoredEvent) -> Validation:
    data = stored.row.data
    score = int(data["score"])
    return Validation(
        run=stored.row.run,
        path=str(data["path"]),
        score=score,
        verdict=str(data["verdict"]),
        passed=score >= PASS_SCORE,
        errors=int(data.get("errors", 0)),
        warnings=int(data.get("warnings", 0)),
        report_path=_text(data.get("report_path")),
        time=stored.row.time,
    )


def _saved(stored: StoredEvent) -> Saved:
    data = stored.row.data
    return Saved(stored.row.run or "?", int(data["step"]), str(data["path"]), stored.row.time)


def _comparison(stored: StoredEvent) -> ComparisonMade:
    data = stored.row.data
    return ComparisonMade(
        run=stored.row.run,
        model_a=str(data["model_a"]),
        model_b=str(data["model_b"]),
        winner=_text(data.get("winner")),
        summary=str(data.get("summary", stored.row.summary)),
        failed=bool(data.get("failed", False)),
        report_path=_text(data.get("report_path")),
        time=stored.row.time,
    )


def _alert(stored: StoredEvent) -> Alert:
    data = stored.row.data
    return Alert(
        run=stored.row.run or "?",
        kind=str(data["kind"]),
        severity=str(data.get("severity", stored.row.severity)),
        metric=str(data["metric"]),
        step=int(data["step"]),
        value=_number(data.get("value")),
        detail=str(data.get("detail", "")),
        time=stored.row.time,
    )


def _resource(stored: StoredEvent) -> ResourceEpisode:
    data = stored.row.data
    return ResourceEpisode(
        resource=str(data.get("resource", "?")),
        severity=str(data.get("severity", stored.row.severity)),
        summary=str(data.get("summary", stored.row.summary)),
        advice=str(data.get("advice", "")),
        path=_text(data.get("path")),
        run=_text(data.get("run")) or stored.row.run,
        recovered=stored.row.kind == RESOURCE_RECOVERED,
        time=stored.row.time,
    )


def _number(value: object) -> float:
    # orjson writes NaN and Inf as null: a non-finite alert's value comes back as None.
    return float(value) if isinstance(value, int | float) else float("nan")


def _text(value: object) -> str | None:
    return None if value is None else str(value)
