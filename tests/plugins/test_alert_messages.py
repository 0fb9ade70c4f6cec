"""What a person reads for each event: titles, bodies, urgency and what a click opens; untrusted
text folded onto one bounded line."""

from __future__ import annotations

import math

import pytest

from tunewatch.daemon.events import (
    AnomalyDetected,
    AnomalyResolved,
    BestModelFound,
    ComparisonFinished,
    RecordingFailed,
    RecordingResumed,
    ReportWritten,
    ResourceAlert,
    ResourceRecovered,
    Severity,
    SourceUnreadable,
    ValidationFinished,
)
from tunewatch.plugins import alert_messages as messages
from tunewatch.plugins.alert_messages import one_line


def anomaly(
    kind: str,
    *,
    metric: str = "loss",
    value: float = 1.2345,
    expected: float | None = None,
    detail: str = "",
    severity: Severity = "critical",
    step: int = 18_500,
) -> AnomalyDetected:
    return AnomalyDetected(
        run="run-a",
        step=step,
        kind=kind,
        severity=severity,
        metric=metric,
        value=value,
        expected=expected,
        detail=detail,
    )


@pytest.mark.parametrize(
    ("event", "title", "body"),
    [
        (
            anomaly("divergence", expected=0.7429, detail="best 0.7429 at step 17,213"),
            "Training diverged: run-a",
            "Step 18,500: loss 1.2345 (best 0.7429 at step 17,213)",
        ),
        (
            anomaly("divergence", expected=0.7429),
            "Training diverged: run-a",
            "Step 18,500: loss 1.2345 (best 0.7429)",
        ),
        (
            anomaly("non_finite", value=math.nan, step=1_234),
            "NaN loss: run-a",
            "Step 1,234: loss is NaN",
        ),
        (
            anomaly("loss_spike", value=3.2, expected=0.76),
            "Loss spike: run-a",
            "Step 18,500: loss 3.2000 (expected 0.7600)",
        ),
        (
            anomaly("inverted_loss", metric="eval_loss", value=1.1, expected=0.9),
            "Eval loss rising while train loss falls: run-a",
            "Step 18,500: eval loss 1.1000 (was 0.9000)",
        ),
        (
            anomaly("zscore", metric="grad_norm", value=12.5, detail="z-score 4.23"),
            "Unusual grad norm: run-a",
            "Step 18,500: grad norm 12.5000 (z-score 4.23)",
        ),
        (
            anomaly("accuracy_drop", metric="accuracy", value=0.52, expected=0.6),
            "Accuracy dropped: run-a",
            "Step 18,500: accuracy 0.5200 (was 0.6000)",
        ),
        (
            anomaly("stall", detail="No new metric for 35 min (status: training)"),
            "Training stalled: run-a",
            "No new metric for 35 min (status: training)",
        ),
        (
            anomaly("stall", detail="Trainer process 1234 is gone"),
            "Training stalled: run-a",
            "Trainer process 1234 is gone",
        ),
        (
            anomaly("disk_full", metric="disk", value=0.99),
            "Disk full: run-a",
            "Step 18,500: disk 0.9900",
        ),
    ],
)
def test_each_anomaly_kind_reads_as_a_sentence(
    event: AnomalyDetected, title: str, body: str
) -> None:
    alert = messages.anomaly_alert(event)
    assert (alert.title, alert.body) == (title, body)


def test_severity_decides_urgency_and_a_click_opens_the_run_directory() -> None:
    critical = messages.anomaly_alert(anomaly("divergence"), "/runs/a")
    normal = messages.anomaly_alert(anomaly("accuracy_drop", severity="normal"))
    assert critical.critical and critical.target == "/runs/a"
    assert not normal.critical


def test_a_recovery_is_normal_and_says_what_is_over() -> None:
    event = AnomalyResolved(run="run-a", step=19_000, kind="loss_spike", metric="loss")
    alert = messages.recovery_alert(event)
    assert alert.title == "Recovered: run-a"
    assert alert.body == "Loss spike on loss is over (step 19,000)"
    assert not alert.critical


def test_a_best_model_says_whether_its_snapshot_was_saved_and_opens_it() -> None:
    best = BestModelFound(
        run="run-a", step=17_213, metric="eval_loss", value=0.7429, checkpoint="/r/checkpoint-17213"
    )
    saved = messages.best_model_alert(best, "/r/snapshots/step-17213")
    assert saved.title == "New best model: run-a"
    assert saved.body == "Step 17,213: eval loss 0.7429 · snapshot saved"
    assert saved.target == "/r/snapshots/step-17213"
    unsaved = messages.best_model_alert(best, None)
    assert unsaved.body == "Step 17,213: eval loss 0.7429"
    assert unsaved.target == "/r/checkpoint-17213"


def validation(verdict: str, score: int, errors: int, warnings: int = 0) -> ValidationFinished:
    return ValidationFinished(
        run=None,
        path="/r/inbox/my_data.jsonl",
        score=score,
        verdict=verdict,
        errors=errors,
        warnings=warnings,
        report_path="/r/reports/my_data.md",
    )


def test_data_that_is_ready_is_a_normal_alert_with_its_score() -> None:
    alert = messages.validation_alert(validation("ready", 92, 0))
    assert alert.title == "Data checked: my_data.jsonl"
    assert alert.body == "my_data.jsonl: 92/100, ready"
    assert not alert.critical
    assert alert.target == "/r/reports/my_data.md"


