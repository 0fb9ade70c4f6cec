"""Remote alert channels (ntfy, Slack, email, a webhook...) through Apprise URLs.

For GPU servers with no desktop. Each URL is its own channel with its own queue and task, so a
dead or slow one never delays the others or the bus. Apprise is imported only when URLs are
configured (it loads many plugin modules) and runs in a thread, since it blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from typing import Any
from urllib.parse import urlsplit

from tunewatch.plugins.alert_messages import Alert

QUEUE_SIZE = 100


def _load_apprise() -> Any:
    with warnings.catch_warnings():
        # Apprise's e-mail plugin imports `imghdr`, deprecated since Python 3.11; not ours to fix.
        warnings.filterwarnings(
            "ignore", message="'imghdr' is deprecated", category=DeprecationWarning
        )
        import apprise

        # Building one plugin loads them all, so the same filter must cover it.
        apprise.Apprise.instantiate("json://localhost/", suppress_exceptions=True)
    return apprise


def _scheme(url: str) -> str:
    return urlsplit(url).scheme or "?"


class _Channel:
    """One Apprise URL: its queue, its task, and whether it is failing right now."""

    def __init__(self, service: Any, name: str) -> None:
        self.service = service
        self.name = name  # the URL with its secrets masked, safe to log
        self.queue: asyncio.Queue[Alert] = asyncio.Queue(QUEUE_SIZE)
        self.task: asyncio.Task[None] | None = None
        self.failing = False
        self.sent = 0
        self.failed = 0


class RemoteChannels:
    """Fans alerts out to every configured URL; logs the first failure of each, then its return."""

    def __init__(self, urls: tuple[str, ...], log: Any, *, timeout_s: float = 10.0) -> None:
        self.urls = urls
        self.log = log
        self.timeout_s = timeout_s
        self.channels: list[_Channel] = []
        self._apprise: Any = None

    def start(self) -> None:
        apprise = self._apprise = _load_apprise()
        # Memory-only storage: the daemon keeps no Apprise cache under the user's home.
        asset = apprise.AppriseAsset(storage_mode=apprise.PersistentStoreMode.MEMORY)
        for index, url in enumerate(self.urls, 1):
            service = apprise.Apprise.instantiate(url, asset=asset, suppress_exceptions=True)
            if service is None:
                self.log.error(
                    "remote_urls: not a usable Apprise URL; this channel is skipped",
                    entry=index,
                    scheme=_scheme(url),
                )
                continue
            channel = _Channel(service, str(service.url(privacy=True)))
            channel.task = asyncio.create_task(self._run(channel), name=f"notify-remote-{index}")
            self.channels.append(channel)

    def submit(self, alert: Alert) -> None:
        for channel in self.channels:
            if channel.queue.full():
                channel.queue.get_nowait()  # a channel that is down must not hold memory
                channel.queue.task_done()
            channel.queue.put_nowait(alert)

    async def close(self, grace_s: float = 2.0) -> None:
        """Deliver what is queued (up to `grace_s` in all), then stop every channel."""
        if self.channels:
            joins = [asyncio.create_task(c.queue.join()) for c in self.channels if not c.failing]
            if joins:
                _done, pending = await asyncio.wait(joins, timeout=grace_s)
                for join in pending:
                    join.cancel()
        for channel in self.channels:
            if channel.task is not None:
                channel.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await channel.task

    async def _run(self, channel: _Channel) -> None:
        while True:
            alert = await channel.queue.get()
            try:
                reason = await self._send(channel, alert)
            finally:
                channel.queue.task_done()
            self._record(channel, reason)

    async def _send(self, channel: _Channel, alert: Alert) -> str | None:
        notify = channel.service.notify
        kind = self._notify_type(alert)
        try:
            ok = await asyncio.wait_for(
                asyncio.to_thread(notify, body=alert.body, title=alert.title, notify_type=kind),
                self.timeout_s,
            )
        except TimeoutError:
            return f"no answer within {self.timeout_s:g} s"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None if ok else "the service refused or could not be reached"

    def _notify_type(self, alert: Alert) -> Any:
        types = self._apprise.NotifyType
        if alert.critical:
            return types.FAILURE
        if alert.kind in ("best_model", "recovered"):
            return types.SUCCESS
        return types.INFO

    def _record(self, channel: _Channel, reason: str | None) -> None:
        if reason is None:
            channel.sent += 1
            if channel.failing:
                self.log.info("remote channel works again", channel=channel.name)
            channel.failing = False
            return
        channel.failed += 1
        if channel.failing:
            self.log.debug("remote channel still failing", channel=channel.name, reason=reason)
            return
        channel.failing = True
        self.log.warning(
            "remote channel failed; further failures are not logged until it works again",
            channel=channel.name,
            reason=reason,
        )
