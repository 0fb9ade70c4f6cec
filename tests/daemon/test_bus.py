"""The event bus: isolation between subscribers, order, overflow accounting, draining."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.events import Event, MetricsLogged, SourceError, StatusChanged


@dataclass(frozen=True, slots=True)
class Ping(Event):
    n: int


def metric(step: int) -> MetricsLogged:
    return MetricsLogged(run="r", step=step, metrics={"loss": 1.0}, source="log.jsonl")


async def settle(bus: EventBus) -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_subscriber_receives_events_of_its_type_in_order() -> None:
    bus = EventBus()
    seen: list[int] = []
    bus.subscribe(MetricsLogged, lambda e: seen.append(e.step))
    bus.publish_many(metric(i) for i in range(100))
    bus.publish(StatusChanged(run="r", status="training", source="s"))
    await bus.close()
    assert seen == list(range(100))


async def test_subscribing_to_the_base_class_receives_everything() -> None:
    bus = EventBus()
    seen: list[str] = []
    bus.subscribe(Event, lambda e: seen.append(type(e).__name__))
    bus.publish(metric(1))
    bus.publish(SourceError(run="r", source="s", kind="invalid_json", message="m", location="f:1"))
    await bus.close()
    assert seen == ["MetricsLogged", "SourceError"]


async def test_a_failing_handler_is_isolated_and_counted() -> None:
    bus = EventBus()
    good: list[int] = []

    def bad(event: MetricsLogged) -> None:
        raise RuntimeError("boom")

    bus.subscribe(MetricsLogged, bad, name="bad")
    bus.subscribe(MetricsLogged, lambda e: good.append(e.step), name="good")
    bus.publish_many(metric(i) for i in range(3))
    await bus.close()
    assert good == [0, 1, 2]
    stats = {s.name: s for s in bus.stats()}
    assert stats["bad"].failed == 3
    assert stats["good"].delivered == 3


async def test_a_slow_subscriber_never_blocks_the_publisher_or_others() -> None:
    bus = EventBus()
    release = asyncio.Event()
    fast: list[int] = []

    async def slow(event: MetricsLogged) -> None:
        await release.wait()

    bus.subscribe(MetricsLogged, slow, name="slow")
    bus.subscribe(MetricsLogged, lambda e: fast.append(e.step), name="fast")
    for i in range(1000):
        bus.publish(metric(i))  # synchronous: returns at once even though `slow` is stuck
    await settle(bus)
    assert len(fast) == 1000
    release.set()
    await bus.close()


async def test_overflow_drops_oldest_by_default_and_counts_it() -> None:
    bus = EventBus()
    release = asyncio.Event()
    seen: list[int] = []

    async def slow(event: MetricsLogged) -> None:
        await release.wait()
        seen.append(event.step)

    bus.subscribe(MetricsLogged, slow, name="slow", maxsize=5)
    await settle(bus)
    bus.publish(metric(0))
    await settle(bus)  # the worker holds event 0 while waiting
    bus.publish_many(metric(i) for i in range(1, 11))
    release.set()
    await bus.close()
    assert seen == [0, 6, 7, 8, 9, 10]
    assert bus.stats()[0].dropped == 5


async def test_overflow_drop_newest_keeps_the_first_events() -> None:
    bus = EventBus()
    seen: list[int] = []
    bus.subscribe(MetricsLogged, lambda e: seen.append(e.step), maxsize=3, overflow="drop_newest")
    bus.publish_many(metric(i) for i in range(10))
    await bus.close()
    assert seen == [0, 1, 2]
    assert bus.stats()[0].dropped == 7


async def test_each_drop_is_reported_to_the_subscriber_that_lost_it() -> None:
    bus = EventBus()
    drops: list[str] = []
    bus.subscribe(
        MetricsLogged,
        lambda e: None,
        name="small",
        maxsize=3,
        overflow="drop_newest",
        on_drop=lambda: drops.append("small"),
    )
    bus.subscribe(
        MetricsLogged, lambda e: None, name="large", on_drop=lambda: drops.append("large")
    )
    bus.publish_many(metric(i) for i in range(10))
    await bus.close()
    assert drops == ["small"] * 7


async def test_unsubscribe_stops_delivery() -> None:
    bus = EventBus()
    seen: list[int] = []
    unsubscribe = bus.subscribe(MetricsLogged, lambda e: seen.append(e.step))
    bus.publish(metric(1))
    await settle(bus)
    unsubscribe()
    bus.publish(metric(2))
    await bus.close()
    assert seen == [1]


async def test_close_drains_queues_within_the_timeout() -> None:
    bus = EventBus()
    seen: list[int] = []

    async def handler(event: MetricsLogged) -> None:
        await asyncio.sleep(0.001)
        seen.append(event.step)

    bus.subscribe(MetricsLogged, handler)
    bus.publish_many(metric(i) for i in range(20))
    await bus.close(timeout_s=5)
    assert seen == list(range(20))


async def test_close_gives_up_on_a_stuck_subscriber_after_the_timeout() -> None:
    bus = EventBus()

    async def stuck(event: MetricsLogged) -> None:
        await asyncio.sleep(3600)

    bus.subscribe(MetricsLogged, stuck)
    bus.publish(metric(1))
    await asyncio.wait_for(bus.close(timeout_s=0.1), timeout=5)


async def test_subscribe_after_close_is_refused() -> None:
    bus = EventBus()
    await bus.close()
    with pytest.raises(RuntimeError):
        bus.subscribe(MetricsLogged, lambda e: None)


async def test_a_weighed_queue_is_bounded_by_weight_not_by_events() -> None:
    bus = EventBus()
    seen: list[int] = []
    dropped: list[int] = []
    gate = asyncio.Event()

    async def slow(event: Ping) -> None:
        await gate.wait()
        seen.append(event.n)

    bus.subscribe(
        Ping,
        slow,
        maxsize=10,
        overflow="drop_newest",
        on_drop=lambda: dropped.append(1),
        weigh=lambda e: e.n,
    )
    await asyncio.sleep(0)
    for n in (4, 4, 1, 3, 1):  # 4+4+1 fit in 10; 3 does not; 1 does
        bus.publish(Ping(n))
    gate.set()
    await bus.drain(1.0)
    assert seen == [4, 4, 1, 1]
    assert len(dropped) == 1
    await bus.close()
