"""State databases for report tests, filled through the store's real commit paths."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from pathlib import Path

from tunewatch.daemon import events as ev
from tunewatch.daemon.store import FileState, Store

HOUR = 3600.0
# A fixed "now" for reports: 2026-03-02 08:00 UTC.
UNTIL = 1_772_438_400.0
SINCE = UNTIL - 24 * HOUR


class StoreBuilder:
    """A writable store in `tmp`, and run directories beside it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.db = tmp / "state" / "state.db"
        self.store = Store(self.db)

    def run(self, name: str) -> tuple[int, Path]:
        directory = self.tmp / "runs" / name
        directory.mkdir(parents=True, exist_ok=True)
        return self.store.ensure_run(str(directory), name), directory

    def points(
        self,
        run: str,
        steps: Sequence[int],
        times: Sequence[float],
        columns: dict[str, Sequence[float]],
        *,
        source: str = "trainer_log.jsonl",
        extra: Sequence[ev.RunEvent] = (),
    ) -> None:
        """A MetricsBatch (and `extra` events) committed with the position of `source`."""
        run_id, directory = self.run(run)
        batch = ev.MetricsBatch(
            run,
            source,
            array("q", steps),
            array("d", times),
            {name: array("d", values) for name, values in columns.items()},
        )
        state = FileState(key=str(directory / source), run_id=run_id, source="jsonl")
        self.store.commit_batch(run_id, [batch, *extra], state)

    def record(self, *events: ev.Event) -> None:
        self.store.record_many(events)

    def close(self) -> Path:
        self.store.close()
        return self.db


def anomaly(
    run: str,
    step: int,
    kind: str,
    *,
    metric: str = "loss",
    value: float = 9.0,
    severity: ev.Severity = "critical",
    push: bool = True,
    time: float = UNTIL - HOUR,
) -> ev.AnomalyDetected:
    return ev.AnomalyDetected(
        run=run,
        step=step,
        kind=kind,
        severity=severity,
        metric=metric,
        value=value,
        expected=None,
        detail=f"{kind} found by a test",
        time=time,
        push=push,
    )
