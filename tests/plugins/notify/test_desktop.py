"""Desktop delivery against a real notification server (dunst on a private session bus)."""

from __future__ import annotations

import asyncio
import html
import os
import signal
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from tunewatch.plugins.alert_messages import Alert
from tunewatch.plugins.notify.desktop import DesktopChannel, probe_server
from tunewatch.plugins.notify.opener import FileOpener

from .conftest import Closer, NotificationServer, eventually

Channel = Callable[..., DesktopChannel]


@pytest.fixture
def channel(closing: list[Closer]) -> Channel:
    """Makes a desktop channel that is closed at teardown, whatever the test did."""

    def make(**kwargs: Any) -> DesktopChannel:
        desktop = DesktopChannel(structlog.get_logger("test"), **kwargs)
        closing.append(desktop.close)
        return desktop

    return make


def warnings_in(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["log_level"] == "warning"]


async def test_alerts_arrive_with_title_body_urgency_and_app_name(
    notification_server: NotificationServer,
    channel: Channel,
) -> None:
    desktop = channel()
    desktop.start()
    desktop.submit(
        Alert("Training diverged: run-a", "Step 18,500: loss 1.2345", "anomaly", critical=True)
    )
    desktop.submit(Alert("Recovered: run-a", "Loss spike on loss is over", "recovered"))
    received = await asyncio.to_thread(notification_server.received, 2)
    await desktop.close()
    assert [(r.summary, r.body, r.urgency, r.appname) for r in received] == [
        ("Training diverged: run-a", "Step 18,500: loss 1.2345", "CRITICAL", "tunewatch"),
        ("Recovered: run-a", "Loss spike on loss is over", "NORMAL", "tunewatch"),
    ]


async def test_markup_in_untrusted_text_reaches_the_server_as_literal_text(
    notification_server: NotificationServer,
    channel: Channel,
) -> None:
    name = "<b>x</b> & <img src=y>"
    desktop = channel()
    desktop.start()
    desktop.submit(Alert(f"Training diverged: {name}", f"run {name} at step 3", "anomaly"))
    (received,) = await asyncio.to_thread(notification_server.received, 1)
    await desktop.close()
    # dunst treats the summary as plain text and renders the body as markup: the body arrives
    # escaped, so what it renders is the name exactly as typed, with no tag in effect.
    assert received.summary == f"Training diverged: {name}"
    assert received.body == "run &lt;b&gt;x&lt;/b&gt; &amp; &lt;img src=y&gt; at step 3"
    assert "<" not in received.body
    assert html.unescape(received.body) == f"run {name} at step 3"


async def test_no_session_bus_logs_one_warning_and_keeps_probing(
    monkeypatch: pytest.MonkeyPatch,
    channel: Channel,
) -> None:
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    with capture_logs() as logs:
        desktop = channel(retry_s=0.01, retry_max_s=0.02)
        desktop.start()
        await eventually(
            lambda: sum(e["event"].startswith("desktop notifications still") for e in logs) >= 3
        )
        desktop.submit(Alert("Training diverged: run-a", "b", "anomaly", critical=True))
        await desktop.close()
    (warning,) = warnings_in(logs)
    assert "desktop notifications unavailable" in warning["event"]
    assert "no session bus address" in warning["reason"]
    assert desktop.available is False and desktop.sent == 0


async def test_a_bus_that_appears_later_is_found_by_the_next_probe(
    socket_dir: Path,
    start_server: Callable[..., NotificationServer],
    monkeypatch: pytest.MonkeyPatch,
    channel: Channel,
) -> None:
    address = f"unix:path={socket_dir}/later"
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
    with capture_logs() as logs:
        desktop = channel(retry_s=0.05, retry_max_s=0.1)
        desktop.start()
        await eventually(lambda: desktop.available is False)
        server = await asyncio.to_thread(start_server, address)
        await eventually(lambda: desktop.available is True)
        desktop.submit(Alert("New best model: run-a", "Step 5: loss 0.5000", "best_model"))
        (received,) = await asyncio.to_thread(server.received, 1)
        await desktop.close()
    assert received.summary == "New best model: run-a"
    (warning,) = warnings_in(logs)
    assert "cannot connect to the session bus" in warning["reason"]
    assert any(e["event"] == "desktop notifications are available again" for e in logs)


async def test_a_bus_without_a_notification_server_is_reported_as_such(
    start_server: Callable[..., NotificationServer],
) -> None:
    start_server(dunst=False)
    with pytest.raises(Exception, match="no notification server on the session bus"):
        await probe_server(5.0)


async def test_a_server_that_goes_away_is_noticed_and_found_again(
    notification_server: NotificationServer,
    channel: Channel,
) -> None:
    with capture_logs() as logs:
        desktop = channel(retry_s=0.05, retry_max_s=0.1)
        desktop.start()
        desktop.submit(Alert("one", "first", "anomaly"))
        await eventually(lambda: desktop.sent == 1)
        notification_server.stop_dunst()
        desktop.submit(Alert("two", "lost: the server is gone", "anomaly"))
        await eventually(lambda: desktop.available is False)
        await asyncio.to_thread(notification_server.start_dunst)
        await eventually(lambda: desktop.available is True)
        desktop.submit(Alert("three", "after the restart", "anomaly"))
        (received,) = await asyncio.to_thread(notification_server.received, 1)
        await desktop.close()
    assert received.summary == "three"
    (warning,) = warnings_in(logs)
    assert warning["reason"] == "the notification server did not accept the notification"
    assert any(e["event"] == "desktop notifications are available again" for e in logs)


async def test_a_frozen_server_never_holds_a_send_longer_than_the_timeout(
    notification_server: NotificationServer,
    channel: Channel,
) -> None:
    dunst = notification_server.dunst
    assert dunst is not None
    desktop = channel(timeout_s=0.3, retry_s=60)
    desktop.start()
    desktop.submit(Alert("one", "first", "anomaly"))
    await eventually(lambda: desktop.sent == 1)
    os.kill(dunst.pid, signal.SIGSTOP)
    try:
        with capture_logs() as logs:
            desktop.submit(Alert("two", "never answered", "anomaly"))
            await eventually(lambda: desktop.available is False, timeout_s=2.0)
    finally:
        os.kill(dunst.pid, signal.SIGCONT)
    await desktop.close()
    (warning,) = warnings_in(logs)
    assert warning["reason"] == "timed out"


async def test_clicking_a_notification_opens_its_target(
    notification_server: NotificationServer,
    xdg_open_log: Path,
    tmp_path: Path,
    channel: Channel,
) -> None:
    snapshot = tmp_path / "snapshots" / "step-17213"
    opener = FileOpener(structlog.get_logger("test"))
    desktop = channel(opener=opener.open)
    desktop.start()
    desktop.submit(Alert("New best model: run-a", "b", "best_model", target=str(snapshot)))
    await eventually(lambda: desktop.sent == 1)
    # dunst invokes the notification's default action, as a click on its body would.
    await asyncio.to_thread(notification_server.dunstctl, "action", "0")
    await eventually(xdg_open_log.exists)
    await eventually(lambda: xdg_open_log.read_text() == f"{snapshot}\n")
    await desktop.close()
    await opener.close()


async def test_without_xdg_open_a_click_is_logged_not_fatal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with capture_logs() as logs:
        opener = FileOpener(structlog.get_logger("test"))
        opener.open("/somewhere")
        await opener.close()
    assert logs[0]["event"] == "cannot open from a notification: xdg-open is not installed"
