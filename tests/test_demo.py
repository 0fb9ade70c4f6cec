"""`tunewatch demo` as a new user runs it: every feature on a real run, then a clean stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from fixtures.daemon_process import recorded_events

DEMO_TIME_LIMIT_S = 300


def demo(keep: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tunewatch.daemon",
            "demo",
            "--keep",
            str(keep),
            "--no-notifications",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "XDG_CONFIG_HOME": str(keep.parent / "config")},
    )


@pytest.mark.slow
def test_the_demo_shows_every_feature_and_leaves_its_artefacts(tmp_path: Path) -> None:
    keep = tmp_path / "demo"
    # A quicker pace than a person's (0.35 s a step), slow enough that each best arrives alone.
    proc = demo(keep, "--pace-s", "0.1")
    out, err = proc.communicate(timeout=DEMO_TIME_LIMIT_S)
    assert proc.returncode == 0, err
    assert "Traceback" not in out + err
    assert "What you just saw" in out
    # A divergence alert, critical, after the learning rate was blown up at step 85.
    critical = [
        e
        for e in recorded_events(keep / "config.toml", "--kind", "anomaly")
        if e["severity"] == "critical"
    ]
    assert critical and all(int(e["data"]["step"]) >= 85 for e in critical)
    # Best models snapshotted, each new one compared with the previous, with a report.
    snapshots = recorded_events(keep / "config.toml", "--kind", "snapshot")
    comparisons = recorded_events(keep / "config.toml", "--kind", "comparison")
    # (When this fails, the daemon's own account of its comparisons says why.)
    compare_log = [
        line
        for line in (keep / "daemon.log").read_text(errors="replace").splitlines()
        if "compar" in line or "snapshot" in line
    ]
    assert len(snapshots) >= 2 and len(comparisons) == len(snapshots) - 1, compare_log[-40:]
    assert all(Path(str(c["data"]["report_path"])).is_file() for c in comparisons)
    # The flawed data file was validated from the inbox and failed.
    (validation,) = recorded_events(keep / "config.toml", "--kind", "validation")
    assert validation["data"]["verdict"] != "ready"
    assert Path(str(validation["data"]["report_path"])).is_file()
    # The report, with its chart.
    reports = keep / "reports"
    assert (reports / "latest_report.md").is_file() and list(reports.glob("*.png"))
    # Each demo starts fresh: the same folder again is refused.
    again = demo(keep)
    again.communicate(timeout=60)
    assert again.returncode == 2


@pytest.mark.slow
def test_ctrl_c_stops_the_demo_cleanly_at_any_point(tmp_path: Path) -> None:
    keep = tmp_path / "demo"
    proc = demo(keep, "--pace-s", "0.5")
    deadline = time.monotonic() + 120
    while not (keep / "demo-run" / "training_status.json").is_file():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        # Say what was still running, and leave nothing behind for the next test to trip on.
        running = []
        for child in children:
            with contextlib.suppress(psutil.Error):  # (gone meanwhile: not running)
                running.append(f"{child.pid} {' '.join(child.cmdline()[:4])}")
                child.kill()
        proc.kill()
        out, err = proc.communicate()
        log = keep / "daemon.log"
        tail = log.read_text(errors="replace")[-3000:] if log.is_file() else "(no daemon.log)"
        pytest.fail(
            f"the demo did not stop within 60 s of Ctrl-C; still running: {running}\n"
            f"stdout: {out[-2000:]}\nstderr: {err[-2000:]}\ndaemon.log: {tail}"
        )
    assert proc.returncode == 130
    assert "Traceback" not in out + err and "Stopped" in out
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []
