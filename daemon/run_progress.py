"""When a run counts as finished, and the status change that says so.

Trainers do not always say it: a Hugging Face run that completed keeps the "training" its
`trainer_state.json` implied, and a LLaMA-Factory log simply stops at its last step. A run is
finished when its trainer's status says so, when it reaches its total steps, or when it logs the
end-of-training summary (`train_runtime`). The ingest adds the `StatusChanged` that says so to
the same commit as the point that finished the run, so it is recorded exactly once, shown by
`status`, and no stall is alerted for a run that is done.
"""

from __future__ import annotations

from collections.abc import Sequence

from tunewatch.daemon.events import (
    FINISHED_STATUSES,
    MetricsBatch,
    MetricsLogged,
    RunEvent,
    StatusChanged,
)
from tunewatch.daemon.sources.run_sources import RunSources

FINISHED = "finished"
TRAINING = "training"
# A metric only the end-of-training summary carries (Hugging Face Trainer, and others after it).
SUMMARY_METRIC = "train_runtime"


def implied_status(
    run: RunSources, events: Sequence[RunEvent], *, live: bool
) -> StatusChanged | None:
    """The status change `events` imply for `run`, to be committed with them (or None).

    "finished" when the run reaches its total steps or logs its summary; "training" again when,
    after such a finish, points come live from an earlier step (the run was resumed). Changes
    nothing: `follow` does, once the commit went in.
    """
    finished, total = run.finished, run.total_steps
    summary, newest, source = False, None, None
    for event in events:
        if isinstance(event, StatusChanged):
            finished = event.status in FINISHED_STATUSES
            total = event.total_steps or total
        elif isinstance(event, MetricsLogged | MetricsBatch) and _has_points(event):
            step, logged_total, has_summary = _point_progress(event)
            newest, source = step, event.source
            total = logged_total or total
            summary = summary or has_summary
    if newest is None or source is None:
        return None
    if not finished and (summary or (total is not None and newest >= total)):
        return StatusChanged(
            run.name, FINISHED, source, step=newest, total_steps=total, implied=True
        )
    if finished and run.status_is_ours and live and total is not None and newest < total:
        return StatusChanged(
            run.name, TRAINING, source, step=newest, total_steps=total, implied=True
        )
    return None


def follow(run: RunSources, recorded: Sequence[RunEvent], *, live: bool) -> None:
    """Keep `run`'s progress current from events that were recorded."""
    for event in recorded:
        if isinstance(event, StatusChanged):
            if event.implied and run.finished and not run.status_is_ours:
                continue  # the trainer reported its end itself: the store kept that (_apply_status)
            run.finished = event.status in FINISHED_STATUSES
            run.status_is_ours = event.implied
            run.logging_after_finish = False
            run.total_steps = event.total_steps or run.total_steps
        elif isinstance(event, MetricsLogged | MetricsBatch) and _has_points(event):
            run.total_steps = _point_progress(event)[1] or run.total_steps
            # A finished run that logs on (resumed without saying so) is watched closely again.
            run.logging_after_finish = run.logging_after_finish or (live and run.finished)


def _has_points(event: MetricsLogged | MetricsBatch) -> bool:
    return isinstance(event, MetricsLogged) or len(event) > 0


def _point_progress(event: MetricsLogged | MetricsBatch) -> tuple[int, int | None, bool]:
    """(newest step, total steps if logged, whether the summary is there) of a metrics event."""
    if isinstance(event, MetricsLogged):
        total = event.metrics.get("total_steps")
        return event.step, _whole(total), SUMMARY_METRIC in event.metrics
    column = event.columns.get("total_steps")
    total = column[-1] if column is not None and len(column) else None
    return event.steps[-1], _whole(total), SUMMARY_METRIC in event.columns


def _whole(value: float | None) -> int | None:
    if value is None or value != value or value <= 0 or value == float("inf"):
        return None
    return int(value)
