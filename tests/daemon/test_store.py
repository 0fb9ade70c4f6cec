"""The state database: WAL, atomic batches, seq stamping, NaN round trips, concurrent readers."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from tunewatch.daemon.events import (
    AnomalyDetected,
    CheckpointSaved,
    MetricsLogged,
    ResourceSample,
    RunEvent,
    SourceError,
    StatusChanged,
)
from tunewatch.daemon.store import AsyncStore, FileState, Store, StoreError


def metric(step: int, **values: float) -> MetricsLogged:
    return MetricsLogged(
        run="run-a", step=step, metrics=values or {"loss": 1.0}, source="log.jsonl"
    )


def test_the_database_is_in_wal_mode_with_a_schema_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == 1
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
    with pytest.raises(sqlite3.IntegrityError):
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
    assert store.count_events(run_id, "source_error") == 1
    store.close()


def test_a_reader_sees_commits_while_the_writer_stays_open(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    writer = Store(path)
    run_id = writer.ensure_run("/r", "r")
    reader = Store(path, readonly=True)
    writer.commit_batch(run_id, [metric(1)], None)
    assert [p.step for p in reader.metrics()] == [1]
    writer.commit_batch(run_id, [metric(2)], None)
    assert reader.last_point(run_id).step == 2  # type: ignore[union-attr]
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
