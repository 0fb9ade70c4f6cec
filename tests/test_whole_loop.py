"""The whole loop, as a person meets it: the demo's scenario under `tunewatch run` with a real
notification server; then the daemon killed with SIGKILL and restarted: nothing repeated, nothing
lost."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures.daemon_process import DaemonProcess, recorded_events
from fixtures.notification_server import NotificationServer


@pytest.mark.slow
def test_the_demo_loop_notifies_everything_once_and_a_kill_9_repeats_nothing(
    tmp_path: Path, notification_server: NotificationServer
) -> None:
    keep = tmp_path / "demo"
    demo = subprocess.run(
        [sys.executable, "-m", "tunewatch.daemon", "demo", "--keep", str(keep), "--pace-s", "0.1"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TUNEWATCH_TEST": "1"},
    )
    assert demo.returncode == 0, demo.stderr
    config = keep / "config.toml"
    before = recorded_events(config)
    kinds = [e["kind"] for e in before]
    assert {"anomaly", "best_model", "snapshot", "comparison", "validation"} <= set(kinds)
    assert (keep / "reports" / "latest_report.md").is_file()

    # What a person was told, on the real notification server: each thing once.
    received = notification_server.received(1, timeout_s=30)
    summaries = [r.summary for r in received]
    assert any(r.urgency == "CRITICAL" and "demo-run" in r.summary for r in received), summaries
    assert "New best model: demo-run" in summaries
    assert any(s.startswith("Models compared: ") for s in summaries)
    assert "Data check failed: my_data.jsonl" in summaries  # the flawed file failed
    assert len([(r.summary, r.body) for r in received]) == len(
        {(r.summary, r.body) for r in received}
    )
    told = len(received)

    # The daemon again on the same state, killed with SIGKILL once READY, and again: the
    # finished run's history is neither repeated nor lost, and nobody is told twice.
    home = tmp_path / "restart"
    home.mkdir()
    with DaemonProcess(home, extra_env={"TUNEWATCH_TEST": "1"}) as daemon:
        daemon.start(config=config, notifications=True)
        daemon.kill()
        daemon.start(config=config, notifications=True)
        time.sleep(5)  # a settle: anything it would repeat, it repeats now
        assert daemon.stop() == 0
    after = recorded_events(config)
    assert [(e["kind"], e["summary"]) for e in after[: len(before)]] == [
        (e["kind"], e["summary"]) for e in before
    ]
    repeated = [e for e in after[len(before) :] if e["kind"] not in ("resources", "status")]
    assert repeated == []
    assert notification_server.count() == told
