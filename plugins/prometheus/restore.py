"""What the exporter starts from: every recent run and alert count as the store holds them.

A restarted daemon must export the values it exported before, not zeros that Prometheus would
graph as a drop and alert on. Runs on the store's worker thread (blocking SQLite reads).
"""

from __future__ import annotations

from dataclasses import dataclass

from tunewatch.daemon.metric_chunks import unpack
from tunewatch.daemon.store import Store
from tunewatch.plugins.prometheus.fleet_state import (
    EXPORTED_VALUES,
    TOTAL_STEPS,
    AlertKey,
    StoredRun,
)

# Kinds of recorded events counted as alerts, and the data field that says which alert it was.
ALERT_KINDS = {"anomaly": "kind", "resource_alert": "resource"}
# The metrics `latest_metrics` keeps current (daemon/latest.py); the learning rate is not one of
# them and is read from the newest chunk that holds it.
_TRACKED = tuple(n for n in (*EXPORTED_VALUES, TOTAL_STEPS) if n != "learning_rate")


@dataclass(frozen=True, slots=True)
class StoredFleet:
    runs: list[StoredRun]
    alerts: dict[AlertKey, int]
    last_seq: int  # run events up to here are counted in `runs`


def read_fleet(store: Store, *, active_since: float) -> StoredFleet:
    """The runs heard of since `active_since` (unix time) and the alert counts of each."""
    last_seq = store.last_seq()
    latest = store.latest_values(_TRACKED)
    newest = _newest_steps(store)
    points = store.point_counts()
    errors = store.event_counts("source_error")
    runs: list[StoredRun] = []
    for row in store.runs():
        steps = newest.get(row.id, {})
        last_time = max((t for _step, t in steps.values()), default=None)
        active = max(row.updated, last_time or 0.0)
        if active < active_since:
            continue
        values = {name: v.value for name, v in latest.get(row.id, {}).items()}
        learning_rate = _newest_learning_rate(store, row.id)
        if learning_rate is not None:
            values["learning_rate"] = learning_rate
        runs.append(
            StoredRun(
                name=row.name,
                status=row.status,
                total_steps=row.total_steps,
                newest_steps={source: step for source, (step, _t) in steps.items()},
                last_metric_time=last_time,
                values=values,
                points=points.get(row.id, 0),
                source_errors=errors.get(row.id, (0, ""))[0],
                active=active,
            )
        )
    return StoredFleet(runs, _alert_counts(store), last_seq)


def _newest_steps(store: Store) -> dict[int, dict[str, tuple[int, float]]]:
    """Run id -> source -> (step, time) of that source's newest point."""
    result: dict[int, dict[str, tuple[int, float]]] = {}
    rows = store.db.execute("SELECT run_id, source, step, time FROM latest_steps")
    for run_id, source, step, when in rows:
        result.setdefault(run_id, {})[source] = (int(step), float(when))
    return result


def _newest_learning_rate(store: Store, run_id: int) -> float | None:
    # A chunk's `names` column is JSON of its metric names (see metric_chunks.names_text).
    row = store.db.execute(
        "SELECT source, first_seq, names, data, seqs FROM metric_chunks"
        " WHERE run_id = ? AND names LIKE '%\"learning_rate\":%' ORDER BY last_seq DESC LIMIT 1",
        (run_id,),
    ).fetchone()
    if row is None:
        return None
    value = None
    for _seq, _step, _time, metrics in unpack(*row).points():
        value = metrics.get("learning_rate", value)
    return value


def _alert_counts(store: Store) -> dict[AlertKey, int]:
    """(run, kind, severity) -> alerts recorded, over the whole history."""
    names = store.run_names()
    counts: dict[AlertKey, int] = {}
    for kind, field_name in ALERT_KINDS.items():
        rows = store.db.execute(
            "SELECT run_id, json_extract(data, ?), severity, count(*) FROM events"
            " WHERE kind = ? GROUP BY run_id, json_extract(data, ?), severity",
            (f"$.{field_name}", kind, f"$.{field_name}"),
        )
        for run_id, which, severity, n in rows:
            key = (names.get(run_id, "") if run_id else "", str(which), str(severity))
            counts[key] = counts.get(key, 0) + int(n)
    return counts
