"""Tells systemd how the daemon is doing (sd_notify), with no dependency on libsystemd.

Outside systemd (no NOTIFY_SOCKET) every notification is a no-op, so the daemon runs the same.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger(__name__)

# A send that cannot go through at once gives up after this long: a stuck systemd must not
# stall the event loop, and a lost watchdog ping is better than a frozen daemon.
_SEND_TIMEOUT_S = 0.1


class SdNotifier:
    """Sends state changes to systemd's notify socket; silent when there is none."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        """`address` is NOTIFY_SOCKET's value: a path, or '@name' for an abstract socket."""
        self._address = _socket_address(address)
        self._name = address or ""  # as systemd wrote it, for log lines
        self._watchdog_usec = watchdog_usec
        self._failure_logged = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SdNotifier:
        """Builds the notifier systemd asked for through the environment (os.environ by default)."""
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"), watchdog_usec=_watchdog_usec_for_us(env))

    @property
    def enabled(self) -> bool:
        """True when notifications go to a socket, i.e. the daemon runs under systemd."""
        return self._address is not None

    def ready(self) -> None:
        """Startup (or a reload) is complete: `systemctl start` and `reload` return now."""
        self._send("READY=1")

    def extend_startup(self, seconds: float, status: str) -> None:
        """Startup goes on: systemd waits `seconds` more before TimeoutStartSec fails it.

        A catch-up on months of logs can outlast the default 90 s start timeout; this keeps a
        working daemon from being killed for it (systemd >= 236; older ones ignore the field).
        """
        usec = max(int(seconds * 1_000_000), 1)
        self._send(f"EXTEND_TIMEOUT_USEC={usec}\nSTATUS=" + " ".join(status.splitlines()))

    def stopping(self) -> None:
        """Shutdown has begun, so systemd does not mistake the exit for a crash."""
        self._send("STOPPING=1")

    def reloading(self) -> None:
        """A config reload has begun; send `ready()` once it is done.

        MONOTONIC_USEC is what systemd >= 253 requires with Type=notify-reload to tell this reload
        apart from an earlier one; older versions ignore the field.
        """
        self._send(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def status(self, text: str) -> None:
        """Shows `text` as the "Status:" line of `systemctl --user status tunewatch`."""
        # The protocol is one assignment per line, so a newline would end the status early.
        self._send("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> None:
        """Tells systemd the daemon is alive; see `run_watchdog`."""
        self._send("WATCHDOG=1")

    def watchdog_interval_s(self) -> float | None:
        """How often to ping (half of WatchdogSec), or None when systemd wants no pings from us."""
        if self._watchdog_usec is None:
            return None
        # Pinging at half the timeout leaves a whole half for a slow tick to still arrive in time.
        return self._watchdog_usec / 2 / 1_000_000

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(_SEND_TIMEOUT_S)
                sock.sendto(message.encode("utf-8", errors="replace"), self._address)
        except OSError as exc:
            self._log_failure_once(message, exc)
            return
        self._failure_logged = False

    def _log_failure_once(self, message: str, exc: OSError) -> None:
        # The watchdog pings every few seconds: one line per outage, not one per ping.
        if self._failure_logged:
            return
        self._failure_logged = True
        log.warning(
            "sd_notify failed; further failures are not logged until a send succeeds",
            socket=self._name,
            message=message.split("\n", 1)[0],
            error=repr(exc),
        )


async def run_watchdog(
    notifier: SdNotifier,
    interval_s: float,
    stuck: Callable[[], str | None] = lambda: None,
) -> None:
    """Pings systemd's watchdog every `interval_s` seconds until cancelled, while not `stuck()`.

    This runs as a task on the daemon's event loop, never in a thread: if the loop hangs, the
    pings stop. `stuck()` names work that has not come back for too long (a store call or a
    file read hung in its thread): the pings stop then too, so systemd restarts the daemon
    after WatchdogSec rather than leave it running blind.
    """
    if interval_s <= 0:
        raise ValueError(f"watchdog interval must be positive, got {interval_s!r}")
    silent = False
    while True:
        reason = stuck()
        if reason is None:
            if silent:
                log.info("pipeline moving again; watchdog pings resume")
            silent = False
            notifier.watchdog()
        elif not silent:
            silent = True
            log.error("pipeline stuck; no watchdog pings: systemd will restart it", why=reason)
            notifier.status(f"stuck: {reason}")
        await asyncio.sleep(interval_s)


async def report_startup(
    notifier: SdNotifier,
    progress: Callable[[], str],
    interval_s: float,
    stuck: Callable[[], str | None] = lambda: None,
) -> None:
    """Until cancelled, extend systemd's start timeout every `interval_s` and show `progress()`.

    Each extension covers two intervals, so one late tick does not let the timeout expire.
    While `stuck()` names work that has not come back, no extension is sent: the start then
    times out and systemd restarts the daemon, as the watchdog would once it runs.
    """
    while True:
        reason = stuck()
        if reason is None:
            notifier.extend_startup(2 * interval_s, progress())
        else:
            notifier.status(f"stuck: {reason}")
        await asyncio.sleep(interval_s)


def _socket_address(value: str | None) -> bytes | None:
    """NOTIFY_SOCKET as an AF_UNIX address, or None when there is nowhere to send."""
    if not value:
        return None
    if value.startswith("@"):
        # Abstract namespace: systemd writes '@', the kernel wants a leading NUL byte.
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return os.fsencode(value)
    # Other forms (systemd >= 254's "vsock:" for VMs) are for guests we do not run in.
    log.warning("NOTIFY_SOCKET is neither a path nor '@name'; not notifying", socket=value)
    return None


def _watchdog_usec_for_us(env: Mapping[str, str]) -> int | None:
    """WATCHDOG_USEC when it is meant for this process (WATCHDOG_PID unset or ours)."""
    usec = _positive_int(env.get("WATCHDOG_USEC"))
    if usec is None:
        return None
    pid_text = env.get("WATCHDOG_PID")
    # A child that inherited the variables must not ping on its parent's behalf.
    if pid_text is not None and _positive_int(pid_text) != os.getpid():
        return None
    return usec


def _positive_int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value > 0 else None
