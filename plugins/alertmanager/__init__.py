"""The alertmanager plugin (opt-in, `[alertmanager] url`): what tunewatch would push to a
person becomes an alert in Prometheus Alertmanager, which routes, groups and silences it for a
fleet of machines.

The history in the store is the truth: the plugin reads recorded events after its cursor, keeps
the open alerts and the undelivered resolutions in its saved book, re-sends them every
`resend_s`, and retries with backoff while Alertmanager is down. Nothing is lost across a
restart, and an event is applied once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import time
from collections.abc import Callable
from typing import Any, ClassVar

import orjson
import structlog

from tunewatch.daemon import events as ev
from tunewatch.daemon.plugin import CommandRegistry, PluginContext
from tunewatch.daemon.store import Store, StoreFailure
from tunewatch.plugins.alertmanager.book import AlertBook, alert_json
from tunewatch.plugins.alertmanager.client import DeliveryError, Endpoint, post_json
from tunewatch.plugins.alertmanager.config import AlertmanagerConfig
from tunewatch.plugins.alertmanager.delivery import DeliveryState
from tunewatch.plugins.alertmanager.mapping import HISTORY_KINDS, change_for, recording_failed
from tunewatch.plugins.alertmanager.secrets import read_authorization

__all__ = ["AlertmanagerConfig", "AlertmanagerPlugin"]

BOOK_KEY = "book"
DELIVERY_KEY = "delivery"
# Recorded events read per store call while catching up.
BATCH_ROWS = 2000
# After an event on the bus, wait this long for the history recorder to write it...
SETTLE_S = 0.2
# ...and look once more after this long if it was not there yet.
RECHECK_S = 2.0

# Events after which the history may hold something for Alertmanager: a wake-up, nothing more.
_WAKE_ON: tuple[type[ev.Event], ...] = (
    ev.AnomalyDetected,
    ev.AnomalyResolved,
    ev.ResourceAlert,
    ev.ResourceRecovered,
    ev.SourceUnreadable,
    ev.SourceReadable,
    ev.RecordingResumed,
    ev.ValidationFinished,
    ev.StatusChanged,
)


class AlertmanagerPlugin:
    """Sends the alerts tunewatch pushes to Alertmanager, resolved when they recover."""

    name: ClassVar[str] = "alertmanager"
    Config: ClassVar[type[AlertmanagerConfig]] = AlertmanagerConfig

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self.config: AlertmanagerConfig = ctx.config
        self.log = ctx.log if ctx.log is not None else structlog.get_logger(__name__)
        self.book = AlertBook()
        self.delivery = DeliveryState(self.config.retry_s, self.config.retry_max_s)
        self.common_labels = {"host": socket.gethostname(), **self.config.static_labels()}
        self.run_dirs = {run: str(path) for run, path in ctx.run_dirs.items()}
        self.bad_rows = 0
        self._endpoint = Endpoint.parse(self.config.alerts_url) if self.config.url else None
        self._authorization: str | None = None
        self._wakeup = asyncio.Event()
        self._unsubscribe: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._unsaved = False
        self._read_failing = False
        self._outage_shown = False  # the outage told to the daemon (`tunewatch plugins`)
        self._news = False  # the book changed since the last send

    @classmethod
    def doctor_checks(cls, config: AlertmanagerConfig, settings: Any) -> list[Any]:
        from tunewatch.plugins.alertmanager.doctor import checks

        return checks(config)

    @classmethod
    def register_commands(cls, commands: CommandRegistry) -> None:
        from tunewatch.plugins.alertmanager.command import add_arguments, run

        commands.add(
            "alertmanager",
            help="what tunewatch has told Alertmanager: open alerts, queued resolutions, delivery",
            add_arguments=add_arguments,
            run=run,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.config.active:
            return  # opt-in: without a url nothing runs
        self._authorization = read_authorization(self.config)
        await self._load()
        bus = self.ctx.bus
        self._unsubscribe = [
            bus.subscribe(t, self._on_recorded, name=f"alertmanager:{t.__name__}") for t in _WAKE_ON
        ]
        self._unsubscribe.append(
            bus.subscribe(ev.RecordingFailed, self._on_recording_failed, name="alertmanager:rec")
        )
        self._task = self.ctx.spawn(self._run(), name="deliver")
        self.log.info(
            "sending alerts to Alertmanager", url=self.config.alerts_url, open=self.book.firing()
        )

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._unsaved:
            await self._save()

    async def _load(self) -> None:
        store = self.ctx.store
        delivery = await store.call(store.store.plugin_get, self.name, DELIVERY_KEY)
        if delivery is not None:
            self.delivery.resume(delivery)
        saved = await store.call(store.store.plugin_get, self.name, BOOK_KEY)
        if saved is not None:
            self.book = AlertBook.from_json(saved)
            return
        # First start: what happened before the plugin was on is not sent (a week-old divergence
        # of a finished run is not an alert); everything recorded from now on is.
        self.book = AlertBook(cursor=await store.call(store.store.last_seq))
        await self._save()

    # -- events ---------------------------------------------------------------------------------

    def _on_recorded(self, event: ev.Event) -> None:
        self._wakeup.set()

    def _on_recording_failed(self, event: ev.RecordingFailed) -> None:
        # The store refuses writes: this one never reaches the history, so it is applied here.
        change = recording_failed(event)
        if self.book.apply(change, now=time.time(), one_off_s=self.config.one_off_s):
            self._unsaved = self._news = True
            self._wakeup.set()

    # -- the loop -------------------------------------------------------------------------------

    async def _run(self) -> None:
        next_send = 0.0  # monotonic; 0: as soon as there is something to send
        while True:
            await self.reconcile()
            now = time.monotonic()
            # News goes out at once, unless Alertmanager is failing: then the backoff holds.
            due = now >= next_send or (self._news and self.delivery.ok)
            if self.book.alerts and due:
                self._news = False
                await self.send()
                next_send = time.monotonic() + self.delivery.next_delay(self.config.resend_s)
            elif not self.book.alerts:
                next_send = now + self.config.resend_s
            await self._wait(next_send - time.monotonic())

    async def _wait(self, timeout_s: float) -> None:
        """Until the next send is due or an event may have been recorded."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(timeout_s, 0.0)):
                await self._wakeup.wait()
        if not self._wakeup.is_set():
            return
        self._wakeup.clear()
        await asyncio.sleep(SETTLE_S)
        if not await self.reconcile():
            # The recorder writes in its own task: the event may not be in the history yet.
            await asyncio.sleep(RECHECK_S)

    async def reconcile(self) -> bool:
        """Apply what was recorded after the cursor; whether the alerts changed."""
        store = self.ctx.store
        changed = False
        while True:
            try:
                rows = await store.call(
                    recorded_after, store.store, self.book.cursor, HISTORY_KINDS, BATCH_ROWS
                )
            except (StoreFailure, sqlite3.Error) as exc:
                # The store failing is an alert of its own (recording failed): read again at
                # the next turn, and say so once.
                if not self._read_failing:
                    self.log.warning("cannot read the history; trying again", error=str(exc))
                self._read_failing = True
                break
            self._read_failing = False
            for seq, kind, data in rows:
                changed |= self._apply(seq, kind, data)
                self.book.cursor = seq
                self._unsaved = True
            if len(rows) < BATCH_ROWS:
                break
        if self.book.prune(time.time()):
            changed = self._unsaved = True
        if self._unsaved:
            await self._save()
        self._news |= changed
        return changed

    def _apply(self, seq: int, kind: str, data: dict[str, Any]) -> bool:
        try:
            change = change_for(kind, data, self.run_dirs)
        except Exception as exc:  # one odd row (an older version's, a third party's) is skipped
            self.bad_rows += 1
            if self.bad_rows == 1:
                self.log.warning(
                    "recorded event not understood; skipped (further ones counted silently)",
                    seq=seq,
                    kind=kind,
                    error=f"{type(exc).__name__}: {exc}",
                )
            return False
        if change is None:
            return False
        return self.book.apply(change, now=time.time(), one_off_s=self.config.one_off_s)

    async def send(self) -> bool:
        """POST every alert of the book; whether Alertmanager took them."""
        assert self._endpoint is not None
        now = time.time()
        sent = self.book.outbox()
        body = orjson.dumps(
            [
                alert_json(
                    alert,
                    now=now,
                    resend_s=self.config.resend_s,
                    common_labels=self.common_labels,
                    generator_url=self.config.generator_url,
                )
                for alert in sent.values()
            ]
        )
        try:
            await post_json(
                self._endpoint,
                body,
                authorization=self._authorization,
                timeout_s=self.config.timeout_s,
            )
        except DeliveryError as exc:
            if self.delivery.failed(str(exc), now):
                self.log.warning(
                    "Alertmanager unreachable; alerts are kept and retried with backoff",
                    url=self.config.alerts_url,
                    error=str(exc),
                    queued=len(sent),
                )
                await self._save_delivery()
            if not self._outage_shown and self.ctx.on_failure is not None:
                # `tunewatch plugins` and `status` show it until a send gets through (an outage
                # resumed from before a restart included).
                self._outage_shown = True
                self.ctx.on_failure(
                    self.name,
                    f"Alertmanager unreachable at {self.config.alerts_url}: {exc}; "
                    f"{len(sent)} alert(s) kept and retried",
                )
            return False
        if self._outage_shown:
            self._outage_shown = False
            if self.ctx.on_recovered is not None:
                self.ctx.on_recovered(self.name)
        was_down = self.delivery.down_for(now)
        first = self.delivery.last_ok is None
        self.delivery.succeeded(now)
        if first and was_down is None:
            await self._save_delivery()
        if was_down is not None:
            self.log.info(
                "Alertmanager reachable again; queued alerts delivered",
                url=self.config.alerts_url,
                down_s=round(was_down, 1),
                delivered=len(sent),
            )
            await self._save_delivery()
        if self.book.delivered(sent):
            await self._save()
        return True

    async def _save(self) -> None:
        store = self.ctx.store
        try:
            await store.call(store.store.plugin_put, self.name, BOOK_KEY, self.book.to_json())
        except StoreFailure:
            self._unsaved = True  # kept in memory; saved once the store works again
            return
        self._unsaved = False

    async def _save_delivery(self) -> None:
        store = self.ctx.store
        with contextlib.suppress(StoreFailure):
            await store.call(
                store.store.plugin_put, self.name, DELIVERY_KEY, self.delivery.to_json()
            )


def recorded_after(
    store: Store, cursor: int, kinds: tuple[str, ...], limit: int
) -> list[tuple[int, str, dict[str, Any]]]:
    """(seq, kind, data) of the recorded events of `kinds` after `cursor`, oldest first (on the
    store's thread)."""
    return [(e.seq, e.row.kind, e.row.data) for e in store.events_after(cursor, kinds, limit)]
