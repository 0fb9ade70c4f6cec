"""SdNotifier and run_watchdog, spoken to over real unix datagram sockets like systemd's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tunewatch.daemon.sdnotify import SdNotifier, report_startup, run_watchdog
from tunewatch.daemon.store import AsyncStore

# Generous: a loaded 2-core CI box may take a while to schedule us, never this long.
RECEIVE_TIMEOUT_S = 5.0


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """Plays systemd: a datagram socket whose path is in NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(RECEIVE_TIMEOUT_S)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


@pytest.fixture
def no_watchdog_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)


def receive(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def drain(sock: socket.socket) -> list[bytes]:
    """Every datagram already queued, without waiting for more."""
    received = []
    sock.setblocking(False)
    try:
        while True:
            received.append(sock.recv(4096))
    except BlockingIOError:
        return received
    finally:
        sock.settimeout(RECEIVE_TIMEOUT_S)


async def receive_async(sock: socket.socket) -> bytes:
    """Waits for one datagram without blocking the event loop."""
    sock.setblocking(False)
    async with asyncio.timeout(RECEIVE_TIMEOUT_S):
        return await asyncio.get_running_loop().sock_recv(sock, 4096)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_state_changes_arrive_as_datagrams(notify_socket: socket.socket) -> None:
    notifier = SdNotifier.from_env()

    notifier.ready()
    notifier.status("watching 3 runs")
    notifier.watchdog()
    notifier.stopping()

    assert [receive(notify_socket) for _ in range(4)] == [
        "READY=1",
        "STATUS=watching 3 runs",
        "WATCHDOG=1",
        "STOPPING=1",
    ]


def test_a_multi_line_status_arrives_as_one_line(notify_socket: socket.socket) -> None:
    SdNotifier.from_env().status("loss spiked\nat step 40\r\n")

    assert receive(notify_socket) == "STATUS=loss spiked at step 40"


def test_reloading_carries_the_monotonic_time_systemd_253_expects(
    notify_socket: socket.socket,
) -> None:
    before_us = time.monotonic_ns() // 1000
    SdNotifier.from_env().reloading()
    after_us = time.monotonic_ns() // 1000

    reloading, timestamp = receive(notify_socket).split("\n")
    assert reloading == "RELOADING=1"
    key, value = timestamp.split("=")
    assert key == "MONOTONIC_USEC"
    assert before_us <= int(value) <= after_us


@pytest.mark.skipif(sys.platform != "linux", reason="abstract unix sockets are Linux-only")
def test_an_abstract_notify_socket_is_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"tunewatch-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(RECEIVE_TIMEOUT_S)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)

        SdNotifier.from_env().ready()

        assert receive(sock) == "READY=1"


def test_outside_systemd_every_notification_is_a_silent_noop(
    monkeypatch: pytest.MonkeyPatch, no_watchdog_env: None
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = SdNotifier.from_env()

    with capture_logs() as logs:
        notifier.ready()
        notifier.status("idle")
        notifier.reloading()
        notifier.watchdog()
        notifier.stopping()

    assert not notifier.enabled
    assert notifier.watchdog_interval_s() is None
    assert logs == []


def test_a_failing_send_never_raises_and_is_logged_once_per_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notify"
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))  # nobody listens there yet
    notifier = SdNotifier.from_env()

    with capture_logs() as first_outage:
        notifier.ready()
        for _ in range(5):
            notifier.watchdog()
    assert [entry["log_level"] for entry in first_outage] == ["warning"]
    assert first_outage[0]["socket"] == str(path)

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(RECEIVE_TIMEOUT_S)
        notifier.status("back")
        assert receive(sock) == "STATUS=back"
    path.unlink()

    with capture_logs() as second_outage:
        notifier.watchdog()
        notifier.watchdog()
    assert len(second_outage) == 1


