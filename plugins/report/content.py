"""What the daily report says, collected from the state database and the disk: `collect_report`.

Each run's status comes from `run_status.collect_status` (what `tunewatch status` shows), so the
report and the status command never disagree.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from tunewatch.daemon.events import FINISHED_STATUSES
from tunewatch.daemon.history import fmt_step
from tunewatch.daemon.run_status import RunStatus, collect_status
from tunewatch.daemon.store import Store, StoredEvent
from tunewatch.plugins.report import activity as act
from tunewatch.plugins.report import machine, storage
from tunewatch.plugins.report.advice import Rollback, Silence, last_snapshot_before, recommend
from tunewatch.plugins.report.model import (
    AlertMark,
    ChartData,
    Condition,
    Report,
    Resources,
    RunSeries,
    RunSummary,
)
from tunewatch.plugins.report.series import RunColumns, read_columns, steps_per_hour, thin

# History kinds the report reads over the whole run (episodes still open, snapshots to go back
# to); the rest it reads over the period only.
_EPISODE_KINDS = ("anomaly", "recovered", "snapshot", "best_model")
# Frequent samples that the report does not show.
_NOT_SHOWN = ("resources",)
# Runs whose checkpoints are measured: the most recently active ones. A box with ten thousand
# finished runs must not walk all of them every morning.
MAX_STORAGE_RUNS = 200
LOSS, EVAL_LOSS, LEARNING_RATE = "loss", "eval_loss", "learning_rate"

# The whole run is a small, light panel under the period's: a quarter of the points will do.
WHOLE_RUN_POINTS = 500


def collect_report(store: Store, *, since: float, until: float, now: float | None = None) -> Report:
    """Everything the report shows about the period [since, until): synchronous, read-only."""
    now = time.time() if now is None else now
    period = [s for s in store.history(since=since, exclude_kinds=_NOT_SHOWN) if s.row.time < until]
    found = act.episodes(s for s in store.history(kinds=_EPISODE_KINDS) if s.row.time < until)
    mentioned = {s.row.run for s in period if s.row.run is not None}
    statuses = [
        st for st in collect_status(store, now) if _worth_showing(st, since, found, mentioned)
    ]
    run_ids = {run.name: run.id for run in store.runs()}
    summaries, series, rollbacks = [], [], []
    for st in statuses:
        broken_at = found.broken_at(st.name)
        names = (LOSS, EVAL_LOSS, LEARNING_RATE) if broken_at is not None else (LOSS, EVAL_LOSS)
        columns = read_columns(store, run_ids[st.name], names, since=since, until=until)
        summaries.append(_summary(st, _condition(st, found), columns, broken_at))
        series.append(_series(st.name, columns, period))
        if broken_at is not None:
            rollbacks.append(_rollback(st.name, broken_at, found, columns))
    run_activity = act.activity(period)
    resources = _resources(statuses, found)
    silences = [_silence(store, run_ids[r.name], r) for r in summaries if r.condition == "stalled"]
    return Report(
        since=since,
        until=until,
        generated=now,
        runs=tuple(summaries),
        quiet_runs=len(run_ids) - len(summaries),
        activity=run_activity,
        anomalies=act.anomalies(period, found),
        resources=resources,
        recommendations=tuple(
            recommend(
                resources.volumes,
                resources.storage,
                run_activity,
                rollbacks,
                [s for s in silences if s is not None],
            )
        ),
        chart=ChartData(since=since, until=until, runs=tuple(s for s in series if s is not None)),
    )


def _worth_showing(st: RunStatus, since: float, found: act.Episodes, mentioned: set[str]) -> bool:
    """A run that logged or had events in the period, or is still meant to be training; finished
    runs that said nothing are counted, not listed."""
    if st.name in mentioned or (st.last_metric_time or 0.0) >= since:
        return True
    return (
        st.status not in FINISHED_STATUSES
        and (found.stalled(st.name) or not st.state.startswith("inactive"))
        and st.last_metric_time is not None
    )


def _condition(st: RunStatus, found: act.Episodes) -> Condition:
    if st.status in FINISHED_STATUSES:
        return "finished"
    if found.stalled(st.name) or st.state.startswith("stalled"):
        return "stalled"
    if st.state.startswith("inactive"):
        return "inactive"
    if st.last_metric_time is None and st.status is None:
        return "unknown"
    return "training"


def _summary(
    st: RunStatus, condition: Condition, columns: RunColumns, broken_at: int | None
) -> RunSummary:
    rate = steps_per_hour(columns.period[LOSS]) or steps_per_hour(columns.period[EVAL_LOSS])
    eta = None
    if condition == "training" and rate and st.total_steps and st.step is not None:
        eta = max(st.total_steps - st.step, 0) * 3600.0 / rate
    return RunSummary(
        name=st.name,
        path=st.path,
        condition=condition,
        state=st.state,
        step=st.step,
        total_steps=st.total_steps,
        progress=st.progress,
        progress_text=progress_text(st),
        loss=st.loss,
        eval_loss=st.eval_loss,
        accuracy=st.accuracy,
        steps_per_hour=rate,
        eta_s=eta,
        last_metric_time=st.last_metric_time,
        diverged_at_step=broken_at,
    )


def progress_text(st: RunStatus) -> str:
    """ "17,601 / 37,487 steps (47.0 %)", as far as the run's figures go."""
    if st.step is None:
        return "no step logged yet"
    if not st.total_steps or st.progress is None:
        return f"{fmt_step(st.step)} steps"
    return f"{fmt_step(st.step)} / {fmt_step(st.total_steps)} steps ({st.progress * 100:.1f} %)"


