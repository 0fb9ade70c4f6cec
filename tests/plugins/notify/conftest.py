"""A real notification server for the tests: a private session bus, an Xvfb display and dunst.

Nothing here touches the user's own session: the bus has no service files (so nothing is
auto-started), and the test's environment points at it through DBUS_SESSION_BUS_ADDRESS and
DISPLAY. Missing binaries skip these tests on a workstation and fail them in CI.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import Settings
from tunewatch.daemon.plugin import PluginContext
from tunewatch.daemon.store import AsyncStore

BINARIES = ("dbus-daemon", "dbus-send", "Xvfb", "dunst", "dunstctl")

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:tmpdir=/tmp</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""

# Nothing expires and history keeps everything; each urgency tags the formatted message, because
# dunst 1.9's history has no urgency field.
DUNSTRC = """[global]
    markup = full
    history_length = 0
    sticky_history = yes
    stack_duplicates = false
    notification_limit = 0
    idle_threshold = 0
    font = Monospace 8
[urgency_low]
    timeout = 0
    format = "LOW|%s|%b"
[urgency_normal]
    timeout = 0
    format = "NORMAL|%s|%b"
[urgency_critical]
    timeout = 0
    format = "CRITICAL|%s|%b"
"""


def require_binaries() -> None:
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if not missing:
        return
    message = (
        f"{', '.join(missing)} not found: install the apt packages dbus, xvfb and dunst "
        "(.ci/run does) to test notifications against a real server"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True)
class Received:
    """One notification as dunst got it."""

    id: int  # dunst numbers notifications in the order they arrive
    summary: str
    body: str
    urgency: str  # LOW, NORMAL or CRITICAL, as dunst classified it
    appname: str
    message: str  # dunst's formatted text (its markup is what gets rendered)


@dataclass
class Processes:
    """Child processes started by a test, stopped in reverse order at its end."""

    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def add(self, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def stop_all(self) -> None:
        while self.started:
            self.stop(self.started.pop())


class NotificationServer:
    """A session bus with (usually) dunst on it; reads back what dunst received."""

    def __init__(self, address: str, env: dict[str, str], dunstrc: Path, procs: Processes) -> None:
        self.address = address
        self.env = env
        self.dunstrc = dunstrc
        self.processes = procs
        self.dunst: subprocess.Popen[bytes] | None = None

    def start_dunst(self) -> None:
        self.dunst = self.processes.add(
            subprocess.Popen(
                ["dunst", "-config", str(self.dunstrc)],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        _wait_until(self._dunst_answers, "dunst")

    def stop_dunst(self) -> None:
        assert self.dunst is not None
        self.processes.stop(self.dunst)

    def _dunst_answers(self) -> bool:
        proc = subprocess.run(["dunstctl", "count", "displayed"], env=self.env, capture_output=True)
        return proc.returncode == 0

    def dunstctl(self, *args: str) -> str:
        proc = subprocess.run(
            ["dunstctl", *args], env=self.env, capture_output=True, text=True, timeout=10
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def count(self) -> int:
        return sum(
            int(self.dunstctl("count", what)) for what in ("displayed", "waiting", "history")
        )

    def wait_for(self, count: int, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.count() < count:
            assert time.monotonic() < deadline, f"dunst received {self.count()} of {count}"
            time.sleep(0.02)

    def received(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        """Everything received, oldest first, once at least `count` notifications arrived.

        Blocking: from a test's event loop, call it through `asyncio.to_thread`.
        """
        self.wait_for(count, timeout_s)
        self.dunstctl("close-all")
        entries = json.loads(self.dunstctl("history"))["data"][0]
        return sorted((_received(entry) for entry in entries), key=lambda r: r.id)


def _received(entry: dict[str, Any]) -> Received:
    def value(key: str) -> str:
        return str(entry[key]["data"])

    message = value("message")
    return Received(
        id=int(entry["id"]["data"]),
        summary=value("summary"),
        body=value("body"),
        urgency=message.split("|", 1)[0],
        appname=value("appname"),
        message=message,
    )


async def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Waits, without blocking the event loop, until `check()` holds."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def _wait_until(check: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} did not start"
        time.sleep(0.02)


@pytest.fixture(scope="session")
def x_display() -> Iterator[str]:
    """One Xvfb for the whole session: dunst needs a display, not a fresh one per test."""
    require_binaries()
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "800x600x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as reader:
        number = reader.readline().strip()
    if not number:
        proc.kill()
        proc.wait()
        pytest.fail("Xvfb did not start")
    yield f":{number}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory for bus sockets (pytest's tmp_path can exceed the 108-byte limit)."""
    path = Path(tempfile.mkdtemp(prefix="tw-bus-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    yield procs
    procs.stop_all()


@pytest.fixture
def start_server(
    x_display: str, socket_dir: Path, processes: Processes, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., NotificationServer]:
    """Starts a session bus (at `address`, if given) with dunst on it, and points the test at it."""
    config = socket_dir / "bus.conf"
    config.write_text(BUS_CONFIG)
    dunstrc = socket_dir / "dunstrc"
    dunstrc.write_text(DUNSTRC)

    def start(address: str | None = None, dunst: bool = True) -> NotificationServer:
        address = address or f"unix:path={socket_dir}/bus"
        command = ["dbus-daemon", f"--config-file={config}", f"--address={address}"]
        bus = processes.add(
            subprocess.Popen(
                [*command, "--nofork", "--print-address=1"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        )
        assert bus.stdout is not None
        printed = bus.stdout.readline().decode().strip()
        assert printed, "dbus-daemon did not start"
        env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": printed, "DISPLAY": x_display}
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", printed)
        monkeypatch.setenv("DISPLAY", x_display)
        server = NotificationServer(printed, env, dunstrc, processes)
        if dunst:
            server.start_dunst()
        return server

    return start


@pytest.fixture
def notification_server(start_server: Callable[..., NotificationServer]) -> NotificationServer:
    return start_server()


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