def test_data_that_failed_is_critical_and_counts_the_errors() -> None:
    alert = messages.validation_alert(validation("failed", 12, 150, 3))
    assert alert.title == "Data check failed: my_data.jsonl"
    assert alert.body == "FAILED: 150 errors, 3 warnings (score 12/100)"
    assert alert.critical


def test_a_comparison_shows_its_summary_and_opens_its_report() -> None:
    event = ComparisonFinished(
        run="run-a",
        model_a="/r/snapshots/step-100",
        model_b="/r/snapshots/step-200",
        winner="/r/snapshots/step-200",
        summary="step-200 is better: 90% vs 85% accuracy, 1.4x faster",
        report_path="/r/reports/compare.md",
    )
    alert = messages.comparison_alert(event)
    assert alert.title == "Models compared: step-100 vs step-200"
    assert alert.body == "step-200 is better: 90% vs 85% accuracy, 1.4x faster"
    assert alert.target == "/r/reports/compare.md"
    assert not alert.critical


def test_a_report_says_its_health_line_and_opens_the_report() -> None:
    health = "2 runs training, 1 needs attention: run-b diverged at step 1,200"
    alert = messages.report_alert(
        ReportWritten(path="/r/reports/daily_20250101.md", period_hours=24, health=health)
    )
    assert alert.title == "Daily report ready"
    assert alert.body == health
    assert alert.target == "/r/reports/daily_20250101.md"


def test_a_report_without_a_health_line_names_its_file_and_period() -> None:
    alert = messages.report_alert(
        ReportWritten(path="/r/reports/daily_20250101.md", period_hours=24)
    )
    assert alert.title == "Daily report ready"
    assert alert.body == "Last 24 h: daily_20250101.md"


def test_values_from_logs_stay_on_one_bounded_line() -> None:
    alert = messages.anomaly_alert(anomaly("loss_spike", detail="line one\nline two" + "x" * 500))
    assert "\n" not in alert.body
    assert len(alert.body) < 200


def test_a_store_that_refuses_writes_is_a_critical_alert_naming_the_reason() -> None:
    failed = RecordingFailed(reason="database or disk is full (/s/state.db)", since=1000.0)
    alert = messages.recording_failed_alert(failed)
    assert alert.critical
    assert alert.body.startswith("tunewatch cannot record: database or disk is full")
    resumed = messages.recording_resumed_alert(
        RecordingResumed(reason="database or disk is full", since=1000.0, time=1300.0)
    )
    assert not resumed.critical
    assert resumed.body.startswith("Stopped for 5 min (database or disk is full)")


def test_an_unreadable_source_names_the_file_and_why() -> None:
    event = SourceUnreadable(
        "run-a", "logs/f.jsonl", "not_a_regular_file", "is a FIFO (named pipe)", "/r/logs/f.jsonl"
    )
    alert = messages.source_unreadable_alert(event, "/r")
    assert alert.title == "Cannot read f.jsonl: run-a"
    assert alert.body.startswith("is a FIFO (named pipe)")
    assert (alert.target, alert.critical) == ("/r", False)


def test_a_filling_disk_is_a_critical_alert_titled_by_its_volume_with_the_advice() -> None:
    alert = messages.resource_alert(
        ResourceAlert(
            resource="disk",
            severity="critical",
            summary="/data fills in 40 min at the rate checkpoints use it",
            advice="tunewatch deletes nothing: you decide. To delete: rm -r /data/a/checkpoint-1",
            path="/data",
            value=0.97,
        )
    )
    assert alert.title == "Disk filling: /data"
    assert alert.body == (
        "/data fills in 40 min at the rate checkpoints use it. tunewatch deletes nothing: you "
        "decide. To delete: rm -r /data/a/checkpoint-1"
    )
    assert alert.critical and alert.target == "/data"


def test_memory_alerts_name_the_run_or_gpu_and_recoveries_say_it_is_over() -> None:
    trainer = messages.resource_alert(
        ResourceAlert("trainer_memory", "critical", "grows 1 GiB/h", "restart", run="run-a")
    )
    assert trainer.title == "Trainer memory climbing: run-a" and trainer.critical
    gpu = messages.resource_alert(
        ResourceAlert("gpu_memory", "normal", "99% used", "", path="gpu0")
    )
    assert (gpu.title, gpu.body, gpu.critical) == (
        "GPU memory nearly full: gpu0",
        "99% used",
        False,
    )
    recovered = messages.resource_recovered_alert(
        ResourceRecovered("disk", "Disk space (/data) is fine again", path="/data")
    )
    assert recovered.title == "Recovered: Disk filling: /data"
    assert recovered.body == "Disk space (/data) is fine again" and not recovered.critical


def test_control_characters_and_newlines_fold_into_one_line() -> None:
    assert one_line("run\x00-a\n\tstep\r\n 3\x1b[31m") == "run -a step 3 [31m"


def test_long_text_is_cut_with_an_ellipsis() -> None:
    cut = one_line("x" * 500, 20)
    assert len(cut) == 20
    assert cut.endswith("…")


def test_short_text_is_unchanged() -> None:
    assert one_line("run-a", 5) == "run-a"
