"""End to end: runs that log only to TensorBoard, watched live by `tunewatch run`."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from fixtures.daemon_process import DaemonProcess, metric_steps

from tunewatch.daemon.store import MetricPoint, Store


def recorded_points(db: Path) -> list[MetricPoint]:
    store = Store(db, readonly=True)
    try:
        return store.metrics()
    finally:
        store.close()


@pytest.mark.slow
def test_new_event_files_are_picked_up_live_and_a_killed_daemon_resumes_exactly(
    tmp_path: Path,
) -> None:
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "lit-run"
    run.mkdir()
    log_dir = run / "lightning_logs" / "version_0"  # made after the daemon started
    with DaemonProcess(tmp_path) as daemon:
        daemon.start(str(run))
        first = SummaryWriter(str(log_dir), filename_suffix=".first")
        for step in range(10):
            first.add_scalar("train_loss_step", 2.0 - step / 10, step)
        first.close()
        daemon.wait_for(lambda: len(metric_steps(daemon.db)) == 10, what="the first file")
        # A resumed trainer writes a second events file into the same folder.
        second = SummaryWriter(str(log_dir), filename_suffix=".second")
        for step in range(10, 20):
            second.add_scalar("train_loss_step", 2.0 - step / 10, step)
        second.flush()
        daemon.wait_for(lambda: len(metric_steps(daemon.db)) == 20, what="the second file")
        daemon.kill()  # SIGKILL: nothing is flushed or closed

        for step in range(20, 25):  # written while no daemon watches
            second.add_scalar("train_loss_step", 2.0 - step / 10, step)
        second.add_scalar("val_loss", 0.9, 24)
        second.close()
        daemon.start(str(run))
        daemon.wait_for(lambda: len(metric_steps(daemon.db)) >= 25, what="the rest")
        assert daemon.stop() == 0

    points = recorded_points(daemon.db)
    assert sorted(p.step for p in points) == list(range(25))  # each step once
    by_step = {p.step: p for p in points}
    assert by_step[24].metrics == {"loss": pytest.approx(-0.4), "eval_loss": pytest.approx(0.9)}
    assert {p.source.rsplit(".", 1)[-1] for p in points} == {"first", "second"}
    assert all(p.source.startswith("lightning_logs/version_0/events.out.tfevents.") for p in points)


@pytest.mark.slow
def test_a_real_trainer_logging_to_tensorboard_only_is_recorded_from_its_event_file(
    tmp_path: Path,
) -> None:
    from fixtures.tiny_training import train_tiny_run

    run = tmp_path / "tb-only"
    with DaemonProcess(tmp_path) as daemon:
        daemon.start(str(run))
        # report_to=["tensorboard"] writes an event file under runs/<date>_<host>/. The
        # Trainer still saves its last checkpoint (trainer_state.json): that source records the
        # same steps under its own name, and the detectors judge each value once (StepTimeline).
        result = train_tiny_run(
            run, max_steps=20, save_steps=1000, eval_steps=10, report_to=["tensorboard"]
        )
        final_eval = [e for e in result.log_history if "eval_loss" in e][-1]
        daemon.wait_for(
            lambda: any(
                "eval_loss" in p.metrics and p.step == final_eval["step"]
                for p in recorded_points(daemon.db)
            ),
            timeout_s=60,
            what="the last eval_loss",
        )
        status = daemon.run_status("tb-only")
        assert daemon.stop() == 0

    points = [p for p in recorded_points(daemon.db) if p.source.startswith("runs/")]
    assert {p.source.split("/")[-1][:20] for p in points} == {"events.out.tfevents."}
    recorded = {(p.step, name): v for p in points for name, v in p.metrics.items()}
    for entry in result.log_history:
        for name in ("loss", "eval_loss", "learning_rate", "grad_norm"):
            if name in entry:  # float32 in the event file
                assert math.isclose(recorded[entry["step"], name], entry[name], rel_tol=1e-6)
    assert status is not None and status["step"] == 20 and status["source_errors"] == 0


@pytest.mark.slow
def test_the_detectors_judge_a_tensorboard_only_run(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "nan-run"
    with DaemonProcess(tmp_path) as daemon:
        daemon.start(str(run))
        with SummaryWriter(str(run / "runs" / "Dec01_host")) as writer:
            for step in range(1, 31):
                writer.add_scalar("train/loss", 3.0 / step, step)
            writer.add_scalar("train/loss", float("nan"), 31)
        daemon.wait_for(
            lambda: bool(daemon.events("--kind", "anomaly")), timeout_s=30, what="an anomaly"
        )
        anomalies = daemon.events("--kind", "anomaly")
        assert daemon.stop() == 0

    found = [(a["data"]["kind"], a["data"]["metric"], a["data"]["step"]) for a in anomalies]
    assert ("non_finite", "loss", 31) in found
