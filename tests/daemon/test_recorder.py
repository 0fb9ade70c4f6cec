"""HistoryRecorder: plugin events reach the history in batches, and wait while the store fails."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.events import AnomalyDetected, BestModelFound, Event, MetricsLogged
from tunewatch.daemon.recorder import HistoryRecorder
from tunewatch.daemon.store import AsyncStore


def best(step: int) -> BestModelFound:
    return BestModelFound(run="run-a", step=step, metric="loss", value=1.0 / step, checkpoint=None)


async def test_a_burst_of_ten_thousand_bests_is_recorded_whole_in_a_few_commits(
    tmp_path: Path,
) -> None:
    store = await AsyncStore.open(tmp_path / "state.db")
    await store.call(store.store.ensure_run, "/r", "run-a")
    bus = EventBus(default_maxsize=100)  # far fewer than the burst: nothing may be dropped
    recorder = HistoryRecorder(store, bus)
    calls = 0
    real = store.store.record_many

    def counted(events: Sequence[Event]) -> list[int]:
        nonlocal calls
        calls += 1
        return real(events)

    store.store.record_many = counted  # type: ignore[method-assign]  # counts the commits
    for step in range(1, 10_001):
        bus.publish(best(step))
        if step % 50 == 0:
            await asyncio.sleep(0)  # the bus delivers as the publisher yields
    await bus.drain(5.0)
    await recorder.close()
    rows = await store.call(store.store.history, kinds=["best_model"])
    assert [r.row.data["step"] for r in rows] == list(range(1, 10_001))
    assert calls < 300
    assert rows[0].row.run == "run-a"
    await bus.close()
    await store.close()


async def test_points_are_not_recorded_twice_and_events_wait_while_the_store_fails(
    tmp_path: Path,
) -> None:
    store = await AsyncStore.open(tmp_path / "state.db")
    bus = EventBus()
    recorder = HistoryRecorder(store, bus)
    db = store.store.db
    await store.call(db.execute, "PRAGMA query_only = 1")  # every write fails, as on a full disk
    alert = AnomalyDetected("run-a", 7, "non_finite", "critical", "loss", float("nan"), None, "")
    bus.publish(alert)
    bus.publish(MetricsLogged("run-a", 7, {"loss": 1.0}, "log.jsonl"))  # the ingest records it
    await asyncio.sleep(0.3)
    assert await store.call(store.store.history) == []
    await store.call(db.execute, "PRAGMA query_only = 0")  # the store works again
    await asyncio.sleep(1.5)  # the first retry comes after 1 s
    rows = await store.call(store.store.history)
    assert [r.row.kind for r in rows] == ["anomaly"]
    await recorder.close()
    await bus.close()
    await store.close()