def _series(run: str, columns: RunColumns, period: Sequence[StoredEvent]) -> RunSeries | None:
    if not (len(columns.whole[LOSS]) or len(columns.whole[EVAL_LOSS])):
        return None
    marks = tuple(
        AlertMark(
            step=int(s.row.data["step"]),
            time=s.row.time,
            kind=str(s.row.data["kind"]),
            severity=s.row.severity,
        )
        for s in period
        if s.row.kind == "anomaly" and s.row.run == run and s.row.data.get("push", True)
    )
    return RunSeries(
        run=run,
        loss=thin(columns.period[LOSS]),
        eval_loss=thin(columns.period[EVAL_LOSS]),
        whole_loss=thin(columns.whole[LOSS], WHOLE_RUN_POINTS),
        whole_eval_loss=thin(columns.whole[EVAL_LOSS], WHOLE_RUN_POINTS),
        alerts=marks,
    )


def _rollback(run: str, broken_at: int, found: act.Episodes, columns: RunColumns) -> Rollback:
    snapshot = last_snapshot_before(found.snapshots.get(run, {}), broken_at)
    if snapshot is None:
        return Rollback(run, broken_at, None, None, None)
    step, path = snapshot
    lr = columns.whole[LEARNING_RATE].value_before(step + 1)
    return Rollback(run, broken_at, path, step, lr)


def _silence(store: Store, run_id: int, run: RunSummary) -> Silence | None:
    """Where the metrics of `run` stopped: the file its newest point came from, and when."""
    newest = store.newest_point_seqs().get(run_id)
    if newest is None:
        return None
    points = store.metrics(run_id=run_id, after_seq=newest - 1)
    if not points:
        return None
    point = points[-1]
    files = store.file_positions().get(run_id, [])
    named = [f.key for f in files if Path(f.key).name == point.source or f.source == point.source]
    file = named[0] if named else str(Path(run.path) / point.source)
    return Silence(run.name, file, point.time, point.step)


def _resources(statuses: Sequence[RunStatus], found: act.Episodes) -> Resources:
    dirs = [(st.name, Path(st.path)) for st in statuses]
    recent = sorted(statuses, key=lambda st: st.last_metric_time or 0.0, reverse=True)
    measured = [
        storage.run_storage(
            st.name,
            Path(st.path),
            _snapshots_dir(st, found),
            found.best_steps.get(st.name, [])[-1:],  # the current best; earlier ones were beaten
        )
        for st in recent[:MAX_STORAGE_RUNS]
        if Path(st.path).is_dir()
    ]
    gpus, note = machine.gpus()
    return Resources(
        volumes=tuple(storage.volumes(dirs)),
        storage=tuple(measured),
        memory=machine.host_memory(),
        gpus=gpus,
        gpu_note=note,
    )


def _snapshots_dir(st: RunStatus, found: act.Episodes) -> Path:
    """Where the run's snapshots went (the snapshot plugin's `[paths] snapshots`, as recorded),
    else the default `snapshots/` in the run directory."""
    taken = found.snapshots.get(st.name)
    if taken:
        return Path(taken[max(taken)]).parent
    return Path(st.path) / "snapshots"
