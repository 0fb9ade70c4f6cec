"""End to end: a real transformers.Trainer run (tiny Llama, CPU) watched live by `tunewatch run`."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from fixtures.daemon_process import DaemonProcess, metric_steps
from fixtures.notification_server import NotificationServer


@pytest.mark.slow
def test_a_real_trainer_run_is_recorded_once_and_status_reports_it(tmp_path: Path) -> None:
    from fixtures.tiny_training import train_tiny_run

    run = tmp_path / "tiny-llama"  # does not exist yet: the service starts before training
    with DaemonProcess(tmp_path) as daemon:
        daemon.start(str(run))
        result = train_tiny_run(
            run, max_steps=30, save_steps=10, eval_steps=10, write_status_file=True
        )
        daemon.wait_for(
            lambda: (daemon.run_status("tiny-llama") or {}).get("status") == "completed",
            timeout_s=60,
            what="completed status",
        )
        daemon.wait_for(
            lambda: len(daemon.events("--kind", "checkpoint")) == 3,
            timeout_s=60,
            what="3 checkpoints",
        )
        status = daemon.run_status("tiny-llama")
        assert daemon.stop() == 0

    assert status is not None
    assert status["step"] == result.global_step == 30
    assert status["total_steps"] == 30
    assert status["progress"] == 1.0
    assert status["source_errors"] == 0
    # Every log_history entry saved in a checkpoint is recorded exactly once, at its own step.
    in_checkpoints = [e for e in result.log_history if "train_runtime" not in e]
    assert list(metric_steps(daemon.db, "trainer_state.json")) == [
        e["step"] for e in in_checkpoints
    ]
    final_train = [e for e in in_checkpoints if "loss" in e][-1]
    assert math.isclose(status["loss"], final_train["loss"], rel_tol=1e-9) or math.isclose(
        status["loss"], _status_file_loss(run), rel_tol=1e-9
    )
    final_eval = [e for e in in_checkpoints if "eval_loss" in e][-1]
    assert math.isclose(status["eval_loss"], final_eval["eval_loss"], rel_tol=1e-9)
    checkpoints = [e["data"]["path"] for e in daemon.events("--kind", "checkpoint")]
    assert [Path(p).name for p in checkpoints] == [
        "checkpoint-10",
        "checkpoint-20",
        "checkpoint-30",
    ]


def _status_file_loss(run: Path) -> float:
    import json

    return float(json.loads((run / "training_status.json").read_text())["loss"])


@pytest.mark.slow
def test_a_diverging_run_is_alerted_and_earlier_best_models_are_snapshotted(
    tmp_path: Path, notification_server: NotificationServer
) -> None:
    """A real Trainer whose learning rate is multiplied by 1000 at step 35 (no clipping)."""
    from fixtures.tiny_training import LrBlowUpCallback, train_tiny_run

    run = tmp_path / "blow-up"
    with DaemonProcess(tmp_path, extra_env={"TUNEWATCH_TEST": "1"}) as daemon:
        daemon.start(str(run), notifications=True)
        train_tiny_run(
            run,
            max_steps=60,
            save_steps=10,
            eval_steps=10,
            max_grad_norm=0.0,
            callbacks=[LrBlowUpCallback(at_step=35, factor=1000.0)],
        )
        daemon.wait_for(
            lambda: any(e["severity"] == "critical" for e in daemon.events("--kind", "anomaly")),
            timeout_s=60,
            what="a critical anomaly",
        )
        daemon.wait_for(
            lambda: (
                0
                < len(daemon.events("--kind", "best_model"))
                == len(daemon.events("--kind", "snapshot"))
            ),
            timeout_s=90,
            what="a snapshot of every best model",
        )
        anomalies = daemon.events("--kind", "anomaly")
        bests = daemon.events("--kind", "best_model")
        snapshots = daemon.events("--kind", "snapshot")
        assert daemon.stop() == 0

    critical = [a for a in anomalies if a["severity"] == "critical"]
    assert critical[0]["data"]["kind"] in {"divergence", "loss_spike"}
    assert critical[0]["data"]["step"] >= 35
    # Nothing twice: one alert per (kind, metric) episode.
    keys = [(a["data"]["kind"], a["data"]["metric"], a["data"]["step"]) for a in anomalies]
    assert len(keys) == len(set(keys))
    # Best models came before the blow-up; each was snapshotted once, with a manifest.
    assert bests and all(b["data"]["step"] < 35 for b in bests)
    snapshot_steps = [s["data"]["step"] for s in snapshots]
    assert len(snapshot_steps) == len(set(snapshot_steps))
    for s in snapshots:
        assert (Path(s["data"]["path"]) / "tunewatch-snapshot.json").is_file()
    # What a person saw: the critical alerts and the best models, each once.
    received = notification_server.received(len(critical) + len(bests))
    summaries = [(r.summary, r.body) for r in received]
    assert len(summaries) == len(set(summaries))
    assert any(r.urgency == "CRITICAL" and "blow-up" in r.summary for r in received)
    assert any(
        r.summary == "New best model: blow-up" and "snapshot saved" in r.body for r in received
    )


@pytest.mark.slow
def test_a_file_dropped_into_the_inbox_is_validated_and_notified(
    tmp_path: Path, notification_server: NotificationServer
) -> None:
    import json

    run = tmp_path / "run-a"
    run.mkdir()
    (run / "trainer_log.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    rows = [
        {"instruction": f"Add {i} and {i + 1}.", "input": "", "output": f"The sum is {2 * i + 1}."}
        for i in range(50)
    ]
    (run / "inbox").mkdir()  # a user opts in by creating it
    with DaemonProcess(tmp_path) as daemon:
        daemon.start(str(run), notifications=True)
        part = run / "inbox" / "my_data.jsonl.part"  # copied under a temporary name, then renamed
        part.write_text("".join(json.dumps(r) + "\n" for r in rows))
        part.rename(run / "inbox" / "my_data.jsonl")
        daemon.wait_for(
            lambda: len(daemon.events("--kind", "validation")) == 1, timeout_s=60, what="validation"
        )
        (validation,) = daemon.events("--kind", "validation")
        assert daemon.stop() == 0
    assert validation["data"]["score"] >= 90
    assert validation["summary"].startswith(str(run / "inbox" / "my_data.jsonl"))
    assert Path(validation["data"]["report_path"]).is_file()
    (received,) = notification_server.received(1)
    assert received.summary == "Data checked: my_data.jsonl"
    assert received.body.startswith("my_data.jsonl: ")
    assert "/100, ready" in received.body
