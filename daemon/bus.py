"""The in-process event bus: publishers never wait, each subscriber runs in its own task.

Every subscription owns a bounded queue and a task that feeds its handler in order. A slow
handler only fills its own queue; when that queue is full the subscription's overflow policy
decides what is lost, and every loss is counted. A handler that raises is logged with the event
and the bus carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, TypeVar

import structlog

from tunewatch.daemon.events import Event

E = TypeVar("E", bound=Event)
Handler = Callable[[E], Awaitable[None] | None]
OverflowPolicy = Literal["drop_oldest", "drop_newest"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SubscriptionStats:
    name: str
    event_type: str
    queued: int
    delivered: int
    dropped: int
    failed: int


class _Subscription:
    """One handler with its own queue and worker task."""

    def __init__(
        self,
        name: str,
        event_type: type[Event],
        handler: Handler[Event],
        maxsize: int,
        overflow: OverflowPolicy,
        on_drop: Callable[[], None] | None,
        weigh: Callable[[Event], int] | None = None,
    ) -> None:
        self.name = name
        self.event_type = event_type
        self.handler = handler
        self.maxsize = maxsize
        self.overflow = overflow
        self.on_drop = on_drop
        self.queue: deque[Event] = deque()
        self.weigh = weigh
        self.weight = 0  # what the queue holds, in `weigh` units (events when None)
        self.wakeup = asyncio.Event()
        self.delivered = 0
        self.dropped = 0
        self.failed = 0
        self.closing = False
        self.handling = False  # inside the handler now
        self.task: asyncio.Task[None] | None = None

    def offer(self, event: Event) -> None:
        weight = 1 if self.weigh is None else self.weigh(event)
        if self.queue and self.weight + weight > self.maxsize:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop()
            if self.overflow == "drop_newest":
                return
            self.weight -= self._weight_of(self.queue.popleft())
        self.queue.append(event)
        self.weight += weight
        self.wakeup.set()

    def _weight_of(self, event: Event) -> int:
        return 1 if self.weigh is None else self.weigh(event)

    async def run(self) -> None:
        while True:
            if not self.queue:
                if self.closing:
                    return
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            event = self.queue.popleft()
            self.weight -= self._weight_of(event)
            self.handling = True
            try:
                result = self.handler(event)
                if result is not None:
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:
                self.failed += 1
                log.exception(
                    "subscriber failed", subscriber=self.name, failed_event=repr(event)[:500]
                )
            else:
                self.delivered += 1
            finally:
                self.handling = False

    def stats(self) -> SubscriptionStats:
        return SubscriptionStats(
            name=self.name,
            event_type=self.event_type.__name__,
            queued=len(self.queue),
            delivered=self.delivered,
            dropped=self.dropped,
            failed=self.failed,
        )


class EventBus:
    """Typed publish/subscribe inside one event loop.

    Subscribing to a base class (e.g. `Event`) receives every subclass too.
    """

    def __init__(self, *, default_maxsize: int = 10_000) -> None:
        self._default_maxsize = default_maxsize
        self._subscriptions: list[_Subscription] = []
        # Dispatch table from concrete event type to its subscriptions, rebuilt on (un)subscribe.
        self._routes: dict[type[Event], list[_Subscription]] = {}
        self._closed = False
        self._held: list[Event] | None = None  # events published while held, in order

    def subscribe(
        self,
        event_type: type[E],
        handler: Handler[E],
        *,
        name: str | None = None,
        maxsize: int | None = None,
        overflow: OverflowPolicy = "drop_oldest",
        on_drop: Callable[[], None] | None = None,
        weigh: Callable[[E], int] | None = None,
    ) -> Callable[[], None]:
        """Call `handler` for every published `event_type`; returns a function that unsubscribes.

        `on_drop` is called (in the publisher's turn, so it must be quick) each time the full
        queue loses an event: a subscriber that must see everything re-reads the store then.
        `weigh` says what an event costs the queue (default 1), so `maxsize` can bound what
        matters, e.g. points rather than events. Must be called from inside the running loop.
        """
        if self._closed:
            raise RuntimeError("the event bus is closed")
        sub = _Subscription(
            name or str(getattr(handler, "__qualname__", repr(handler))),
            event_type,
            handler,  # type: ignore[arg-type]
            maxsize or self._default_maxsize,
            overflow,
            on_drop,
            weigh,  # type: ignore[arg-type]
        )
        sub.task = asyncio.get_running_loop().create_task(sub.run(), name=f"bus:{sub.name}")
        self._subscriptions.append(sub)
        self._routes.clear()

        def unsubscribe() -> None:
            if sub in self._subscriptions:
                self._subscriptions.remove(sub)
                self._routes.clear()
                if sub.task is not None:
                    sub.task.cancel()

        return unsubscribe

    def publish(self, event: Event) -> None:
        """Hand `event` to every matching subscriber; never blocks, never raises."""
        if self._held is not None:
            self._held.append(event)
            return
        for sub in self._route(type(event)):
            sub.offer(event)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Keep what is published inside the block, and deliver it on leaving it.

        While plugins start one by one, an event published by an early one reaches those
        that subscribe later too.
        """
        self._held = []
        try:
            yield
        finally:
            events, self._held = self._held, None
            self.publish_many(events)

    def publish_many(self, events: Iterable[Event]) -> None:
        if self._held is not None:
            self._held.extend(events)
            return
        last_type: type[Event] | None = None
        subs: list[_Subscription] = []
        for event in events:
            if type(event) is not last_type:  # batches are mostly of one type: route once
                last_type = type(event)
                subs = self._route(last_type)
            for sub in subs:
                sub.offer(event)

    def _route(self, event_type: type[Event]) -> list[_Subscription]:
        subs = self._routes.get(event_type)
        if subs is None:
            subs = [s for s in self._subscriptions if issubclass(event_type, s.event_type)]
            self._routes[event_type] = subs
        return subs

    def stats(self) -> list[SubscriptionStats]:
        return [sub.stats() for sub in self._subscriptions]

    async def drain(self, timeout_s: float = 5.0) -> bool:
        """Wait until every subscriber has handled everything queued (up to `timeout_s`);
        True when they all did. The bus stays open."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while any(sub.queue or sub.handling for sub in self._subscriptions):
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def close(self, timeout_s: float = 5.0) -> None:
        """Let every subscriber drain its queue, up to `timeout_s`, then cancel what is left."""
        self._closed = True
        for sub in self._subscriptions:
            sub.closing = True
            sub.wakeup.set()
        tasks = [sub.task for sub in self._subscriptions if sub.task is not None]
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sub in self._subscriptions:
            if sub.queue:
                log.warning("subscriber did not drain", subscriber=sub.name, left=len(sub.queue))
