"""collect_report: each section says what the store and the disk hold, and each recommendation
names what to do it with."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tunewatch.daemon import events as ev
from tunewatch.daemon.store import Store
from tunewatch.plugins.report.content import collect_report
from tunewatch.plugins.report.markdown import health_line
from tunewatch.plugins.report.model import Report

from .stores import HOUR, SINCE, UNTIL, StoreBuilder, anomaly


@pytest.fixture
def builder(tmp_path: Path) -> Iterator[StoreBuilder]:
    built = StoreBuilder(tmp_path)
    yield built
    built.store.close()


def report_of(builder: StoreBuilder) -> Report:
    store = Store(builder.close(), readonly=True)
    try:
        return collect_report(store, since=SINCE, until=UNTIL, now=UNTIL)
    finally:
        store.close()


def test_a_training_run_shows_its_progress_rate_and_eta(builder: StoreBuilder) -> None:
    # 17,601 of 37,487 steps, the last 1,760 of them in the last 10 hours.
    steps = [*range(0, 15_841, 10), *(15_851 + 10 * i for i in range(176))]
    times = [UNTIL - 30 * HOUR + i for i in range(1585)]
    times += [UNTIL - 60 - 10 * HOUR + 10 * HOUR * i / 175 for i in range(176)]
    status = ev.StatusChanged("run-a", "training", "status", step=17_601, total_steps=37_487)
    losses = [2.0 - s / 20_000 for s in steps]
    builder.points("run-a", steps, times, {"loss": losses}, extra=[status])
    report = report_of(builder)

    (run,) = report.runs
    assert run.condition == "training"
    assert run.progress_text == "17,601 / 37,487 steps (47.0 %)"
    assert run.loss == losses[-1] and run.eval_loss is None
    assert run.steps_per_hour == pytest.approx(1750 / 10, rel=1e-6)
    assert run.eta_s == pytest.approx((37_487 - 17_601) / 175 * HOUR, rel=1e-6)
    assert health_line(report).startswith("1 run: 1 training (47 %); disk ")
    # The chart: the period alone in the top panel, the whole run below.
    (series,) = report.chart.runs
    assert series.loss.steps[0] == 15_851 and series.loss.steps[-1] == 17_601
    assert series.whole_loss.steps[0] == 0


def test_a_stalled_run_names_the_log_and_the_time_its_metrics_stopped(
    builder: StoreBuilder,
) -> None:
    _, directory = builder.run("stuck")
    (directory / "trainer_log.jsonl").write_text('{"step": 500, "loss": 1.0}\n')
    stopped = UNTIL - 3 * HOUR
    status = ev.StatusChanged("stuck", "training", "status", step=500, total_steps=1000)
    builder.points(
        "stuck", [490, 500], [stopped - 60, stopped], {"loss": [1.1, 1.0]}, extra=[status]
    )
    builder.record(anomaly("stuck", 500, "stall", metric="minutes_since_metric", value=31.0))
    report = report_of(builder)

    (run,) = report.runs
    assert run.condition == "stalled"
    (advice,) = report.recommendations
    assert advice.title == "stuck stalled at step 500"
    assert str(directory / "trainer_log.jsonl") in advice.detail
    assert "tail -n 50 -- " in (advice.command or "")
    assert health_line(report).startswith("1 run: 1 stalled; 1 alert")


def test_a_stall_that_recovered_leaves_the_run_training(builder: StoreBuilder) -> None:
    builder.points(
        "run-b",
        [1, 2],
        [UNTIL - 60, UNTIL - 30],
        {"loss": [1.0, 0.9]},
        extra=[ev.StatusChanged("run-b", "training", "status")],
    )
    builder.record(
        anomaly("run-b", 1, "stall", metric="minutes_since_metric"),
        ev.AnomalyResolved("run-b", 2, "stall", "minutes_since_metric", time=UNTIL - 30),
    )
    report = report_of(builder)
    assert [r.condition for r in report.runs] == ["training"]
    assert report.recommendations == ()


def test_a_full_disk_names_the_checkpoints_that_can_go_and_what_that_frees(
    builder: StoreBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, directory = builder.run("big")
    for step, size in ((100, 40_960), (200, 8192), (300, 8192)):
        checkpoint = directory / f"checkpoint-{step}"
        checkpoint.mkdir()
        (checkpoint / "model.safetensors").write_bytes(b"w" * size)
        (checkpoint / "optimizer.pt").write_bytes(b"o" * 4096)
    # checkpoint-100's weights are also in a snapshot (hardlinked): deleting it frees the rest.
    snapshot = directory / "snapshots" / "big_step-000100"
    snapshot.mkdir(parents=True)
    os.link(directory / "checkpoint-100" / "model.safetensors", snapshot / "model.safetensors")
    builder.points("big", [300], [UNTIL - 60], {"loss": [0.5]})
    builder.record(
        ev.BestModelFound("big", 100, "eval_loss", 0.7, None, time=UNTIL - 5 * HOUR),
        ev.SnapshotCreated(
            "big", 100, str(snapshot), str(directory / "checkpoint-100"), time=UNTIL - 5 * HOUR
        ),
        ev.BestModelFound("big", 200, "eval_loss", 0.6, None, time=UNTIL - 2 * HOUR),
    )
    total = 1000 * 2**30
    usage = shutil._ntuple_diskusage(total, int(total * 0.91), int(total * 0.09))
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage)
    report = report_of(builder)

    free_disk = report.recommendations[0]
    assert free_disk.title.startswith("Free space on ")
    assert "91% full" in free_disk.detail
    # Not checkpoint-200 (the best), not checkpoint-300 (the newest), never the snapshot.
    assert free_disk.command == f"rm -rf -- {directory / 'checkpoint-100'}"
    (measured,) = report.resources.storage
    hundred = measured.checkpoints[0]
    assert hundred.freeable_bytes == 4096 < hundred.bytes
    assert measured.snapshots_dir == str(directory / "snapshots")
    assert "frees 0.00 GiB" in free_disk.detail  # 4 KiB: the weights stay in the snapshot
    assert health_line(report).endswith("disk 91 % on " + report.resources.volumes[0].mount)


def test_validations_and_comparisons_are_listed_and_acted_on(builder: StoreBuilder) -> None:
    builder.points("run-c", [10], [UNTIL - 60], {"loss": [1.0]})
    builder.record(
        ev.ValidationFinished(
            "run-c", "/data/bad.jsonl", 55, "fix", 3, 1, "/r/bad.md", time=UNTIL - HOUR
        ),
        ev.ValidationFinished(
            None, "/data/good.jsonl", 95, "ready", 0, 0, "/r/good.md", time=UNTIL - HOUR
        ),
        ev.ComparisonFinished(
            "run-c", "/s/a", "/s/b", "/s/b", "B is better (n=20)", "/r/ab.md", time=UNTIL - HOUR
        ),
        ev.ComparisonFinished(
            "run-c", "/s/b", "/s/c", None, "the child crashed", None, failed=True, time=UNTIL - HOUR
        ),
    )
    report = report_of(builder)

    assert [(v.path, v.passed) for v in report.activity.validations] == [
        ("/data/bad.jsonl", False),
        ("/data/good.jsonl", True),
    ]
    assert [(c.winner, c.failed) for c in report.activity.comparisons] == [
        ("/s/b", False),
        (None, True),
    ]
    titles = [r.title for r in report.recommendations]
    assert titles == ["Fix the data before training on /data/bad.jsonl", "Deploy /s/b"]
    assert report.recommendations[0].command == "less -- /r/bad.md"


def test_only_the_latest_winner_of_a_run_is_to_deploy(builder: StoreBuilder) -> None:
    # Each new best is compared with the previous one: b beat a, then c beat b.
    builder.points("run-d", [10], [UNTIL - 60], {"loss": [1.0]})
    builder.record(
        ev.ComparisonFinished(
            "run-d", "/s/a", "/s/b", "/s/b", "b better", "/r/ab.md", time=UNTIL - 2 * HOUR
        ),
        ev.ComparisonFinished(
            "run-d", "/s/b", "/s/c", "/s/c", "c better", "/r/bc.md", time=UNTIL - HOUR
        ),
    )
    report = report_of(builder)
    assert [r.title for r in report.recommendations] == ["Deploy /s/c"]


def test_alerts_pushed_are_listed_and_the_others_counted_per_kind(
    builder: StoreBuilder,
) -> None:
    builder.points("run-d", [1, 2], [UNTIL - 60, UNTIL - 30], {"loss": [1.0, math.nan]})
    quiet = [
        anomaly("run-d", s, "zscore", metric="grad_norm", severity="info", push=False)
        for s in range(12)
    ]
    builder.record(
        *quiet,
        anomaly("run-d", 2, "non_finite", value=math.nan),
        anomaly("run-d", 1, "old", time=SINCE - HOUR),
    )
    report = report_of(builder)

    (alert,) = report.anomalies.alerts
    assert (alert.kind, alert.step, math.isnan(alert.value)) == ("non_finite", 2, True)
    (summary,) = report.anomalies.quiet
    assert (summary.count, summary.kind, summary.metric) == (12, "zscore", "grad_norm")
    (run,) = report.runs
    assert run.diverged_at_step == 2
    # No snapshot to go back to: the advice says so instead of naming one.
    assert report.recommendations[0].detail.startswith("no snapshot was taken before it")
    assert [m.step for m in report.chart.runs[0].alerts] == [2]


def test_resource_alerts_are_listed_when_the_resources_plugin_records_them(
    builder: StoreBuilder,
) -> None:
    builder.points("run-e", [1], [UNTIL - 60], {"loss": [1.0]})
    # Recorded as the resources plugin will ("resource_alert" / "resource_recovered").
    for seq, kind, data in (
        (
            900,
            "resource_alert",
            {
                "resource": "disk",
                "severity": "critical",
                "summary": "/data fills in 1.4 h",
                "advice": "rm old ones",
                "path": "/data",
                "run": None,
            },
        ),
        (
            901,
            "resource_recovered",
            {"resource": "disk", "summary": "/data has room again", "path": "/data", "run": None},
        ),
    ):
        with builder.store.db:
            builder.store.db.execute(
                "INSERT INTO events (seq, time, run_id, kind, severity, summary, data)"
                " VALUES (?, ?, NULL, ?, 'critical', ?, ?)",
                (seq, UNTIL - HOUR, kind, data["summary"], __import__("json").dumps(data)),
            )
    report = report_of(builder)
    assert [(r.resource, r.recovered, r.summary) for r in report.anomalies.resources] == [
        ("disk", False, "/data fills in 1.4 h"),
        ("disk", True, "/data has room again"),
    ]


def test_finished_runs_that_said_nothing_in_the_period_are_counted_not_listed(
    builder: StoreBuilder,
) -> None:
    done = ev.StatusChanged("old", "completed", "status", step=10, total_steps=10)
    builder.points("old", [10], [SINCE - 48 * HOUR], {"loss": [0.1]}, extra=[done])
    builder.points("new", [5], [UNTIL - 60], {"loss": [0.2]})
    report = report_of(builder)
    assert [r.name for r in report.runs] == ["new"]
    assert report.quiet_runs == 1
