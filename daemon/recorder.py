"""Records what plugins publish (anomalies, bests, snapshots, validations...) in the history.

Run events are recorded by the ingest transaction itself; everything else the history keeps
arrives here from the bus. Events are recorded in batches, one transaction per batch, so a
burst (ten thousand bests found in what start-up read) costs a few commits and never fills a
queue. While the store refuses writes, events wait in memory and are recorded once it works.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from tunewatch.daemon import events as ev
from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.history import RECORDED_TYPES
from tunewatch.daemon.store import AsyncStore, StoreFailure

log = structlog.get_logger(__name__)

# Events waiting while the store fails, at most; past it the oldest are dropped (and counted).
MAX_WAITING = 100_000
RETRY_MAX_S = 60.0


class HistoryRecorder:
    """Subscribes to the plugin events the history keeps and records them in batches."""

    def __init__(self, store: AsyncStore, bus: EventBus) -> None:
        self.store = store
        self._waiting: list[ev.Event] = []
        self._writer: asyncio.Task[None] | None = None
        self.dropped = 0
        # Run events (points, statuses...) are recorded by the ingest transaction itself.
        self._unsubscribe = [
            bus.subscribe(event_type, self._on_event, name=f"history:{event_type.__name__}")
            for event_type in RECORDED_TYPES
            if not issubclass(event_type, ev.RunEvent)
        ]

    def _on_event(self, event: ev.Event) -> None:
        self._waiting.append(event)
        if len(self._waiting) > MAX_WAITING:
            del self._waiting[0]
            self.dropped += 1
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="history")

    async def _write(self) -> None:
        attempts = 0
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await self.store.call(self.store.store.record_many, batch)
            except StoreFailure as exc:
                self._waiting[:0] = batch  # first in line once the store works again
                attempts += 1
                if attempts == 1:
                    log.warning("history not recorded yet; retrying", reason=str(exc))
                await asyncio.sleep(min(2.0 ** (attempts - 1), RETRY_MAX_S))
            else:
                attempts = 0

    async def close(self) -> None:
        """Record what is waiting (unless the store still fails), then stop."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        if self._writer is not None and not self._writer.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._writer), 5.0)
            except TimeoutError:
                self._writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._writer
        if self._waiting or self.dropped:
            log.warning("history events lost", waiting=len(self._waiting), dropped=self.dropped)
