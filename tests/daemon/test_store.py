"""The state database: WAL, atomic batches, seq stamping, NaN round trips, concurrent readers."""

from __future__ import annotations

import math
import sqlite3
from array import array
from dataclasses import replace
from pathlib import Path

import pytest

from tunewatch.daemon.events import (
    AnomalyDetected,
    CheckpointSaved,
    MetricsBatch,
    MetricsLogged,
    ResourceSample,
    RunEvent,
    SourceError,
    StatusChanged,
)
from tunewatch.daemon.store import (
    SCHEMA_VERSION,
    AsyncStore,
    FileState,
    Store,
    StoreError,
    StoreFailure,
)


def metric(step: int, **values: float) -> MetricsLogged:
    return MetricsLogged(
        run="run-a", step=step, metrics=values or {"loss": 1.0}, source="log.jsonl"
    )


def test_the_database_is_in_wal_mode_with_a_schema_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    store.close()


def test_a_batch_and_its_file_position_commit_together(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    run_id = store.ensure_run(str(tmp_path / "run-a"), "run-a")
    events: list[RunEvent] = [
        metric(1),
        metric(2),
        StatusChanged(run="run-a", status="training", source="s", total_steps=100),
    ]
    state = FileState(key="k", run_id=run_id, source="jsonl", offset=123, line_no=2)
    store.commit_batch(run_id, events, state)
    assert [e.seq for e in events] == [1, 2, 3]
    assert store.file_state("k") == state
    assert [p.step for p in store.metrics()] == [1, 2]
    run = store.runs()[0]
    assert (run.status, run.total_steps) == ("training", 100)
    store.close()


def test_a_failed_batch_leaves_neither_events_nor_position(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    run_id = store.ensure_run("/r", "r")
    bad_state = FileState(key="k", run_id=run_id + 99, source="jsonl", offset=50)  # FK violation
    with pytest.raises(StoreFailure, match="FOREIGN KEY"):
        store.commit_batch(run_id, [metric(1)], bad_state)
    assert store.metrics() == []
    assert store.file_state("k") is None
    store.close()


def test_non_finite_values_survive_the_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    run_id = store.ensure_run("/r", "r")
    store.commit_batch(run_id, [metric(1, loss=math.nan, grad_norm=math.inf, lr=-math.inf)], None)
    (point,) = store.metrics()
    assert math.isnan(point.metrics["loss"])
    assert point.metrics["grad_norm"] == math.inf
    assert point.metrics["lr"] == -math.inf
    store.close()


def test_seq_continues_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = Store(path)
    run_id = store.ensure_run("/r", "r")
    store.commit_batch(run_id, [metric(1), metric(2)], None)
    store.close()
    store = Store(path)
    later = [metric(3)]
    store.commit_batch(run_id, later, None)
    assert later[0].seq == 3
    store.close()


def test_run_names_stay_unique(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    a = store.ensure_run("/x/run", "run")
    b = store.ensure_run("/y/run", "run")
    assert store.ensure_run("/x/run", "run") == a
    assert store.run_names() == {a: "run", b: "run-2"}
    store.close()


def test_history_records_run_and_plugin_events_with_summaries(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    run_id = store.ensure_run("/r", "run-a")
    store.commit_batch(
        run_id,
        [
            SourceError(
                run="run-a",
                source="log.jsonl",
                kind="invalid_json",
                message="bad",
                location="/r/log.jsonl:3",
            ),
            CheckpointSaved(
                run="run-a", step=500, path="/r/checkpoint-500", source="trainer_state.json"
            ),
        ],
        None,
    )
    store.record(
        AnomalyDetected(
            run="run-a",
            step=18500,
            kind="divergence",
            severity="critical",
            metric="loss",
            value=1.2345,
            expected=0.7429,
            detail="",
        )
    )
    store.record(
        ResourceSample(
            disk_path="/",
            disk_used_fraction=0.5,
            disk_free_bytes=1 << 30,
            memory_used_fraction=0.25,
            load_1m=0.1,
        )
    )
    rows = store.history(exclude_kinds=["resources"])
    assert [r.row.kind for r in rows] == ["source_error", "checkpoint", "anomaly"]
    assert rows[2].row.summary == "divergence at step 18,500: loss 1.2345 (expected 0.7429)"
    assert rows[2].row.severity == "critical"
    assert rows[2].row.run == "run-a"
    assert store.history(kinds=["resources"])[0].row.run is None
    assert store.event_counts("source_error")[run_id][0] == 1
    store.close()


def test_a_reader_sees_commits_while_the_writer_stays_open(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    writer = Store(path)
    run_id = writer.ensure_run("/r", "r")
    reader = Store(path, readonly=True)
    writer.commit_batch(run_id, [metric(1)], None)
    assert [p.step for p in reader.metrics()] == [1]
    writer.commit_batch(run_id, [metric(2)], None)
    assert reader.newest_points()[run_id][0] == 2
    reader.close()
    writer.close()


def test_a_reader_without_a_database_gets_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="has `tunewatch run` started"):
        Store(tmp_path / "missing.db", readonly=True)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError, match="newer than this tunewatch"):
        Store(path)


def test_plugin_state_round_trips(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    assert store.plugin_get("anomaly", "cursor") is None
    store.plugin_put("anomaly", "cursor", "42")
    store.plugin_put("anomaly", "cursor", "43")
    assert store.plugin_get("anomaly", "cursor") == "43"
    store.close()


async def test_async_store_runs_calls_off_the_loop(tmp_path: Path) -> None:
    import threading

    store = await AsyncStore.open(tmp_path / "state.db")
    thread = await store.call(lambda: threading.current_thread().name)
    assert thread.startswith("tunewatch-store")
    assert thread != threading.current_thread().name
    await store.close()


def batch(first_step: int, n: int, **columns: list[float]) -> MetricsBatch:
    return MetricsBatch(
        run="run-a",
        source="log.jsonl",
        steps=array("q", range(first_step, first_step + n)),
        times=array("d", [1.7e9 + i for i in range(n)]),
        columns={name: array("d", values) for name, values in columns.items()},
    )


def test_a_batch_is_stored_point_by_point_with_consecutive_seqs(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    run_id = store.ensure_run("/r", "run-a")
    losses = [1.0 / (i + 1) for i in range(3000)]
    losses[1500] = math.nan
    losses[2999] = -math.inf
    big = batch(10, 3000, loss=losses, learning_rate=[1e-4] * 3000)
    after = metric(5000, loss=0.5)
    store.commit_batch(run_id, [metric(1), big, after], None)
    assert (big.seq, after.seq) == (2, 3002)
    points = store.metrics()
    assert [p.seq for p in points] == list(range(1, 3003))
    assert [p.step for p in points[1:3001]] == list(range(10, 3010))
    assert points[1].time == 1.7e9
    assert points[1].metrics == {"loss": 1.0, "learning_rate": 1e-4}
    assert math.isnan(points[1501].metrics["loss"])
    assert points[3000].metrics["loss"] == -math.inf
    assert store.point_counts()[run_id] == 3002
    latest_loss = store.latest_values(["loss"])[run_id]["loss"]
    assert (latest_loss.step, latest_loss.value) == (5000, 0.5)
    assert store.newest_points()[run_id] == (5000, after.time)
    assert [p.seq for p in store.metrics(after_seq=3000)] == [3001, 3002]
    store.close()


def test_a_batch_yields_the_points_it_holds(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    run_id = store.ensure_run("/r", "run-a")
    held = batch(100, 3, loss=[3.0, 2.0, 1.0])
    store.commit_batch(run_id, [held], None)
    assert [(p.step, dict(p.metrics), p.seq) for p in held.points()] == [
        (100, {"loss": 3.0}, 1),
        (101, {"loss": 2.0}, 2),
        (102, {"loss": 1.0}, 3),
    ]
    store.close()


def test_points_with_different_metrics_keep_exactly_their_own(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    run_id = store.ensure_run("/r", "run-a")
    events: list[RunEvent] = [
        metric(1, loss=2.0),
        metric(2, loss=1.9, eval_loss=2.2),
        metric(3, grad_norm=math.nan),
        SourceError(run="run-a", source="log.jsonl", kind="k", message="m", location="l"),
        metric(4, loss=1.8),
    ]
    store.commit_batch(run_id, events, None)
    got = [(p.seq, p.step, repr(sorted(p.metrics.items()))) for p in store.metrics()]
    assert got == [
        (1, 1, "[('loss', 2.0)]"),
        (2, 2, "[('eval_loss', 2.2), ('loss', 1.9)]"),
        (3, 3, "[('grad_norm', nan)]"),
        (5, 4, "[('loss', 1.8)]"),
    ]
    latest = store.latest_values(["loss", "eval_loss", "accuracy", "grad_norm"])[run_id]
    assert (latest["loss"].step, latest["eval_loss"].step) == (4, 2)
    assert "accuracy" not in latest
    assert "grad_norm" not in latest  # status does not show it: not kept
    store.close()


def test_a_nan_loss_is_the_newest_loss_status_shows(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    run_id = store.ensure_run("/r", "run-a")
    store.commit_batch(run_id, [metric(1, loss=2.0), metric(2, loss=math.nan)], None)
    latest = store.latest_values(["loss"])[run_id]["loss"]
    assert latest.step == 2 and math.isnan(latest.value)  # SQLite REAL would make it NULL
    store.close()


# What version 1 of the store created (tunewatch before packed columns), verbatim.
_V1_CHUNKS = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, name TEXT NOT NULL UNIQUE, status TEXT,
    total_steps INTEGER, pid INTEGER, first_seen REAL NOT NULL, updated REAL NOT NULL
);
CREATE TABLE metric_chunks (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    source TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    n INTEGER NOT NULL,
    max_step INTEGER NOT NULL,
    last_time REAL NOT NULL,
    points TEXT NOT NULL
);
CREATE INDEX chunks_by_run ON metric_chunks(run_id, last_seq);
INSERT INTO runs VALUES (1, '/r', 'run-a', NULL, NULL, NULL, 1.0, 1.0);
INSERT INTO metric_chunks VALUES (1, 1, 'log.jsonl', 1, 4, 3, 30, 3.0,
  '[[1,10,1.0,{"loss":2.5}],[2,20,2.0,{"loss":"nan","lr":0.1}],[4,30,3.0,{"loss":"-inf"}]]');
PRAGMA user_version = 1;
"""


def test_a_version_1_database_is_upgraded_without_losing_a_point(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    old = sqlite3.connect(path)
    old.executescript(_V1_CHUNKS)
    old.close()
    store = Store(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == 3
    got = [(p.seq, p.step, p.time, repr(sorted(p.metrics.items()))) for p in store.metrics()]
    assert got == [
        (1, 10, 1.0, "[('loss', 2.5)]"),
        (2, 20, 2.0, "[('loss', nan), ('lr', 0.1)]"),
        (4, 30, 3.0, "[('loss', -inf)]"),
    ]
    tables = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master")}
    assert "metric_chunks_v1" not in tables and "chunks_by_run" in tables
    # Version 3: the newest values are filled from the points already stored.
    (run_id_v1,) = store.run_names()
    loss = store.latest_values(["loss"])[run_id_v1]
    assert (loss["loss"].step, loss["loss"].value) == (30, -math.inf)
    assert store.newest_points()[run_id_v1] == (30, 3.0)
    run_id = store.ensure_run("/r", "run-a")
    new: list[RunEvent] = [metric(40), status("training", 40, "training_status.json")]
    store.commit_batch(run_id, new, None)
    assert new[0].seq == 5
    assert store.runs()[0].status == "training"
    store.close()


def test_only_old_chunks_are_thinned_and_each_only_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    run_id = store.ensure_run("/r", "run-a")
    old = batch(1, 1000, loss=[2.0 - i / 1000 for i in range(1000)])  # times 1.7e9 + i
    recent = MetricsLogged("run-a", 5000, {"loss": 0.1}, "log.jsonl", time=2e9)
    store.commit_batch(run_id, [old, recent], None)
    assert store.downsample(older_than=1.8e9, keep_every=100) == 1
    assert store.downsample(older_than=1.8e9, keep_every=100) == 0  # already thinned
    points = store.metrics()
    assert [p.step for p in points] == [*range(1, 1000, 100), 1000, 5000]
    assert [p.seq for p in points][-3:] == [901, 1000, 1001]
    assert store.point_counts()[run_id] == 12
    assert [p.seq for p in store.metrics(after_seq=950)] == [1000, 1001]
    assert store.latest_values(["loss"])[run_id]["loss"].step == 5000
    store.close()


def status(value: str, step: int, source: str) -> StatusChanged:
    return StatusChanged(run="run-a", status=value, source=source, step=step, total_steps=30)


def test_an_older_status_from_another_source_does_not_undo_a_newer_one(tmp_path: Path) -> None:
    """Catching up on a finished run reads its sources in no fixed order."""
    store = Store(tmp_path / "state.db")
    run_id = store.ensure_run("/r", "run-a")
    store.commit_batch(run_id, [status("completed", 30, "training_status.json")], None)
    # checkpoint-10's trainer_state.json, read later, implies "training" at step 10 (and 30).
    store.commit_batch(run_id, [status("training", 10, "trainer_state.json")], None)
    store.commit_batch(run_id, [status("training", 30, "trainer_state.json")], None)
    assert store.runs()[0].status == "completed"
    assert store.event_counts("status")[run_id][0] == 3  # still in the history
    # The status file itself going back in steps is news: the run was resumed.
    store.commit_batch(run_id, [status("training", 20, "training_status.json")], None)
    assert store.runs()[0].status == "training"
    store.close()


@pytest.mark.parametrize("reported_first", [True, False])
def test_the_end_a_trainer_reports_wins_over_the_end_tunewatch_inferred(
    tmp_path: Path, reported_first: bool
) -> None:
    """The status file says "completed" at step 30; the trainer_state.json's last point at
    the total steps implies "finished" at 30. Read in either order, the trainer's word stays."""
    store = Store(tmp_path / "state.db")
    run_id = store.ensure_run("/r", "run-a")
    reported = status("completed", 30, "training_status.json")
    implied = replace(status("finished", 30, "trainer_state.json"), implied=True)
    for event in (reported, implied) if reported_first else (implied, reported):
        store.commit_batch(run_id, [event], None)
    assert store.runs()[0].status == "completed"
    # A later step is news, inferred or not.
    store.commit_batch(run_id, [replace(implied, step=40, total_steps=40)], None)
    assert store.runs()[0].status == "finished"
    store.close()


def test_text_the_database_cannot_hold_is_recorded_escaped_and_the_position_advances(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "state.db")
    run_id = store.ensure_run("/r", "r")
    bad = MetricsLogged(run="r", step=4, metrics={"\ud800": 1.0, "loss": 2.0}, source="m.jsonl")
    error = SourceError("r", "m.jsonl", "invalid_json", "bad \udcff byte", "m.jsonl:9")
    state = FileState(key="k", run_id=run_id, source="jsonl", offset=80)
    recorded = store.commit_batch(run_id, [bad, error], state)
    assert [type(e) for e in recorded] == [MetricsLogged, SourceError]
    point = store.metrics()[0]
    assert point.metrics == {"\\ud800": 1.0, "loss": 2.0}
    assert store.history(kinds=["source_error"])[0].row.summary.endswith("bad \\udcff byte")
    assert store.file_state("k") == state
    assert [e.seq for e in recorded] == [1, 2]
    store.close()


def test_a_full_database_records_nothing_and_recovers_once_there_is_room(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "state.db")
    run_id = store.ensure_run("/r", "r")
    store.commit_batch(run_id, [metric(1)], FileState("k", run_id, "jsonl", offset=10))
    # max_page_count makes SQLite report SQLITE_FULL exactly as a full disk does.
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")
    big = [metric(s, **{f"m{i}": float(i) for i in range(50)}) for s in range(2, 2000)]
    with pytest.raises(StoreFailure, match="database or disk is full"):
        store.commit_batch(run_id, big, FileState("k", run_id, "jsonl", offset=99_999))
    assert [p.step for p in store.metrics()] == [1]
    assert store.file_state("k").offset == 10  # type: ignore[union-attr]
    store.db.execute("PRAGMA max_page_count = 1073741823")  # space freed
    store.commit_batch(run_id, big, FileState("k", run_id, "jsonl", offset=99_999))
    assert [p.step for p in store.metrics()] == list(range(1, 2000))
    assert [p.seq for p in store.metrics()] == list(range(1, 2000))
    assert store.file_state("k").offset == 99_999  # type: ignore[union-attr]
    store.close()


def test_status_shows_the_step_a_resumed_run_is_at_not_the_highest_it_reached(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "state.db")
    run_id = store.ensure_run("/r", "run-a")
    store.commit_batch(run_id, [metric(s) for s in range(1, 41)], None)
    store.commit_batch(run_id, [metric(s) for s in range(21, 36)], None)  # resumed from 20
    assert store.newest_points()[run_id][0] == 35
    store.close()


def test_a_reader_of_a_database_from_an_older_version_is_told_how_to_upgrade_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    Store(path).close()
    old = sqlite3.connect(path)
    old.execute("PRAGMA user_version = 2")
    old.close()
    with pytest.raises(StoreError, match=r"older tunewatch.*restart the daemon once"):
        Store(path, readonly=True)
