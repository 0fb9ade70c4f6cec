"""`tunewatch doctor` on notifications, against a real session bus and dunst."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fixtures.notification_server import NotificationServer

from tunewatch.plugins.notify import NotifyConfig
from tunewatch.plugins.notify.doctor import checks


def test_a_notification_server_on_the_session_bus_is_ok(
    notification_server: NotificationServer,
) -> None:
    (found,) = checks(NotifyConfig())
    assert found.ok and "notification server on the session bus" in found.detail


def test_a_bus_without_a_server_and_no_remote_channel_says_who_is_not_told(
    start_server: Callable[..., NotificationServer],
) -> None:
    start_server(dunst=False)
    (found,) = checks(NotifyConfig())
    assert found.level == "warning" and "no notification server" in found.detail
    assert "remote_urls" in found.fix
    (with_remote,) = checks(NotifyConfig(remote_urls=("json://localhost:1/",)))
    assert with_remote.ok and "1 remote channel(s)" in with_remote.detail


def test_no_session_bus_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    (found,) = checks(NotifyConfig())
    assert found.level == "warning" and "no desktop" in found.detail
    (off,) = checks(NotifyConfig(enabled=False))
    assert off.ok
