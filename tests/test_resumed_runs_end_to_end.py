"""End to end: steps are data, not trust. A resumed run and a bogus step still raise alerts.

The real daemon reads a LLaMA-Factory `trainer_log.jsonl` with `tunewatch run --once`, and
`tunewatch events` shows what the anomaly plugin made of it.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from fixtures.daemon_process import DaemonProcess

BOGUS_STEP = 9223372036854775807  # the line: the largest 64-bit integer


def llamafactory_line(step: int, loss: float) -> str:
    # Python's json writes NaN as the bare token NaN, as LLaMA-Factory's logger does.
    return json.dumps({"current_steps": step, "total_steps": 100, "loss": loss}) + "\n"


def healthy_loss(step: int) -> float:
    return 2.0 * math.exp(-step / 300) + 0.5


def write_log(run: Path, points: list[tuple[int, float]]) -> None:
    run.mkdir()
    (run / "trainer_log.jsonl").write_text("".join(llamafactory_line(s, v) for s, v in points))


def anomalies_after_run_once(tmp_path: Path, run: Path) -> list[dict[str, Any]]:
    with DaemonProcess(tmp_path) as daemon:
        daemon.cli("run", "--once", "--no-notifications", str(run))
        daemon.cli("run", "--once", "--no-notifications", str(run))  # a restart re-alerts nothing
        return [e["data"] for e in daemon.events("--kind", "anomaly")]


def test_a_run_resumed_from_a_checkpoint_alerts_on_its_nan(tmp_path: Path) -> None:
    """Steps 1-40, then the run resumed from checkpoint-20 writes 21-35 again, NaN from 30."""
    run = tmp_path / "resumed"
    first_attempt = [(s, healthy_loss(s)) for s in range(1, 41)]
    resumed = [(s, math.nan if s >= 30 else healthy_loss(s)) for s in range(21, 36)]
    write_log(run, first_attempt + resumed)

    anomalies = anomalies_after_run_once(tmp_path, run)

    assert [(a["kind"], a["step"], a["severity"]) for a in anomalies] == [
        ("non_finite", 30, "critical")
    ]


def test_a_bogus_step_does_not_switch_anomaly_detection_off(tmp_path: Path) -> None:
    """One line at step 2**63-1, then the log goes on at step 41 and turns NaN at 45."""
    run = tmp_path / "bogus-step"
    points = [
        *((s, healthy_loss(s)) for s in range(1, 41)),
        (BOGUS_STEP, 0.9),
        *((s, math.nan if s >= 45 else healthy_loss(s)) for s in range(41, 51)),
    ]
    write_log(run, points)

    anomalies = anomalies_after_run_once(tmp_path, run)

    assert [(a["kind"], a["step"], a["severity"]) for a in anomalies] == [
        ("non_finite", 45, "critical")
    ]


def write_checkpoint(run: Path, step: int, history: list[dict[str, Any]]) -> None:
    folder = run / f"checkpoint-{step}"
    folder.mkdir(parents=True, exist_ok=True)
    state = {"global_step": step, "max_steps": 100, "log_history": history}
    # Python's json writes NaN as the bare token NaN, as the Trainer's json.dump does.
    (folder / "trainer_state.json").write_text(json.dumps(state, indent=2))


def test_a_hugging_face_run_resumed_from_a_checkpoint_alerts_on_its_nan(tmp_path: Path) -> None:
    """HF Trainer with no JSONL log: checkpoints 10-40, then a resume from checkpoint-20 writes
    checkpoint-30 and -40 anew, its loss NaN from step 35. The daemon is running throughout."""
    run = tmp_path / "hf-resumed"
    first = [{"step": s, "loss": healthy_loss(s)} for s in range(1, 41)]
    with DaemonProcess(tmp_path) as daemon:
        run.mkdir()
        daemon.start(str(run))
        for ckpt in (10, 20, 30, 40):
            write_checkpoint(run, ckpt, first[:ckpt])
        daemon.wait_for(lambda: daemon.run_status("hf-resumed") is not None, what="the run")
        daemon.wait_for(
            lambda: (daemon.run_status("hf-resumed") or {}).get("step") == 40, what="step 40"
        )
        resumed = first[:20] + [
            {"step": s, "loss": math.nan if s >= 35 else healthy_loss(s) + 0.01}
            for s in range(21, 41)
        ]
        for ckpt in (30, 40):
            write_checkpoint(run, ckpt, resumed[:ckpt])
        daemon.wait_for(lambda: bool(daemon.events("--kind", "anomaly")), what="the NaN alert")
        anomalies = [e["data"] for e in daemon.events("--kind", "anomaly")]
        assert daemon.stop() == 0
    assert [(a["kind"], a["step"], a["severity"]) for a in anomalies] == [
        ("non_finite", 35, "critical")
    ]


@pytest.mark.slow
def test_run_once_judges_every_point_of_a_long_history(tmp_path: Path) -> None:
    """The catch-up reads 300,000 points faster than the detectors judge them, and the stop's
    drain time is short: `--once` must still judge them all (it judged ~8 % of a long history)."""
    run = tmp_path / "long"
    points = [(s, math.nan if s == 299_990 else healthy_loss(s)) for s in range(1, 300_001)]
    write_log(run, points)
    config = tmp_path / "config.toml"
    config.write_text("[daemon]\ndrain_timeout_s = 0.05\n")
    with DaemonProcess(tmp_path) as daemon:
        daemon.cli("--config", str(config), "run", "--once", "--no-notifications", str(run))
        anomalies = [e["data"] for e in daemon.events("--kind", "anomaly")]
    assert ("non_finite", 299_990) in [(a["kind"], a["step"]) for a in anomalies]


@pytest.mark.slow
def test_restarting_on_a_finished_run_records_nothing_again(tmp_path: Path) -> None:
    """A finished Trainer run with three checkpoints, read at a first start, then the daemon
    started again twice: the history is the same (before the fix, each start re-read the
    checkpoints from the second one on and raised the alerts again)."""
    from fixtures.tiny_training import train_tiny_run

    run = tmp_path / "finished"
    train_tiny_run(run, max_steps=60, save_steps=20, eval_steps=20)
    histories = []
    with DaemonProcess(tmp_path) as daemon:
        for _start in range(3):
            daemon.start(str(run))
            time.sleep(3)  # READY means caught up; give the plugins a moment too
            assert daemon.stop() == 0
            histories.append(
                [(e["kind"], e["summary"]) for e in daemon.events() if e["kind"] != "resources"]
            )
    first = histories[0]
    assert histories[1] == first and histories[2] == first
    assert [kind for kind, _ in first].count("checkpoint") == 3
