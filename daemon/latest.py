"""The newest value of each metric and the newest point of each source, per run.

`tunewatch status` shows a run's current loss, accuracy and step. Finding them in the packed
metric chunks means decoding the newest chunks of every run; with thousands of runs that takes
minutes. The ingest transaction instead keeps two small tables current (`latest_metrics`,
`latest_steps`), so status reads them with one query each.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tunewatch.daemon.events import MetricsBatch

_DOUBLE = struct.Struct("<d")

# The metrics whose newest value is kept: what `tunewatch status` shows. Keeping every metric
# would cost an upsert per metric per logged line (a hundred runs logging at once).
TRACKED_METRICS = frozenset({"loss", "eval_loss", "accuracy", "eval_accuracy", "total_steps"})

# Values are 8-byte little-endian doubles: SQLite turns a REAL NaN into NULL, and a NaN loss is
# exactly what status must show.
LATEST_SCHEMA = """
CREATE TABLE IF NOT EXISTS latest_metrics (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    name TEXT NOT NULL,
    seq INTEGER NOT NULL,
    step INTEGER NOT NULL,
    time REAL NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (run_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS latest_steps (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    source TEXT NOT NULL,
    seq INTEGER NOT NULL,
    step INTEGER NOT NULL,
    time REAL NOT NULL,
    PRIMARY KEY (run_id, source)
) WITHOUT ROWID;
"""

UPSERT_LATEST_METRIC = (
    "INSERT INTO latest_metrics (run_id, name, seq, step, time, value)"
    " VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT(run_id, name) DO UPDATE SET seq = excluded.seq, step = excluded.step,"
    " time = excluded.time, value = excluded.value WHERE excluded.seq > latest_metrics.seq"
)
UPSERT_LATEST_STEP = (
    "INSERT INTO latest_steps (run_id, source, seq, step, time) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT(run_id, source) DO UPDATE SET seq = excluded.seq, step = excluded.step,"
    " time = excluded.time WHERE excluded.seq > latest_steps.seq"
)


def pack_value(value: float) -> bytes:
    return _DOUBLE.pack(value)


def unpack_value(data: bytes) -> float:
    value: float = _DOUBLE.unpack(data)[0]
    return value


@dataclass(frozen=True, slots=True)
class LatestValue:
    step: int
    time: float
    value: float


class Latest:
    """Collects the newest value per metric and the newest point per source of a batch."""

    def __init__(self) -> None:
        self.metrics: dict[str, tuple[int, int, float, float]] = {}  # name -> seq, step, t, v
        self.sources: dict[str, tuple[int, int, float]] = {}  # source -> seq, step, time

    def add_point(
        self, source: str, seq: int, step: int, time: float, metrics: Mapping[str, float]
    ) -> None:
        """Note one point (points come in seq order)."""
        self.sources[source] = (seq, step, time)
        for name, value in metrics.items():
            if name in TRACKED_METRICS:
                self.metrics[name] = (seq, step, time, value)

    def add_batch(self, batch: MetricsBatch) -> None:
        """Note a batch by its last point: every column has a value there."""
        if not len(batch):
            return
        last = len(batch) - 1
        self.add_point(
            batch.source,
            batch.seq + last,
            batch.steps[last],
            batch.times[last],
            {
                name: column[last]
                for name, column in batch.columns.items()
                if name in TRACKED_METRICS
            },
        )

    def metric_rows(self, run_id: int) -> list[tuple[object, ...]]:
        """Rows for `UPSERT_LATEST_METRIC`."""
        return [
            (run_id, name, seq, step, t, pack_value(v))
            for name, (seq, step, t, v) in self.metrics.items()
        ]

    def step_rows(self, run_id: int) -> list[tuple[object, ...]]:
        """Rows for `UPSERT_LATEST_STEP`."""
        return [(run_id, source, seq, step, t) for source, (seq, step, t) in self.sources.items()]

    def save(self, db: sqlite3.Connection, run_id: int) -> None:
        """Upsert into the tables, inside the caller's transaction."""
        db.executemany(UPSERT_LATEST_METRIC, self.metric_rows(run_id))
        db.executemany(UPSERT_LATEST_STEP, self.step_rows(run_id))


def latest_values(
    db: sqlite3.Connection, names: Iterable[str], run_id: int | None = None
) -> dict[int, dict[str, LatestValue]]:
    """Run id -> metric name -> its newest value, for the metrics `names` (of TRACKED_METRICS),
    of every run or of `run_id`."""
    wanted = list(names)
    result: dict[int, dict[str, LatestValue]] = {}
    sql = (
        "SELECT run_id, name, step, time, value FROM latest_metrics"
        f" WHERE name IN ({', '.join('?' * len(wanted))})"
    )
    args: list[object] = list(wanted)
    if run_id is not None:
        sql += " AND run_id = ?"
        args.append(run_id)
    rows = db.execute(sql, args)
    for run_id, name, step, t, value in rows:
        result.setdefault(run_id, {})[name] = LatestValue(step, t, unpack_value(value))
    return result


def newest_points(db: sqlite3.Connection) -> dict[int, tuple[int, float]]:
    """Run id -> (step, time) of its newest point.

    The step is the highest of each source's newest step: a run resumed from a checkpoint
    shows the step it is at now, not the highest it ever reached.
    """
    rows = db.execute("SELECT run_id, max(step), max(time) FROM latest_steps GROUP BY run_id")
    return {run_id: (int(step), float(t)) for run_id, step, t in rows}
