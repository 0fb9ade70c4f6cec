"""Fixtures of the notify plugin's tests: a webhook, a real store and bus, plugin contexts.

The real notification server (session bus, Xvfb, dunst) is in tests/fixtures/notification_server.py.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog
from fixtures.notification_server import NotificationServer, Processes, Received, eventually

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import Settings
from tunewatch.daemon.plugin import PluginContext
from tunewatch.daemon.store import AsyncStore

__all__ = ["NotificationServer", "Received", "eventually"]


@pytest.fixture
def xdg_open_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in `xdg-open`, first on PATH, that records the path it was asked to open."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "opened.txt"
    script = bin_dir / "xdg-open"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> "{record}"\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return record


class Webhook:
    """An HTTP endpoint on 127.0.0.1 that records the JSON it is sent and answers `status`."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                payload = json.loads(self.rfile.read(length))
                if hook.status == 200:
                    hook.received.append(payload)
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AsyncStore]:
    opened = await AsyncStore.open(tmp_path / "state.db")
    yield opened
    await opened.close()


@pytest.fixture
async def event_bus() -> AsyncIterator[EventBus]:
    bus = EventBus()
    yield bus
    await bus.close()


Closer = Callable[[], Awaitable[None]]


@pytest.fixture
async def closing(event_bus: EventBus, processes: Processes) -> AsyncIterator[list[Closer]]:
    """Closers run at teardown even when the test failed, before the bus and the server stop:
    a channel left open would leak its D-Bus socket into the next test as a ResourceWarning."""
    closers: list[Closer] = []
    yield closers
    for close in reversed(closers):
        await close()


@pytest.fixture
def make_context(event_bus: EventBus, store: AsyncStore) -> Callable[..., PluginContext]:
    """A plugin context on a real bus and store; `log` defaults to a structlog logger."""

    def make(
        config: Any,
        *,
        notifications: bool = True,
        run_dirs: dict[str, Path] | None = None,
    ) -> PluginContext:
        return PluginContext(
            name="notify",
            bus=event_bus,
            store=store,
            config=config,
            settings=Settings(),
            log=structlog.get_logger("tunewatch.plugins.notify"),
            run_dirs=run_dirs or {},
            notifications=notifications,
        )

    return make