def test_watchdog_interval_is_half_of_watchdog_usec(
    monkeypatch: pytest.MonkeyPatch, no_watchdog_env: None
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert SdNotifier.from_env().watchdog_interval_s() == 15.0

    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert SdNotifier.from_env().watchdog_interval_s() == 15.0


def test_no_watchdog_interval_when_the_watchdog_is_for_another_process(
    monkeypatch: pytest.MonkeyPatch, no_watchdog_env: None
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    # What a child process sees after inheriting its parent's environment.
    monkeypatch.setenv("WATCHDOG_PID", str(os.getppid()))

    assert SdNotifier.from_env().watchdog_interval_s() is None


@pytest.mark.parametrize("usec", [None, "", "0", "-5", "soon"])
def test_no_watchdog_interval_without_a_usable_watchdog_usec(
    usec: str | None, monkeypatch: pytest.MonkeyPatch, no_watchdog_env: None
) -> None:
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)

    assert SdNotifier.from_env().watchdog_interval_s() is None


async def test_run_watchdog_pings_at_the_interval(notify_socket: socket.socket) -> None:
    interval_s = 0.1
    pings: list[bytes] = []

    async def collect() -> None:
        # Reading as pings arrive keeps the socket's small queue (10 datagrams) from filling.
        while True:
            pings.append(await receive_async(notify_socket))

    collector = asyncio.create_task(collect())
    started = time.monotonic()
    watchdog = asyncio.create_task(run_watchdog(SdNotifier.from_env(), interval_s))
    await asyncio.sleep(1.0)
    await stop(watchdog)
    elapsed = time.monotonic() - started
    await asyncio.sleep(0.1)  # let the collector read the last ping
    await stop(collector)

    assert set(pings) == {b"WATCHDOG=1"}
    assert len(pings) >= 3  # it keeps pinging...
    assert len(pings) <= elapsed / interval_s + 2  # ...and waits the interval between pings


async def test_a_blocked_event_loop_stops_the_pings(notify_socket: socket.socket) -> None:
    watchdog = asyncio.create_task(run_watchdog(SdNotifier.from_env(), 0.05))
    assert await receive_async(notify_socket) == b"WATCHDOG=1"
    await asyncio.sleep(0.2)

    drain(notify_socket)
    # A hung handler: nothing else on the loop runs until this returns. A pinger in a thread
    # would go on sending about ten pings meanwhile, and systemd would never notice the hang.
    time.sleep(0.5)  # noqa: ASYNC251 - blocking the loop is the point of this test
    sent_while_blocked = drain(notify_socket)

    resumed = [await receive_async(notify_socket) for _ in range(2)]
    await stop(watchdog)

    assert sent_while_blocked == []
    assert resumed == [b"WATCHDOG=1", b"WATCHDOG=1"]


async def test_a_hung_store_thread_stops_the_pings_until_it_returns(
    notify_socket: socket.socket, tmp_path: Path
) -> None:
    """The loop is fine but the store thread is stuck: systemd must still see a hang."""
    store = await AsyncStore.open(tmp_path / "state.db")

    def stuck() -> str | None:
        pending = store.oldest_pending()
        return None if pending is None or pending[1] < 0.2 else f"{pending[0]} stuck"

    watchdog = asyncio.create_task(run_watchdog(SdNotifier.from_env(), 0.05, stuck))
    assert await receive_async(notify_socket) == b"WATCHDOG=1"
    release = threading.Event()
    hung = asyncio.create_task(store.call(release.wait))
    await asyncio.sleep(0.4)
    drain(notify_socket)
    await asyncio.sleep(0.3)
    sent_while_hung = drain(notify_socket)
    release.set()
    await hung
    resumed = [await receive_async(notify_socket) for _ in range(2)]
    await stop(watchdog)
    await store.close()

    assert b"WATCHDOG=1" not in sent_while_hung
    assert resumed == [b"WATCHDOG=1", b"WATCHDOG=1"]


async def test_startup_extensions_stop_while_the_pipeline_is_stuck(
    notify_socket: socket.socket,
) -> None:
    state: dict[str, str | None] = {"stuck": "reading /r/a.jsonl has not returned for 61 s"}
    reporter = asyncio.create_task(
        report_startup(SdNotifier.from_env(), lambda: "catching up", 0.05, lambda: state["stuck"])
    )
    first = (await receive_async(notify_socket)).decode()
    state["stuck"] = None
    later = (await receive_async(notify_socket)).decode()
    await stop(reporter)
    assert first == "STATUS=stuck: reading /r/a.jsonl has not returned for 61 s"
    assert later.startswith("EXTEND_TIMEOUT_USEC=")


async def test_run_watchdog_refuses_a_non_positive_interval() -> None:
    with pytest.raises(ValueError, match="positive"):
        await run_watchdog(SdNotifier(None), 0)


def test_extending_startup_says_how_long_and_why(notify_socket: socket.socket) -> None:
    SdNotifier.from_env().extend_startup(20, "catching up:\n3 runs")
    assert receive(notify_socket) == "EXTEND_TIMEOUT_USEC=20000000\nSTATUS=catching up: 3 runs"


async def test_report_startup_extends_the_timeout_until_cancelled(
    notify_socket: socket.socket,
) -> None:
    done = 0

    def progress() -> str:
        nonlocal done
        done += 1
        return f"catching up: {done} batches"

    reporter = asyncio.create_task(report_startup(SdNotifier.from_env(), progress, 0.05))
    first = await receive_async(notify_socket)
    second = await receive_async(notify_socket)
    await stop(reporter)
    await asyncio.sleep(0.15)
    assert first == b"EXTEND_TIMEOUT_USEC=100000\nSTATUS=catching up: 1 batches"
    assert second == b"EXTEND_TIMEOUT_USEC=100000\nSTATUS=catching up: 2 batches"
    assert drain(notify_socket) == []
