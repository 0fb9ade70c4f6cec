"""What a person reads about an event, shared by the plugins that alert (notify, alertmanager):
each event becomes an `Alert` with a short title and a one-line body.

A library, not a plugin. Pure functions of the event. Every interpolated value goes through
`one_line`; the text is plain (escaping for markup-aware desktops happens at the desktop channel,
the one place that needs it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath

from tunewatch.daemon.events import (
    AnomalyDetected,
    AnomalyResolved,
    BestModelFound,
    ComparisonFinished,
    RecordingFailed,
    RecordingResumed,
    ReportWritten,
    ResourceAlert,
    ResourceRecovered,
    SourceUnreadable,
    StatusChanged,
    ValidationFinished,
)
from tunewatch.daemon.history import fmt_duration, fmt_step, fmt_value

# Control characters (NUL cannot even travel over D-Bus) and whitespace runs fold into one space.
_CONTROL = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")

DEFAULT_LIMIT = 120


def one_line(text: str, limit: int = DEFAULT_LIMIT) -> str:
    """`text` on one line with control characters removed, cut to `limit` characters with `…`."""
    flat = _CONTROL.sub(" ", text).strip()
    if len(flat) <= limit:
        return flat
    return flat[: max(limit - 1, 0)].rstrip() + "…"


# Verdicts a validator uses to say "do not train on this".
# "fix" is the validator's verdict below 70/100: fix the data before training.
FAILING_VERDICTS = frozenset(
    {"fix", "unreadable", "fail", "failed", "failing", "rejected", "invalid", "error"}
)
# How the validator's other verdicts read in a notification.
VERDICT_WORDS = {"ready": "ready", "review": "review the warnings"}

_KIND_LABELS = {
    "non_finite": "non-finite value",
    "zscore": "unusual value",
}

# Words shown before `expected` when a detector gave no detail of its own.
_EXPECTED_WORDS = {
    "divergence": "best",
    "zscore": "typical",
    "accuracy_drop": "was",
    "inverted_loss": "was",
}


@dataclass(frozen=True, slots=True)
class Alert:
    """One notification: plain-text title and body, how urgent, and what a click opens."""

    title: str
    body: str
    kind: str
    run: str | None = None
    critical: bool = False
    target: str | None = None  # a file or folder to open when the notification is clicked


def metric_label(metric: str) -> str:
    """`eval_loss` -> `eval loss`: metric names as words."""
    return one_line(metric).replace("_", " ")


def kind_label(kind: str) -> str:
    """`loss_spike` -> `loss spike`: detector kinds as words."""
    return _KIND_LABELS.get(kind) or one_line(kind).replace("_", " ")


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def _name(path: str) -> str:
    return one_line(PurePath(path).name or path)


# -- anomalies ---------------------------------------------------------------------------------


# Titles of the anomalies whose title names no metric.
_ANOMALY_TITLES = {
    "divergence": "Training diverged",
    "loss_spike": "Loss spike",
    "inverted_loss": "Eval loss rising while train loss falls",
    "accuracy_drop": "Accuracy dropped",
    "stall": "Training stalled",
}


def anomaly_title(e: AnomalyDetected) -> str:
    run = one_line(e.run)
    if e.kind == "non_finite":
        return f"{fmt_value(e.value)} {metric_label(e.metric)}: {run}"
    if e.kind == "zscore":
        return f"Unusual {metric_label(e.metric)}: {run}"
    what = _ANOMALY_TITLES.get(e.kind) or kind_label(e.kind).capitalize()
    return f"{what}: {run}"


def anomaly_body(e: AnomalyDetected) -> str:
    detail = one_line(e.detail)
    if e.kind == "stall":
        # The stall check words its own finding ("No new metric for 35 min (status: training)").
        return detail or f"No new metric since step {fmt_step(e.step)}"
    head = f"Step {fmt_step(e.step)}: {metric_label(e.metric)}"
    if e.kind == "non_finite":
        line = f"{head} is {fmt_value(e.value)}"
        return f"{line} ({detail})" if detail else line
    line = f"{head} {fmt_value(e.value)}"
    if detail:
        return f"{line} ({detail})"
    if e.expected is None:
        return line
    return f"{line} ({_EXPECTED_WORDS.get(e.kind, 'expected')} {fmt_value(e.expected)})"


def anomaly_alert(e: AnomalyDetected, run_dir: str | None = None) -> Alert:
    return Alert(
        title=anomaly_title(e),
        body=anomaly_body(e),
        kind="anomaly",
        run=e.run,
        critical=e.severity == "critical",
        target=run_dir,
    )


def recovery_alert(e: AnomalyResolved, run_dir: str | None = None) -> Alert:
    what = kind_label(e.kind).capitalize()
    on_metric = f" on {metric_label(e.metric)}" if e.metric else ""
    return Alert(
        title=f"Recovered: {one_line(e.run)}",
        body=f"{what}{on_metric} is over (step {fmt_step(e.step)})",
        kind="recovered",
        run=e.run,
        target=run_dir,
    )


# -- results -----------------------------------------------------------------------------------


def best_model_alert(e: BestModelFound, snapshot: str | None) -> Alert:
    body = f"Step {fmt_step(e.step)}: {metric_label(e.metric)} {fmt_value(e.value)}"
    if snapshot is not None:
        body += " · snapshot saved"
    return Alert(
        title=f"New best model: {one_line(e.run)}",
        body=body,
        kind="best_model",
        run=e.run,
        target=snapshot or e.checkpoint,
    )


# Statuses that say a run ended badly: told as critical.
FAILED_STATUSES = frozenset({"failed", "error", "crashed", "killed", "aborted"})
# The final metrics a finished run's notification gives, in this order.
FINAL_METRICS = ("loss", "eval_loss", "eval_accuracy", "accuracy")


@dataclass(frozen=True, slots=True)
class RunEnd:
    """What a finished run's notification says besides its status: where it ended, its final
    metrics (name -> value), its best model and where that model is."""

    step: int | None
    total_steps: int | None
    final: dict[str, float]
    best: BestModelFound | None = None
    best_checkpoint: str | None = None
    snapshot: str | None = None


def finished_alert(e: StatusChanged, end: RunEnd, run_dir: str | None = None) -> Alert:
    run = one_line(e.run)
    failed = e.status in FAILED_STATUSES
    parts = []
    if end.step is not None:
        where = f"Step {fmt_step(end.step)}"
        if end.total_steps:
            where += f" / {fmt_step(end.total_steps)}"
        parts.append(where)
    finals = [
        f"{metric_label(name)} {fmt_value(end.final[name])}"
        for name in FINAL_METRICS
        if name in end.final
    ]
    if finals:
        parts.append(", ".join(finals))
    if end.best is not None:
        parts.append(
            f"best {metric_label(end.best.metric)} {fmt_value(end.best.value)} "
            f"at step {fmt_step(end.best.step)}"
        )
    where_best = end.snapshot or end.best_checkpoint
    if where_best is not None:
        parts.append(_name(where_best))
    status = "" if e.status in ("finished", "completed") else f" ({one_line(e.status, 20)})"
    return Alert(
        title=f"Training {'failed' if failed else 'finished'}: {run}{status}",
        body=" · ".join(parts) or f"status {one_line(e.status, 40)}",
        kind="finished",
        run=e.run,
        critical=failed,
        target=where_best or run_dir,
    )


def validation_failed(e: ValidationFinished) -> bool:
    return e.verdict.strip().lower() in FAILING_VERDICTS


def validation_alert(e: ValidationFinished) -> Alert:
    name = _name(e.path)
    target = e.report_path or str(PurePath(e.path).parent)
    if validation_failed(e):
        body = f"FAILED: {plural(e.errors, 'error')}"
        if e.warnings:
            body += f", {plural(e.warnings, 'warning')}"
        return Alert(
            title=f"Data check failed: {name}",
            body=f"{body} (score {e.score}/100)",
            kind="validation",
            run=e.run,
            critical=True,
            target=target,
        )
    verdict = VERDICT_WORDS.get(e.verdict.strip().lower(), e.verdict)
    body = f"{name}: {e.score}/100, {one_line(verdict, 40)}"
    if e.warnings:
        body += f", {plural(e.warnings, 'warning')}"
    return Alert(
        title=f"Data checked: {name}", body=body, kind="validation", run=e.run, target=target
    )


def comparison_alert(e: ComparisonFinished) -> Alert:
    a, b = _name(e.model_a), _name(e.model_b)
    summary = one_line(e.summary, 200)
    if not summary:
        summary = f"{_name(e.winner)} is better" if e.winner else "no clear winner"
    return Alert(
        title=f"Comparison failed: {a} vs {b}" if e.failed else f"Models compared: {a} vs {b}",
        body=summary,
        kind="comparison",
        run=e.run,
        target=e.report_path,
    )


def report_alert(e: ReportWritten) -> Alert:
    health = one_line(e.health, 200)
    return Alert(
        title="Daily report ready",
        body=health or f"Last {e.period_hours:g} h: {_name(e.path)}",
        kind="report",
        target=e.path,
    )


# -- resources ---------------------------------------------------------------------------------

# How each resource's alert is titled: "Disk filling: /data".
_RESOURCE_TITLES = {
    "disk": "Disk filling",
    "memory": "Memory running out",
    "trainer_memory": "Trainer memory climbing",
    "gpu_memory": "GPU memory nearly full",
}
# The advice names paths and an `rm -r` command: longer than a title's line.
RESOURCE_TEXT_LIMIT = 600


def _resource_subject(resource: str, path: str | None, run: str | None) -> str:
    title = _RESOURCE_TITLES.get(resource) or kind_label(resource).capitalize()
    where = path or run
    return f"{title}: {one_line(where)}" if where else title


def resource_alert(e: ResourceAlert) -> Alert:
    summary = one_line(e.summary, RESOURCE_TEXT_LIMIT)
    advice = one_line(e.advice, RESOURCE_TEXT_LIMIT)
    return Alert(
        title=_resource_subject(e.resource, e.path, e.run),
        body=f"{summary}. {advice}" if advice else summary,
        kind="resource",
        run=e.run,
        critical=e.severity == "critical",
        target=e.path if e.resource == "disk" else None,
    )


def resource_recovered_alert(e: ResourceRecovered) -> Alert:
    return Alert(
        title=f"Recovered: {_resource_subject(e.resource, e.path, e.run)}",
        body=one_line(e.summary, RESOURCE_TEXT_LIMIT),
        kind="recovered",
        run=e.run,
    )


# -- tunewatch's own health --------------------------------------------------------------------


def recording_failed_alert(e: RecordingFailed) -> Alert:
    return Alert(
        title="tunewatch cannot record",
        body=f"tunewatch cannot record: {one_line(e.reason, 200)}. Nothing is lost: reading "
        "resumes by itself once this is fixed.",
        kind="recording",
        critical=True,
    )


def recording_resumed_alert(e: RecordingResumed) -> Alert:
    return Alert(
        title="tunewatch is recording again",
        body=f"Stopped for {fmt_duration(e.time - e.since)} ({one_line(e.reason, 120)}); "
        "nothing was lost",
        kind="recording",
    )


def source_unreadable_alert(e: SourceUnreadable, run_dir: str | None = None) -> Alert:
    return Alert(
        title=f"Cannot read {_name(e.source)}: {one_line(e.run)}",
        body=f"{one_line(e.message, 200)} (retried until it can be read)",
        kind="source_unreadable",
        run=e.run,
        target=run_dir,
    )
