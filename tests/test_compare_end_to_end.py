"""End to end: each new best snapshot of a real Trainer run is compared with the previous best
by the running daemon, in a child process, with a report and a desktop notification."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest
from fixtures.daemon_process import DaemonProcess
from fixtures.notification_server import NotificationServer, Received

# Quick figures: the point is the path, not the precision of a tiny model's timings.
CONFIG = """
[compare]
device = "cpu"
max_new_tokens = 4
repeats = 2
"""


def compared_notifications(server: NotificationServer, count: int) -> list[Received]:
    """The "Models compared" notifications, once `count` of them arrived (best models and the
    end of training are notified too)."""
    deadline = time.monotonic() + 30
    while True:
        found = [r for r in server.received(0) if r.summary.startswith("Models compared: ")]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


@pytest.mark.slow
def test_each_new_best_snapshot_is_compared_with_the_previous_one(
    tmp_path: Path, notification_server: NotificationServer
) -> None:
    from fixtures.tiny_training import train_tiny_run

    run = tmp_path / "tiny"
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    with DaemonProcess(tmp_path, extra_env={"TUNEWATCH_TEST": "1"}) as daemon:
        daemon.start(str(run), config=config, notifications=True)
        daemon_pid = daemon.proc.pid if daemon.proc is not None else 0
        train_tiny_run(run, max_steps=30, save_steps=10, eval_steps=10)
        daemon.wait_for(
            lambda: (
                2
                <= len(daemon.events("--kind", "best_model"))
                == len(daemon.events("--kind", "snapshot"))
            ),
            timeout_s=90,
            what="a snapshot of every best model",
        )
        snapshots = daemon.events("--kind", "snapshot")
        daemon.wait_for(
            lambda: len(daemon.events("--kind", "comparison")) == len(snapshots) - 1,
            timeout_s=180,
            what="a comparison of each new best with the previous one",
        )
        comparisons = daemon.events("--kind", "comparison")
        # The daemon itself never loaded torch: the comparisons ran in child processes.
        maps = Path(f"/proc/{daemon_pid}/maps").read_text()
        assert "libtorch" not in maps
        assert daemon.stop() == 0

    paths = [s["data"]["path"] for s in snapshots]
    for (a, b), event in zip(itertools.pairwise(paths), comparisons, strict=True):
        data = event["data"]
        assert (data["model_a"], data["model_b"]) == (a, b)
        assert not data["failed"], data["summary"]
        report = Path(data["report_path"])
        assert report.parent == run / "reports" / "comparisons"
        assert report.name == f"{Path(a).name}-vs-{Path(b).name}.md"
        text = report.read_text()
        assert "Speed" in text and "Recommendation" in text
        figures = json.loads(report.with_suffix(".json").read_text())
        assert figures["setup"]["device"] == "cpu"
        assert figures["setup"]["max_new_tokens"] == 4
        assert figures["a"]["speed"]["decode_tokens_per_s"] > 0
        # Without a test file, the eval loss the trainer logged at each step, labelled as such.
        assert "eval_loss" in figures["b"]["trainer_metrics"]
        assert data["winner"] in (a, b)
    received = compared_notifications(notification_server, len(comparisons))
    first = received[0]
    assert first.summary == f"Models compared: {Path(paths[0]).name} vs {Path(paths[1]).name}"
    assert first.body == comparisons[0]["summary"]
