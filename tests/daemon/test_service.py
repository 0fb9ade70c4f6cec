"""`tunewatch run` as a real process: readiness, live tailing, signals, restarts without gaps."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from fixtures.daemon_process import DaemonProcess, metric_steps


def jsonl(step: int, loss: float | None = None) -> str:
    loss = 2.0 / (1 + step * 0.01) if loss is None else loss
    return json.dumps({"current_steps": step, "total_steps": 1000, "loss": loss}) + "\n"


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)
        f.flush()


def write_trainer_state(run: Path, step: int, entries: list[dict[str, float]]) -> None:
    ckpt = run / f"checkpoint-{step}"
    ckpt.mkdir(parents=True, exist_ok=True)
    state = {
        "global_step": step,
        "max_steps": 100,
        "best_metric": None,
        "best_model_checkpoint": None,
        "epoch": 1.0,
        "log_history": entries,
    }
    (ckpt / "trainer_state.json").write_text(json.dumps(state))


def test_once_reads_every_kind_of_source(tmp_path: Path) -> None:
    run = tmp_path / "run-a"
    run.mkdir()
    append(run / "trainer_log.jsonl", "".join(jsonl(s) for s in range(1, 6)) + "not json\n")
    write_trainer_state(run, 10, [{"step": s, "loss": 1.0, "epoch": 0.1} for s in range(1, 11)])
    (run / "training_status.json").write_text(
        json.dumps({"status": "training", "current_step": 10, "total_steps": 100, "loss": 0.9})
    )
    append(run / "train.log", "booting\nStep 7: loss=1.5\nStep 8: loss=1.4\n")
    (run / "lightning_logs" / "version_0").mkdir(parents=True)
    (run / "lightning_logs" / "version_0" / "metrics.csv").write_text(
        "epoch,step,train_loss\n0,1,2.0\n0,2,1.9\n"
    )
    with DaemonProcess(tmp_path) as daemon:
        daemon.cli("run", "--once", "--no-notifications", str(run))
        status = daemon.run_status("run-a")
        assert status is not None
        assert status["status"] == "training"
        assert status["total_steps"] == 100
        assert status["step"] == 10
        assert status["source_errors"] == 1
        assert "invalid_json" in status["last_error"]
        sources = {Path(f["key"]).name for f in status["files"]}
        assert sources == {
            "trainer_log.jsonl",
            "trainer_state.json",
            "training_status.json",
            "train.log",
            "metrics.csv",
        }
        by_source: dict[str, list[int]] = {}
        for source in (
            "trainer_log.jsonl",
            "train.log",
            "lightning_logs/version_0/metrics.csv",
            "trainer_state.json",
            "training_status.json",
        ):
            by_source[source] = list(metric_steps(daemon.db, source))
        assert by_source["trainer_log.jsonl"] == [1, 2, 3, 4, 5]
        assert by_source["train.log"] == [7, 8]
        assert by_source["lightning_logs/version_0/metrics.csv"] == [1, 2]
        assert by_source["trainer_state.json"] == list(range(1, 11))
        assert by_source["training_status.json"] == [10]
        kinds = [e["kind"] for e in daemon.events()]
        assert "checkpoint" in kinds and "source_error" in kinds
        # A second pass over unchanged files records nothing new.
        daemon.cli("run", "--once", "--no-notifications", str(run))
        assert len(metric_steps(daemon.db)) == 5 + 2 + 2 + 10 + 1


def test_live_lines_appear_in_status_and_sigterm_exits_cleanly(tmp_path: Path) -> None:
    run = tmp_path / "live"
    run.mkdir()
    log = run / "trainer_log.jsonl"
    append(log, jsonl(1))
    with DaemonProcess(tmp_path) as daemon:
        daemon.start(str(run))
        daemon.wait_message("STATUS=watching 1 run(s), 1 file(s)")
        # While it caught up, systemd's start timeout was pushed back, then READY=1 came.
        extended = daemon.messages.index("EXTEND_TIMEOUT_USEC=20000000")
        assert daemon.messages[extended + 1].startswith("STATUS=catching up: ")
        assert extended < daemon.messages.index("READY=1")
        append(log, jsonl(2) + jsonl(3, loss=0.5))
        daemon.wait_for(lambda: (daemon.run_status("live") or {}).get("step") == 3, what="step 3")
        assert daemon.run_status("live")["loss"] == 0.5  # type: ignore[index]
        assert daemon.stop() == 0
        assert "STOPPING=1" in daemon.messages


def test_a_run_directory_created_later_is_waited_for(tmp_path: Path) -> None:
    run = tmp_path / "not-yet"
    with DaemonProcess(tmp_path) as daemon:
        daemon.start(str(run))
        # Named at start: a typo or a run not started yet is no mystery.
        daemon.wait_for(
            lambda: f'"waiting_for": ["{run}"]' in daemon.log(), timeout_s=30, what="waiting_for"
        )
        run.mkdir()
        append(run / "trainer_log.jsonl", jsonl(1) + jsonl(2))
        daemon.wait_for(
            lambda: (daemon.run_status("not-yet") or {}).get("step") == 2,
            timeout_s=30,
            what="late run dir",
        )
        assert daemon.stop() == 0


def test_new_checkpoints_and_log_files_are_picked_up_while_running(tmp_path: Path) -> None:
    run = tmp_path / "hf"
    run.mkdir()
    with DaemonProcess(tmp_path) as daemon:
        daemon.start(str(run))
        write_trainer_state(
            run, 5, [{"step": s, "loss": 1.0 / s, "epoch": 0.1} for s in range(1, 6)]
        )
        write_trainer_state(
            run, 10, [{"step": s, "loss": 1.0 / s, "epoch": 0.1} for s in range(1, 11)]
        )
        append(run / "extra.jsonl", jsonl(11))
        daemon.wait_for(lambda: (daemon.run_status("hf") or {}).get("step") == 11, what="step 11")
        daemon.wait_for(
            lambda: len([e for e in daemon.events("--kind", "checkpoint")]) == 2, what="checkpoints"
        )
        assert list(metric_steps(daemon.db, "trainer_state.json")) == list(range(1, 11))
        assert daemon.stop() == 0


def test_sighup_reloads_the_configuration(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    append(first / "trainer_log.jsonl", jsonl(1))
    append(second / "trainer_log.jsonl", jsonl(1))
    config = tmp_path / "config.toml"
    config.write_text(f'[daemon]\nruns = ["{first}"]\n')
    with DaemonProcess(tmp_path) as daemon:
        daemon.start(config=config)
        daemon.wait_for(lambda: daemon.run_status("first") is not None, what="first run")
        config.write_text(f'[daemon]\nruns = ["{first}", "{second}"]\n')
        daemon.messages.clear()
        daemon.signal(signal.SIGHUP)
        daemon.wait_message("RELOADING=1")
        daemon.wait_for(lambda: daemon.run_status("second") is not None, what="second run")
        daemon.wait_message("READY=1")
        assert daemon.stop() == 0


@pytest.mark.parametrize("kill_points", [3])
def test_sigkill_mid_stream_then_restart_loses_and_repeats_nothing(
    tmp_path: Path, kill_points: int
) -> None:
    """Write 3,000 lines in bursts (some split mid-line); SIGKILL the daemon several times."""
    run = tmp_path / "crashy"
    run.mkdir()
    log = run / "trainer_log.jsonl"
    total = 3000
    written = 0
    with DaemonProcess(tmp_path) as daemon:
        for round_no in range(kill_points + 1):
            daemon.start(str(run))
            target = total * (round_no + 1) // (kill_points + 1)
            while written < target:
                burst = "".join(jsonl(s) for s in range(written + 1, min(written + 50, target) + 1))
                cut = len(burst) // 2 if round_no % 2 == 0 else len(burst)
                append(log, burst[:cut])  # a half-written line sits at EOF for a moment
                time.sleep(0.002)
                append(log, burst[cut:])
                written = min(written + 50, target)
            if round_no < kill_points:
                time.sleep(0.05 * (round_no + 1))  # let the daemon be somewhere mid-stream
                daemon.kill()
        daemon.wait_for(
            lambda: len(metric_steps(daemon.db)) >= total, what="all lines", timeout_s=60
        )
        assert daemon.stop() == 0
    steps = list(metric_steps(daemon.db))
    assert steps == list(range(1, total + 1))


def test_malformed_input_never_crashes_the_daemon(tmp_path: Path) -> None:
    run = tmp_path / "messy"
    run.mkdir()
    log = run / "trainer_log.jsonl"
    with DaemonProcess(tmp_path) as daemon:
        daemon.start(str(run))
        with log.open("ab") as f:
            f.write(b'\xff\xfe garbage\n{"step": \n[1,2]\n' + jsonl(1).encode())
            f.write(b"{" + b"x" * (11 * 1024 * 1024) + b"}\n" + jsonl(2).encode())
        daemon.wait_for(lambda: (daemon.run_status("messy") or {}).get("step") == 2, what="step 2")
        status = daemon.run_status("messy")
        assert status is not None and status["source_errors"] == 4
        assert daemon.proc is not None and daemon.proc.poll() is None
        assert daemon.stop() == 0
    assert os.path.getsize(log) > 11 * 1024 * 1024  # the user's file is untouched


def test_points_older_than_the_setting_are_thinned_while_running(tmp_path: Path) -> None:
    run = tmp_path / "old-run"
    run.mkdir()
    log = run / "trainer_log.jsonl"
    sixty_days_ago = time.time() - 60 * 86_400
    lines = [
        json.dumps({"step": s, "loss": 3.0 - s / 100, "time": sixty_days_ago + s}) + "\n"
        for s in range(200)
    ]
    append(log, "".join(lines))
    config = tmp_path / "config.toml"
    config.write_text("[daemon]\ndownsample_after_days = 30\ndownsample_keep_every = 10\n")
    with DaemonProcess(tmp_path) as daemon:
        daemon.start(str(run), config=config)
        # Every 10th step, and the last one (also the highest step and the lowest loss).
        daemon.wait_for(
            lambda: list(metric_steps(daemon.db)) == [*range(0, 200, 10), 199], what="thinning"
        )
        assert daemon.stop() == 0
    assert log.read_text() == "".join(lines)  # the user's file is only ever read
