"""Desktop notifications over the session bus, for a daemon that may outlive the desktop session.

The bus and the notification server are probed before use. When they are missing (a headless
server, a session that ended) one warning is logged and the probe is retried with exponential
backoff; alerts meanwhile go to the log and the remote channels only. A send never raises and
never waits longer than its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from desktop_notifier import DesktopNotifier, Urgency

from tunewatch.plugins.alert_messages import Alert
from tunewatch.plugins.notify.markup import escape_markup

SERVER = "org.freedesktop.Notifications"
SERVER_PATH = "/org/freedesktop/Notifications"
QUEUE_SIZE = 100


class DesktopUnavailable(Exception):
    """No session bus, or no notification server on it; the message says which."""


async def probe_server(timeout_s: float) -> frozenset[str]:
    """The notification server's capabilities; raises DesktopUnavailable saying what is missing."""
    try:
        bus = MessageBus()  # resolves the session bus address from the environment
    except Exception as exc:
        raise DesktopUnavailable(f"no session bus address: {exc}") from None
    try:
        try:
            await asyncio.wait_for(bus.connect(), timeout_s)
        except Exception as exc:
            raise DesktopUnavailable(f"cannot connect to the session bus: {_reason(exc)}") from None
        message = Message(
            destination=SERVER, path=SERVER_PATH, interface=SERVER, member="GetCapabilities"
        )
        try:
            reply = await asyncio.wait_for(bus.call(message), timeout_s)
        except Exception as exc:
            raise DesktopUnavailable(f"the session bus did not answer: {_reason(exc)}") from None
        if reply.message_type == MessageType.ERROR:
            raise DesktopUnavailable(
                f"no notification server on the session bus ({reply.error_name})"
            )
        return frozenset(str(c) for c in reply.body[0])
    finally:
        await _disconnect(bus)


async def _disconnect(bus: MessageBus) -> None:
    if not bus.connected:
        return
    bus.disconnect()
    # disconnect() only starts the shutdown; waiting closes the socket before the loop ends.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(bus.wait_for_disconnect(), 2.0)  # type: ignore[no-untyped-call]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class DesktopChannel:
    """Delivers alerts to the desktop in order, from one task; probes and backs off when absent."""

    def __init__(
        self,
        log: Any,
        *,
        app_name: str = "tunewatch",
        timeout_s: float = 10.0,
        retry_s: float = 30.0,
        retry_max_s: float = 900.0,
        opener: Callable[[str], None] | None = None,
    ) -> None:
        self.log = log
        self.app_name = app_name
        self.timeout_s = timeout_s
        self.retry_s = max(retry_s, 0.01)
        self.retry_max_s = max(retry_max_s, self.retry_s)
        self.opener = opener
        self.available: bool | None = None  # None until the first probe has answered
        self.sent = 0
        self.markup = False
        self._notifier: DesktopNotifier | None = None
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(QUEUE_SIZE)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notify-desktop")

    def submit(self, alert: Alert) -> None:
        """Queue `alert` for the desktop; dropped while the desktop is known to be absent."""
        if self.available is False:
            return
        if self._queue.full():
            self._queue.get_nowait()  # the newest alert matters more than the oldest
            self._queue.task_done()
        self._queue.put_nowait(alert)

    async def close(self, grace_s: float = 2.0) -> None:
        """Deliver what is queued (up to `grace_s`), then stop and leave the bus."""
        if self._task is None:
            return
        if self.available:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), grace_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        await self._drop_notifier()

    # -- the delivery loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.retry_s
        warned = False
        while True:
            reason = await self._connect()
            if reason is None:
                if warned:
                    self.log.info("desktop notifications are available again")
                warned = False
                sent_before = self.sent
                reason = await self._deliver_until_failure()
                if self.sent > sent_before:
                    delay = self.retry_s
            self._set_unavailable()
            if warned:
                self.log.debug("desktop notifications still unavailable", reason=reason)
            else:
                self.log.warning(
                    "desktop notifications unavailable: alerts go to the log (and to remote "
                    "channels, if configured) until the notification server answers again",
                    reason=reason,
                    retry_in_s=delay,
                    retry_max_s=self.retry_max_s,
                )
                warned = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max_s)

    async def _connect(self) -> str | None:
        """Probe the server and open the notifier's connection; the reason when that fails."""
        try:
            capabilities = await probe_server(self.timeout_s)
            notifier = DesktopNotifier(app_name=self.app_name, app_icon=None)
            self._notifier = notifier
            # Opens the notifier's own connection now, so failures surface here, not on an alert.
            await asyncio.wait_for(notifier.get_capabilities(), self.timeout_s)
        except DesktopUnavailable as exc:
            return str(exc)
        except Exception as exc:
            await self._drop_notifier()
            return _reason(exc)
        self.markup = "body-markup" in capabilities
        self.available = True
        return None

    async def _deliver_until_failure(self) -> str:
        while True:
            alert = await self._queue.get()
            try:
                reason = await self._send(alert)
            finally:
                self._queue.task_done()
            if reason is not None:
                await self._drop_notifier()
                return reason

    async def _send(self, alert: Alert) -> str | None:
        assert self._notifier is not None
        dispatched = asyncio.Event()
        body = escape_markup(alert.body) if self.markup else alert.body
        try:
            await asyncio.wait_for(
                self._notifier.send(
                    title=alert.title,
                    message=body,
                    urgency=Urgency.Critical if alert.critical else Urgency.Normal,
                    on_dispatched=dispatched.set,
                    on_clicked=self._click_handler(alert),
                ),
                self.timeout_s,
            )
        except Exception as exc:
            return _reason(exc)
        # desktop-notifier logs and swallows send errors; only `on_dispatched` proves delivery.
        if not dispatched.is_set():
            return "the notification server did not accept the notification"
        self.sent += 1
        return None

    def _click_handler(self, alert: Alert) -> Callable[[], None] | None:
        opener, target = self.opener, alert.target
        if opener is None or target is None:
            return None
        return lambda: opener(target)

    def _set_unavailable(self) -> None:
        self.available = False
        while not self._queue.empty():  # those alerts are in the log already
            self._queue.get_nowait()
            self._queue.task_done()

    async def _drop_notifier(self) -> None:
        notifier, self._notifier = self._notifier, None
        if notifier is None:
            return
        # desktop-notifier has no public close: its backend keeps the dbus-fast connection in
        # `bus`. Leaving it open would leak the socket on every reconnect and at shutdown.
        bus = getattr(getattr(notifier, "_backend", None), "bus", None)
        if isinstance(bus, MessageBus):
            await _disconnect(bus)
