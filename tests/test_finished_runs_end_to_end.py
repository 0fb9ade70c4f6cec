"""End to end: a run that finished is told once as finished, never as stalled; a run that went
quiet before tunewatch started is "inactive since ...", not a fresh emergency; a run that stalls
while watched is still alerted.

The real daemon runs with notifications on (dbus + dunst), and a stall after 6 s of silence.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest
from fixtures.daemon_process import DaemonProcess
from fixtures.notification_server import NotificationServer

STALL_MINUTES = 0.1  # 6 s


def loss(step: int) -> float:
    return 2.0 * math.exp(-step / 400) + 0.6


def hf_checkpoint(run: Path, step: int, history: list[dict[str, Any]], max_steps: int) -> None:
    """What a Hugging Face Trainer saves: trainer_state.json in checkpoint-N/ (json, indent 2)."""
    folder = run / f"checkpoint-{step}"
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "global_step": step,
        "max_steps": max_steps,
        "best_metric": 0.71,
        "best_model_checkpoint": str(run / "checkpoint-400"),
        "log_history": history,
    }
    (folder / "trainer_state.json").write_text(json.dumps(state, indent=2))


def finished_hf_history(max_steps: int) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = []
    for step in range(10, max_steps + 1, 10):
        history.append(
            {"epoch": step / max_steps, "grad_norm": 1.0, "loss": loss(step), "step": step}
        )
        if step % 100 == 0:
            history.append({"epoch": step / max_steps, "eval_loss": 0.7 + 100 / step, "step": step})
    # The end-of-training summary the Trainer adds last.
    history.append(
        {
            "epoch": 1.0,
            "step": max_steps,
            "total_flos": 1e15,
            "train_loss": 1.1,
            "train_runtime": 900.0,
        }
    )
    return history


def write_status(run: Path, status: str, step: int, pid: int | None = None) -> None:
    data = {"status": status, "current_step": step, "total_steps": 1000, "loss": 1.0}
    if pid is not None:
        data["pid"] = pid
    (run / "training_status.json").write_text(json.dumps(data))


@pytest.mark.slow
def test_finished_inactive_and_stalled_runs_are_told_apart(
    tmp_path: Path, notification_server: NotificationServer
) -> None:
    runs = tmp_path / "runs"
    # Quiet since before tunewatch started: its log was last written two hours ago.
    old = runs / "quiet-since-yesterday"
    old.mkdir(parents=True)
    (old / "trainer_log.jsonl").write_text(
        "".join(
            json.dumps({"current_steps": s, "total_steps": 1000, "loss": loss(s)}) + "\n"
            for s in range(1, 200)
        )
    )
    write_status(old, "training", 199)
    two_hours_ago = time.time() - 7200
    for path in (old / "trainer_log.jsonl", old / "training_status.json"):
        os.utime(path, (two_hours_ago, two_hours_ago))
    config = tmp_path / "config.toml"
    config.write_text(
        f"[daemon]\nruns = [{json.dumps(str(runs / '*'))}]\n"
        f"[anomaly]\nstall_minutes = {STALL_MINUTES}\n"
    )
    with DaemonProcess(tmp_path) as daemon:
        daemon.start(config=config, notifications=True)
        # A Hugging Face run that finishes while watched: 500/500 steps and its summary.
        hf = runs / "hf-sft"
        history = finished_hf_history(500)
        hf_checkpoint(
            hf, 250, [e for e in history if e["step"] <= 250 and "train_runtime" not in e], 500
        )
        time.sleep(1.0)
        hf_checkpoint(hf, 500, history, 500)
        # A run that logs a while while watched, then goes silent: a real stall.
        stalling = runs / "hangs"
        stalling.mkdir()
        write_status(stalling, "training", 1)
        with (stalling / "trainer_log.jsonl").open("w") as log:
            for s in range(1, 30):
                log.write(
                    json.dumps({"current_steps": s, "total_steps": 1000, "loss": loss(s)}) + "\n"
                )
        daemon.wait_for(
            lambda: any(e["data"]["kind"] == "stall" for e in daemon.events("--kind", "anomaly")),
            timeout_s=60,
            what="the stall of the run that hangs",
        )
        time.sleep(6.0)  # the stall check runs every 5 s: the others had their chance
        statuses = {r["name"]: r for r in daemon.status()["runs"]}
        anomalies = daemon.events("--kind", "anomaly")
        assert daemon.stop() == 0
    assert statuses["hf-sft"]["status"] == "finished"
    assert statuses["hf-sft"]["state"] == "finished"
    assert statuses["quiet-since-yesterday"]["state"].startswith("inactive since")
    stalls = [(a["run"], a["data"]["kind"]) for a in anomalies if a["data"]["kind"] == "stall"]
    assert stalls == [("hangs", "stall")]
    received = notification_server.received(2, timeout_s=20)
    finished = [r for r in received if r.summary.startswith("Training finished")]
    assert [r.summary for r in finished] == ["Training finished: hf-sft"]
    body = finished[0].body
    assert body.startswith("Step 500 / 500 · loss ")
    assert "eval loss 0.9000 · best eval loss 0.9000 at step 500 · " in body
    assert body.endswith(tuple(p.name for p in (hf / "snapshots").iterdir()))  # where it is
    assert any(r.summary == "Training stalled: hangs" and r.urgency == "CRITICAL" for r in received)
    assert not any("quiet-since-yesterday" in r.summary for r in received)


# pl-vqvae-weld-v37's evaluations (bench/corpus, BSD-3-Clause), one every 182 steps: swinging by
# 30-70 % early on, a best of 3.06 at the 15th, then 3.34, 3.08, 3.98, 3.89, 3.92 to the end.
OVERFIT_EVALS = [11.27, 8.43, 9.04, 6.72, 5.30, 7.07, 5.47, 9.22, 6.47, 5.81, 4.83, 4.25, 4.63,
                 4.79, 3.06, 3.34, 3.08, 3.98, 3.89, 3.92]  # fmt: skip


def overfit_at_the_end_history(every: int = 50) -> list[dict[str, Any]]:
    """A Trainer's log_history: a train loss falling 5 % per evaluation (noisy), evaluations
    as above, then the end-of-training summary."""
    history: list[dict[str, Any]] = []
    max_steps = every * len(OVERFIT_EVALS)
    for i, value in enumerate(OVERFIT_EVALS):
        for k in range(1, 5):
            step = i * every + k * every // 4
            train = 2.0 * 0.95**i * (1.0 + 0.05 * (k % 2))
            history.append({"epoch": step / every, "loss": train, "step": step})
        step = (i + 1) * every
        history.append({"epoch": i + 1.0, "eval_loss": value, "step": step})
    history.append({"epoch": 20.0, "step": max_steps, "train_loss": 1.2, "train_runtime": 60.0})
    return history


@pytest.mark.slow
def test_a_run_that_ends_overfit_is_told_with_its_best_model(
    tmp_path: Path, notification_server: NotificationServer
) -> None:
    """An eval loss 28 % above its best for its last 3 evaluations, within its noise while the
    run goes on: when the run finishes, the person is told where its best model is."""
    runs = tmp_path / "runs"
    config = tmp_path / "config.toml"
    config.write_text(
        f"[daemon]\nruns = [{json.dumps(str(runs / '*'))}]\n"
        f"[anomaly]\nstall_minutes = {STALL_MINUTES}\n"
    )
    run = runs / "vqvae-overfits"
    history = overfit_at_the_end_history()
    with DaemonProcess(tmp_path) as daemon:
        daemon.start(config=config, notifications=True)
        hf_checkpoint(run, 500, [e for e in history if e["step"] <= 500], 1000)
        time.sleep(1.0)
        hf_checkpoint(run, 1000, history, 1000)
        daemon.wait_for(
            lambda: any(
                e["data"]["kind"] == "inverted_loss" for e in daemon.events("--kind", "anomaly")
            ),
            timeout_s=60,
            what="the overfitting told at the run's end",
        )
        anomalies = daemon.events("--kind", "anomaly")
        assert daemon.stop() == 0
    (told,) = anomalies
    assert told["data"]["step"] == 1000
    assert told["data"]["detail"].startswith("the best model is at step 750: the run ended")
    received = notification_server.received(2, timeout_s=20)
    overfit = [r for r in received if r.summary.startswith("Eval loss rising")]
    assert [r.summary for r in overfit] == [
        "Eval loss rising while train loss falls: vqvae-overfits"
    ]
    assert overfit[0].body.startswith("Step 1,000: eval loss 3.9200 (the best model is at step 750")
    assert any(r.summary == "Training finished: vqvae-overfits" for r in received)


@pytest.mark.slow
def test_a_run_that_ends_overfit_just_before_a_crash_is_told_after_the_restart(
    tmp_path: Path,
) -> None:
    """kill -9 after the run's end was recorded, before its end was judged (the check runs
    every minute here): the restarted daemon tells it, once."""
    runs = tmp_path / "runs"
    config = tmp_path / "config.toml"
    config.write_text(
        f"[daemon]\nruns = [{json.dumps(str(runs / '*'))}]\n[anomaly]\nstall_minutes = 30\n"
    )
    run = runs / "vqvae-overfits"
    with DaemonProcess(tmp_path) as daemon:
        daemon.start(config=config)
        hf_checkpoint(run, 1000, overfit_at_the_end_history(), 1000)
        daemon.wait_for(
            lambda: (daemon.run_status("vqvae-overfits") or {}).get("status") == "finished",
            timeout_s=30,
            what="the run recorded as finished",
        )
        daemon.kill()
        assert daemon.events("--kind", "anomaly") == []  # killed before its end was judged
        daemon.start(config=config)
        daemon.wait_for(
            lambda: bool(daemon.events("--kind", "anomaly")),
            timeout_s=90,
            what="the end judged after the restart",
        )
        assert daemon.stop() == 0
        daemon.start(config=config)  # and a second restart does not tell it again
        assert daemon.stop() == 0
        anomalies = daemon.events("--kind", "anomaly")
    assert [(a["data"]["kind"], a["data"]["step"], a["data"]["push"]) for a in anomalies] == [
        ("inverted_loss", 1000, True)
    ]
