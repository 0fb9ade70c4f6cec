"""Fixtures of the alertmanager plugin's tests: a real Alertmanager and its notifications."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .servers import AlertmanagerServer, Notifications


@pytest.fixture
def notifications() -> Iterator[Notifications]:
    sink = Notifications()
    yield sink
    sink.close()


@pytest.fixture
def alertmanager(tmp_path: Path, notifications: Notifications) -> Iterator[AlertmanagerServer]:
    """A configured Alertmanager, not started: call `start()` (a test may start it late)."""
    server = AlertmanagerServer(tmp_path / "alertmanager", notifications)
    yield server
    server.stop()
