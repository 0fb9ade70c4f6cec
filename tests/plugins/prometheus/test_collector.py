"""What a scrape shows: every run's values, progress, status and counts after the events that
change them, the same values after a restart, and labels that stay bounded."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from array import array
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tunewatch.daemon.events import (
    AnomalyDetected,
    MetricsBatch,
    MetricsLogged,
    RecordingFailed,
    ResourceAlert,
    SourceError,
    StatusChanged,
)
from tunewatch.daemon.instance_lock import DaemonHealth
from tunewatch.daemon.text import storable_text
from tunewatch.plugins.prometheus import PrometheusConfig
from tunewatch.plugins.prometheus.collector import METRICS, exposed_names
from tunewatch.plugins.prometheus.fleet_state import RUN_STATUSES

from .harness import Samples, exporter, value

NOW = time.time()


@pytest.fixture(autouse=True)
def now_is_when_the_test_starts() -> None:
    """NOW is the time a test starts, not when the module was imported (minutes earlier in a
    full run): the tests on the real clock compare ages with it."""
    global NOW
    NOW = time.time()


def batch(
    run: str, first_step: int, n: int, when: float | None = None, **columns: list[float]
) -> MetricsBatch:
    return MetricsBatch(
        run=run,
        source="trainer_log.jsonl",
        steps=array("q", range(first_step, first_step + n)),
        times=array("d", [(NOW if when is None else when) - n + i for i in range(n)]),
        columns={name: array("d", values) for name, values in columns.items()},
    )


def status_of(samples: Samples, run: str) -> str:
    on = [s for s in RUN_STATUSES if value(samples, "tunewatch_run_status", run=run, status=s) == 1]
    assert len(on) == 1, on
    return on[0]


async def test_a_batch_sets_the_newest_values_and_counts_its_points(tmp_path: Path) -> None:
    async with exporter(tmp_path / "state.db") as ex:
        losses = [2.0 - i / 100 for i in range(50)]
        await ex.commit(
            "run-a",
            StatusChanged("run-a", "training", "training_status.json", step=0, total_steps=200),
            batch("run-a", 1, 50, loss=losses, learning_rate=[3e-4] * 50),
        )
        await ex.commit(
            "run-a",
            MetricsLogged(
                "run-a", 51, {"eval_loss": 1.4, "eval_accuracy": 0.61}, "trainer_log.jsonl", NOW
            ),
        )
        samples = ex.scrape()
    assert value(samples, "tunewatch_run_loss", run="run-a") == losses[-1]
    assert value(samples, "tunewatch_run_learning_rate", run="run-a") == 3e-4
    assert value(samples, "tunewatch_run_eval_loss", run="run-a") == 1.4
    assert value(samples, "tunewatch_run_eval_accuracy", run="run-a") == 0.61
    assert value(samples, "tunewatch_run_step", run="run-a") == 51
    assert value(samples, "tunewatch_run_total_steps", run="run-a") == 200
    assert value(samples, "tunewatch_run_progress_ratio", run="run-a") == 51 / 200
    assert value(samples, "tunewatch_run_points_total", run="run-a") == 51
    assert value(samples, "tunewatch_run_last_metric_timestamp_seconds", run="run-a") == NOW
    age = value(samples, "tunewatch_run_seconds_since_last_metric", run="run-a")
    assert age is not None and 0 <= age < 60
    assert status_of(samples, "run-a") == "training"
    # A run that never logged accuracy has no such series (not a made-up 0).
    assert value(samples, "tunewatch_run_accuracy", run="run-a") is None


async def test_a_nan_loss_is_exported_as_nan(tmp_path: Path) -> None:
    async with exporter(tmp_path / "state.db") as ex:
        await ex.commit("run-a", batch("run-a", 1, 3, loss=[1.0, 2.0, math.nan]))
        loss = value(ex.scrape(), "tunewatch_run_loss", run="run-a")
    assert loss is not None and math.isnan(loss)


async def test_status_changes_and_silence_move_the_run_through_bounded_states(
    tmp_path: Path,
) -> None:
    now = [NOW]
    async with exporter(tmp_path / "state.db", clock=lambda: now[0]) as ex:
        await ex.commit("run-a", batch("run-a", 1, 10, loss=[1.0] * 10))
        assert status_of(ex.scrape(), "run-a") == "training"
        now[0] = NOW + 1900  # silent for over half an hour: stalled, as `tunewatch status` says
        assert status_of(ex.scrape(), "run-a") == "stalled"
        now[0] = NOW + 4000
        assert status_of(ex.scrape(), "run-a") == "inactive"
        await ex.commit(
            "run-a",
            StatusChanged("run-a", "Completed", "training_status.json", step=10, total_steps=10),
        )
        assert status_of(ex.scrape(), "run-a") == "finished"
        # Whatever a trainer writes, the label takes one of the bounded values.
        await ex.commit(
            "run-b", StatusChanged("run-b", "warming up the GPUs", "training_status.json", step=0)
        )
        await ex.commit("run-c", StatusChanged("run-c", "crashed", "training_status.json", step=3))
        samples = ex.scrape()
    assert status_of(samples, "run-b") == "training"
    assert status_of(samples, "run-c") == "failed"
    assert {dict(labels)["status"] for labels in samples["tunewatch_run_status"]} == set(
        RUN_STATUSES
    )


async def test_the_store_decides_which_status_wins(tmp_path: Path) -> None:
    """An older status from another source, read after a newer one, is history only."""
    async with exporter(tmp_path / "state.db") as ex:
        await ex.commit(
            "run-a",
            StatusChanged("run-a", "completed", "training_status.json", step=30, total_steps=30),
        )
        await ex.commit(
            "run-a",
            StatusChanged("run-a", "training", "trainer_state.json", step=10, total_steps=30),
        )
        assert status_of(ex.scrape(), "run-a") == "finished"


async def test_alerts_and_source_errors_are_counted_by_run_kind_and_severity(
    tmp_path: Path,
) -> None:
    async with exporter(tmp_path / "state.db") as ex:
        await ex.commit("run-a", batch("run-a", 1, 5, loss=[1.0] * 5))
        await ex.commit(
            "run-a",
            SourceError("run-a", "trainer_log.jsonl", "malformed_json", "bad line", "log:3"),
            SourceError("run-a", "trainer_log.jsonl", "malformed_json", "bad line", "log:4"),
        )
        divergence = AnomalyDetected("run-a", 5, "divergence", "critical", "loss", 9.0, 1.0, "up")
        grad = AnomalyDetected(
            "run-a", 5, "grad_norm_outlier", "info", "grad_norm", 50.0, 1.0, "x", push=False
        )
        await ex.publish(divergence, divergence, grad)
        await ex.publish(
            ResourceAlert(
                "disk", "critical", "/data fills in 1 h", "delete checkpoint-10", path="/data"
            )
        )
        await ex.publish(RecordingFailed("disk full", NOW))
        samples = ex.scrape()
    assert value(samples, "tunewatch_run_source_errors_total", run="run-a") == 2
    alerts = "tunewatch_alerts_total"
    assert value(samples, alerts, run="run-a", kind="divergence", severity="critical") == 2
    assert value(samples, alerts, run="run-a", kind="grad_norm_outlier", severity="info") == 1
    assert value(samples, alerts, run="", kind="disk", severity="critical") == 1
    assert value(samples, "tunewatch_recording_failures_total") == 1


async def test_a_restarted_exporter_exports_the_same_values_from_the_store(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    async with exporter(db) as ex:
        await ex.commit(
            "run-a",
            StatusChanged("run-a", "training", "training_status.json", step=0, total_steps=100),
            batch(
                "run-a", 1, 40, loss=[1.0 - i / 100 for i in range(40)], learning_rate=[1e-4] * 40
            ),
        )
        await ex.commit(
            "run-a", MetricsLogged("run-a", 40, {"eval_loss": 0.9}, "trainer_log.jsonl", NOW)
        )
        await ex.commit(
            "run-a", SourceError("run-a", "trainer_log.jsonl", "malformed_json", "x", "log:7")
        )
        await ex.publish(AnomalyDetected("run-a", 30, "spike", "normal", "loss", 3.0, 1.0, "spike"))
        before = ex.scrape()
    async with exporter(db) as ex:
        after = ex.scrape()
    per_run = [
        n
        for n in exposed_names()
        if n.startswith("tunewatch_run_") and n != "tunewatch_run_seconds_since_last_metric"
    ]
    for name in [*per_run, "tunewatch_alerts_total"]:
        assert after.get(name) == before.get(name), name
    assert value(after, "tunewatch_run_learning_rate", run="run-a") == 1e-4
    assert value(after, "tunewatch_run_points_total", run="run-a") == 41


async def test_points_counted_from_the_store_are_not_counted_again(tmp_path: Path) -> None:
    """Events already in the store when the exporter started (queued for it) count once."""
    db = tmp_path / "state.db"
    async with exporter(db) as ex:
        first = batch("run-a", 1, 10, loss=[1.0] * 10)
        await ex.commit("run-a", first)
    async with exporter(db) as ex:
        await ex.publish(first)  # as a queue overflow re-read would meet it
        assert value(ex.scrape(), "tunewatch_run_points_total", run="run-a") == 10


async def test_runs_silent_past_forget_after_are_dropped_and_at_most_max_runs_exported(
    tmp_path: Path,
) -> None:
    now = [NOW]
    config = PrometheusConfig(textfile_dir=str(tmp_path / "t"), forget_after_hours=1.0, max_runs=3)
    async with exporter(tmp_path / "state.db", config, clock=lambda: now[0]) as ex:
        for i in range(5):
            await ex.commit(f"run-{i}", batch(f"run-{i}", 1, 2, when=NOW + i, loss=[1.0, 0.5]))
        spike = AnomalyDetected("run-0", 2, "spike", "normal", "loss", 3.0, 1.0, "x", time=NOW)
        await ex.publish(spike)
        samples = ex.scrape()
        exported = {dict(k)["run"] for k in samples["tunewatch_run_loss"]}
        assert exported == {"run-4", "run-3", "run-2"}, "the most recently active"
        assert value(samples, "tunewatch_runs_exported") == 3
        # Labels of runs not exported appear nowhere, alerts included.
        assert all(dict(k)["run"] in exported for k in samples.get("tunewatch_alerts_total", {}))
        now[0] = NOW + 2 * 3600
        await ex.commit("run-1", batch("run-1", 3, 1, when=now[0], loss=[0.4]))
        samples = ex.scrape()
    assert {dict(k)["run"] for k in samples["tunewatch_run_loss"]} == {"run-1"}
    assert len(ex.plugin.fleet.runs) == 1, "forgotten runs leave the exporter's memory too"


async def test_every_exported_name_is_declared_with_help_and_a_prometheus_type(
    tmp_path: Path,
) -> None:
    async with exporter(tmp_path / "state.db") as ex:
        await ex.commit("run-a", batch("run-a", 1, 2, loss=[1.0, 0.5], accuracy=[0.1, 0.2]))
        await ex.publish(AnomalyDetected("run-a", 2, "spike", "normal", "loss", 3.0, 1.0, "x"))
        text = ex.plugin.render().decode()
    families = list(text_string_to_metric_families(text))
    assert {f.name for f in families} <= set(METRICS)
    for family in families:
        assert family.name.startswith("tunewatch_")
        assert family.documentation, family.name
        assert family.type == METRICS[family.name], family.name
    labels = {key for f in families for s in f.samples for key in s.labels}
    assert labels <= {"run", "status", "kind", "severity", "plugin"}


async def test_the_daemons_own_health_is_exported(tmp_path: Path) -> None:
    def health() -> DaemonHealth:
        return DaemonHealth(
            pid=1,
            started=1.7e9,
            updated=NOW,
            recording_failure="database or disk is full",
            recording_failure_since=NOW - 60,
            unreadable_files=2,
            plugins={"anomaly": "running", "compare": "failed: boom"},
        )

    async with exporter(tmp_path / "state.db", health=health) as ex:
        samples = ex.scrape()
    assert value(samples, "tunewatch_recording_failed") == 1
    assert value(samples, "tunewatch_unreadable_files") == 2
    assert value(samples, "tunewatch_plugin_failed", plugin="compare") == 1
    assert value(samples, "tunewatch_plugin_failed", plugin="anomaly") == 0
    assert value(samples, "tunewatch_daemon_start_time_seconds") == 1.7e9
    assert value(samples, "tunewatch_pipeline_lag_seconds") == 0  # no store call waits now
    assert value(samples, "tunewatch_bus_events_queued") == 0
    assert value(samples, "tunewatch_bus_events_dropped_total") == 0


async def test_lag_is_how_long_the_oldest_store_call_has_waited(tmp_path: Path) -> None:
    async with exporter(tmp_path / "state.db") as ex:
        busy = asyncio.create_task(ex.store.call(time.sleep, 0.6))  # the store's thread is busy
        await asyncio.sleep(0.3)
        lag = value(ex.scrape(), "tunewatch_pipeline_lag_seconds")
        await busy
        after = value(ex.scrape(), "tunewatch_pipeline_lag_seconds")
    assert lag is not None and 0.25 < lag < 0.6
    assert after == 0


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.text(min_size=1, max_size=40).map(storable_text))
def test_any_run_name_is_a_label_value_prometheus_reads_back(tmp_path: Path, name: str) -> None:
    # Run names are folder names: quotes, backslashes, newlines and any script are possible,
    # and one badly escaped label would make Prometheus reject the whole scrape.
    async def scrape() -> Samples:
        db = tmp_path / f"state-{uuid.uuid4().hex}.db"
        async with exporter(db) as ex:
            await ex.commit(name, MetricsLogged(name, 7, {"loss": 1.5}, "log.jsonl", NOW))
            return ex.scrape()

    samples = asyncio.run(scrape())
    assert value(samples, "tunewatch_run_loss", run=name) == 1.5
    assert value(samples, "tunewatch_run_step", run=name) == 7
