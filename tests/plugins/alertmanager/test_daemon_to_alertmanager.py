"""The whole path with real processes: `tunewatch run` on a run whose log gets a NaN loss, and a
real Alertmanager on loopback that lists the alert, then resolves it; across a SIGKILL of the
daemon, and with Alertmanager started only after the alert happened."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from fixtures.daemon_process import DaemonProcess

from .servers import AlertmanagerServer, Notifications, eventually, nan_loss_labels

RUN = "nan-run"


def write_config(home: Path, alertmanager: AlertmanagerServer) -> Path:
    config = home / "config.toml"
    config.write_text(
        "[anomaly]\n"
        "quiet_points = 3\n"
        "[alertmanager]\n"
        f'url = "{alertmanager.url}"\n'
        "resend_s = 1.0\n"
        "retry_s = 0.5\n"
        "retry_max_s = 1.0\n"
        'labels = ["cluster=test"]\n'
    )
    return config


def append(run: Path, *losses: float, first_step: int) -> None:
    with (run / "trainer_log.jsonl").open("a") as log:
        for i, loss in enumerate(losses):
            log.write(json.dumps({"step": first_step + i, "loss": loss}) + "\n")


def new_run(home: Path) -> Path:
    run = home / RUN
    run.mkdir()
    append(run, 2.0, 1.9, 1.8, first_step=1)
    return run


def the_alert(alertmanager: AlertmanagerServer) -> dict[str, Any] | None:
    return alertmanager.alert(alertname="TunewatchNonFinite", run=RUN)


@pytest.mark.slow
def test_a_nan_fires_survives_a_sigkill_and_resolves_when_the_run_recovers_while_down(
    tmp_path: Path, alertmanager: AlertmanagerServer, notifications: Notifications
) -> None:
    alertmanager.start()
    run = new_run(tmp_path)
    config = write_config(tmp_path, alertmanager)
    with DaemonProcess(tmp_path) as daemon:
        daemon.start(str(run), config=config)
        append(run, float("nan"), first_step=4)
        alert = eventually(lambda: the_alert(alertmanager), 60, "the alert in Alertmanager")
        assert alert["status"]["state"] == "active"
        assert alert["labels"] == nan_loss_labels(RUN, "test")
        assert alert["annotations"]["summary"] == f"NaN loss: {RUN}"
        eventually(lambda: notifications.alerts("firing"), 30, "on-call to be told")

        daemon.kill()  # SIGKILL: no chance to save anything more
        daemon.start(str(run), config=config)
        before = the_alert(alertmanager)
        assert before is not None, "still active in Alertmanager"
        eventually(
            lambda: (a := the_alert(alertmanager)) and a["updatedAt"] != before["updatedAt"],
            30,
            "the restarted daemon to re-send it",
        )

        daemon.kill()
        append(run, 1.7, 1.6, 1.5, 1.4, first_step=5)  # recovered while tunewatch was down
        daemon.start(str(run), config=config)
        eventually(lambda: the_alert(alertmanager) is None, 60, "the alert to be resolved")
        resolved = eventually(lambda: notifications.alerts("resolved"), 30, "resolved notice")
        assert resolved[0]["labels"]["run"] == RUN
        assert daemon.stop() == 0
    firing = notifications.alerts("firing")
    # (As instants: Alertmanager's API says 19.270Z where its webhook says 19.27Z.)
    starts = {_instant(a["startsAt"]) for a in firing}
    assert starts == {_instant(alert["startsAt"])}, "one episode, one start"


@pytest.mark.slow
def test_an_alert_raised_while_alertmanager_is_down_arrives_once_it_starts(
    tmp_path: Path, alertmanager: AlertmanagerServer
) -> None:
    run = new_run(tmp_path)
    config = write_config(tmp_path, alertmanager)
    with DaemonProcess(tmp_path) as daemon:
        daemon.start(str(run), config=config)
        append(run, float("nan"), first_step=4)
        daemon.wait_for(lambda: bool(daemon.events("--kind", "anomaly")), 60, "the anomaly")

        def told_unreachable() -> bool:
            shown = daemon.cli("--config", str(config), "alertmanager", check=False)
            return shown.returncode == 1 and "UNREACHABLE" in shown.stdout

        daemon.wait_for(told_unreachable, 30, "`tunewatch alertmanager` to show the outage")

        def plugin_line() -> str:
            listed = daemon.cli("--config", str(config), "plugins", check=False).stdout
            return next(x for x in listed.splitlines() if x.startswith("alertmanager"))

        assert "FAILED in the running daemon: Alertmanager unreachable" in plugin_line()
        daemon.kill()  # and the queue survives a SIGKILL too
        daemon.start(str(run), config=config)
        # The outage began before the restart: shown again once the first send fails.
        daemon.wait_for(lambda: "unreachable" in plugin_line(), 30, "the outage listed again")
        alertmanager.start()
        alert = eventually(lambda: the_alert(alertmanager), 60, "the queued alert")
        assert alert["status"]["state"] == "active"
        daemon.wait_for(
            lambda: (
                daemon.cli("--config", str(config), "alertmanager", check=False).returncode == 0
            ),
            30,
            "`tunewatch alertmanager` to show it delivered",
        )
        daemon.wait_for(lambda: "FAILED" not in plugin_line(), 30, "the outage cleared")
        assert daemon.stop() == 0
    assert "Alertmanager unreachable" in daemon.log()
    assert "Alertmanager reachable again" in daemon.log()


def _instant(text: str) -> dt.datetime:
    """An RFC 3339 time as Alertmanager writes it (trailing zeros of the fraction trimmed or
    not, Z for UTC)."""
    return dt.datetime.fromisoformat(text)
