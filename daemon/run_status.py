"""Where each run stands, read from the state database: what `tunewatch status` shows."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

from tunewatch.daemon.events import FINISHED_STATUSES
from tunewatch.daemon.history import fmt_duration, fmt_step, fmt_value
from tunewatch.daemon.instance_lock import DaemonHealth
from tunewatch.daemon.latest import TRACKED_METRICS, LatestValue
from tunewatch.daemon.store import FilePosition, Store
from tunewatch.daemon.text import printable

# A run that is not finished but logged nothing for this long is shown as inactive.
INACTIVE_AFTER_S = 3600.0
# Silent this long while not finished: stalled (the anomaly plugin's default stall_minutes).
STALLED_AFTER_S = 1800.0


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
    files: list[FilePosition]

    @property
    def state(self) -> str:
        """What the run is doing, as a person says it: its finished status ("finished",
        "completed", "failed"...), "stalled since ..." when nothing came for half an hour,
        "inactive since ..." after an hour, else the status its trainer gave."""
        if self.status in FINISHED_STATUSES:
            return self.status
        silent = self.seconds_since_last_metric
        if self.last_metric_time is not None and silent is not None and silent > STALLED_AFTER_S:
            since = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.last_metric_time))
            return f"{'inactive' if silent > INACTIVE_AFTER_S else 'stalled'} since {since}"
        return self.status or ("training" if self.last_metric_time is not None else "unknown")

    @property
    def progress(self) -> float | None:
        if self.step is None or not self.total_steps:
            return None
        return min(self.step / self.total_steps, 1.0)

    def to_json(self) -> dict[str, Any]:
        """The fields as a dict for orjson (which writes the nested dataclasses itself: the
        deep copy of `dataclasses.asdict` took most of `status --json` with 10,000 runs)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["progress"] = self.progress
        data["state"] = self.state
        return data


def collect_status(store: Store, now: float | None = None) -> list[RunStatus]:
    """Every run's status, in a handful of queries whatever the number of runs."""
    now = time.time() if now is None else now
    latest = store.latest_values(TRACKED_METRICS)
    newest = store.newest_points()
    points = store.point_counts()
    errors = store.event_counts("source_error")
    files = store.file_positions()
    result = []
    for run in store.runs():
        values = latest.get(run.id, {})
        step, last_time = newest.get(run.id, (None, None))
        error_count, last_error = errors.get(run.id, (0, None))
        result.append(
            RunStatus(
                name=run.name,
                path=run.path,
                status=run.status,
                step=step,
                total_steps=run.total_steps or _whole(values.get("total_steps")),
                loss=_value(values.get("loss")),
                eval_loss=_value(values.get("eval_loss")),
                accuracy=_value(values.get("accuracy") or values.get("eval_accuracy")),
                last_metric_time=last_time,
                seconds_since_last_metric=None if last_time is None else now - last_time,
                points=points.get(run.id, 0),
                source_errors=error_count,
                last_error=last_error,
                files=files.get(run.id, []),
            )
        )
    return result


def _value(latest: LatestValue | None) -> float | None:
    return None if latest is None else latest.value


def _whole(latest: LatestValue | None) -> int | None:
    if latest is None or not math.isfinite(latest.value) or latest.value <= 0:
        return None
    return int(latest.value)


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
        lines.append(f"  status         {r.state}")
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
    for plugin, state in sorted(health.plugins.items()):
        if state.startswith("failed"):
            lines.append(f"  plugin {plugin} {state}; see the log (journalctl --user -u tunewatch)")
    return "\n".join(map(printable, lines)) + "\n"
