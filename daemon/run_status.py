"""Where each run stands, read from the state database: what `tunewatch status` shows."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from tunewatch.daemon.history import fmt_duration, fmt_step, fmt_value
from tunewatch.daemon.instance_lock import DaemonHealth
from tunewatch.daemon.store import Store
from tunewatch.daemon.text import printable


@dataclass(frozen=True, slots=True)
class FileStatus:
    key: str
    source: str
    offset: int
    lines: int
    errors: int


@dataclass(frozen=True, slots=True)
class RunStatus:
    name: str
    path: str
    status: str | None
    step: int | None
    total_steps: int | None
    loss: float | None
    eval_loss: float | None
    accuracy: float | None
    last_metric_time: float | None
    seconds_since_last_metric: float | None
    points: int
    source_errors: int
    last_error: str | None
    files: list[FileStatus]

    @property
    def progress(self) -> float | None:
        if self.step is None or not self.total_steps:
            return None
        return min(self.step / self.total_steps, 1.0)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["progress"] = self.progress
        return data


def collect_status(store: Store, now: float | None = None) -> list[RunStatus]:
    now = time.time() if now is None else now
    result = []
    for run in store.runs():
        last = store.last_point(run.id)
        loss = store.latest_metric(run.id, "loss")
        eval_loss = store.latest_metric(run.id, "eval_loss")
        accuracy = store.latest_metric(run.id, "accuracy") or store.latest_metric(
            run.id, "eval_accuracy"
        )
        total = run.total_steps
        if total is None:
            progress_point = store.latest_metric(run.id, "total_steps")
            total = int(progress_point.metrics["total_steps"]) if progress_point else None
        files = store.file_states(run.id)
        result.append(
            RunStatus(
                name=run.name,
                path=run.path,
                status=run.status,
                step=store.max_step(run.id),
                total_steps=total,
                loss=loss.metrics["loss"] if loss else None,
                eval_loss=eval_loss.metrics["eval_loss"] if eval_loss else None,
                accuracy=_accuracy(accuracy.metrics) if accuracy else None,
                last_metric_time=last.time if last else None,
                seconds_since_last_metric=(now - last.time) if last else None,
                points=store.count_points(run.id),
                source_errors=store.count_events(run.id, "source_error"),
                last_error=store.last_summary(run.id, "source_error"),
                files=[FileStatus(f.key, f.source, f.offset, f.line_no, f.errors) for f in files],
            )
        )
    return result


def _accuracy(metrics: dict[str, float]) -> float:
    return metrics.get("accuracy", metrics.get("eval_accuracy", float("nan")))


def fmt_age(seconds: float) -> str:
    return f"{fmt_duration(seconds)} ago"


def fmt_percent(fraction: float) -> str:
    # Accuracy may be logged as a fraction (0.597) or a percentage (59.7).
    return f"{fraction * 100:.1f}%" if fraction <= 1.0 else f"{fraction:.1f}%"


def render_status(runs: list[RunStatus]) -> str:
    if not runs:
        return "No runs recorded yet. Start `tunewatch run DIR` (or the service) first.\n"
    blocks = []
    for r in runs:
        lines = [f"{r.name}  ({r.path})"]
        lines.append(f"  status         {r.status or 'unknown'}")
        if r.step is not None:
            progress = f"step {fmt_step(r.step)}"
            if r.total_steps:
                progress += f" / {fmt_step(r.total_steps)} ({(r.progress or 0) * 100:.1f}%)"
            lines.append(f"  progress       {progress}")
        if r.loss is not None:
            lines.append(f"  loss           {fmt_value(r.loss)}")
        if r.eval_loss is not None:
            lines.append(f"  eval loss      {fmt_value(r.eval_loss)}")
        if r.accuracy is not None:
            lines.append(f"  accuracy       {fmt_percent(r.accuracy)}")
        if r.seconds_since_last_metric is not None:
            lines.append(f"  last metric    {fmt_age(r.seconds_since_last_metric)}")
        else:
            lines.append("  last metric    none yet")
        lines.append(f"  points         {r.points:,} from {len(r.files)} file(s)")
        errors = f"{r.source_errors}"
        if r.last_error:
            errors += f" (last: {r.last_error})"
        lines.append(f"  source errors  {errors}")
        # Names, paths, statuses and error text come from files: escape what they hold.
        blocks.append("\n".join(map(printable, lines)))
    return "\n\n".join(blocks) + "\n"


def daemon_json(running: bool, health: DaemonHealth | None) -> dict[str, Any]:
    """The daemon's own state for `status --json`; a stale record says nothing when stopped."""
    if not running or health is None:
        return {"running": running, "pid": None, "recording_failure": None, "unreadable": []}
    data = asdict(health)
    data["running"] = True
    data["unreadable"] = [
        {"path": p, "kind": k, "message": m, "since": t} for p, k, m, t in health.unreadable
    ]
    return data


def render_daemon(running: bool, health: DaemonHealth | None, now: float | None = None) -> str:
    """One paragraph on the daemon itself: running or not, recording or not, and why."""
    now = time.time() if now is None else now
    if not running or health is None:
        return (
            "tunewatch is not running: nothing new is recorded. Start it with "
            "`systemctl --user start tunewatch` or `tunewatch run`.\n"
        )
    lines = [f"tunewatch is running (pid {health.pid}, for {fmt_duration(now - health.started)})"]
    if health.recording_failure is not None:
        since = health.recording_failure_since or now
        lines.append(
            f"  CANNOT RECORD for {fmt_duration(now - since)}: {health.recording_failure}. "
            "Nothing is lost; it resumes by itself once this is fixed."
        )
    if health.unreadable_files:
        lines.append(
            f"  {health.unreadable_files} file(s) cannot be read (retried until they can):"
        )
        lines += [f"    {path}: {message}" for path, _kind, message, _since in health.unreadable]
        if health.unreadable_files > len(health.unreadable):
            lines.append(f"    ... and {health.unreadable_files - len(health.unreadable)} more")
    return "\n".join(map(printable, lines)) + "\n"
