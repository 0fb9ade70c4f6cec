"""The anomaly plugin shell: bus in, alerts out, and restarts that neither repeat nor forget."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from array import array
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import Settings
from tunewatch.daemon.events import (
    AnomalyDetected,
    AnomalyResolved,
    BestModelFound,
    Event,
    MetricsBatch,
    MetricsLogged,
    StatusChanged,
)
from tunewatch.daemon.plugin import PluginContext
from tunewatch.daemon.store import AsyncStore
from tunewatch.plugins.anomaly import AnomalyPlugin
from tunewatch.plugins.anomaly.config import AnomalyConfig


class Harness:
    """A real store and bus, a recorder of what the plugin publishes, and the plugin itself."""

    def __init__(self, store: AsyncStore, run_id: int) -> None:
        self.store = store
        self.run_id = run_id
        self.bus = EventBus()
        self.published: list[Event] = []
        self.bus.subscribe(AnomalyDetected, self.published.append)
        self.bus.subscribe(AnomalyResolved, self.published.append)
        self.bus.subscribe(BestModelFound, self.published.append)
        self.plugin = AnomalyPlugin(
            PluginContext(
                name="anomaly",
                bus=self.bus,
                store=store,
                config=AnomalyConfig(),
                settings=Settings(),
                log=structlog.get_logger("test"),
                run_dirs={},
            )
        )

    async def log_points(self, points: list[tuple[int, float]]) -> None:
        """Record points as the ingest does (stored first, then published)."""
        events = [
            MetricsLogged(
                run="run-a", step=s, metrics={"loss": v}, source="log.jsonl", time=1e9 + s
            )
            for s, v in points
        ]
        await self.store.call(self.store.store.commit_batch, self.run_id, events, None)
        self.bus.publish_many(events)

    async def settle(self) -> None:
        for _ in range(50):
            await asyncio.sleep(0.005)

    def kinds(self) -> list[str]:
        out = []
        for e in self.published:
            if isinstance(e, AnomalyDetected):
                out.append(e.kind)
            elif isinstance(e, AnomalyResolved):
                out.append(f"resolved:{e.kind}")
        return out


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AsyncStore]:
    store = await AsyncStore.open(tmp_path / "state.db")
    yield store
    await store.close()


def dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)


def clean(start: int, n: int) -> list[tuple[int, float]]:
    return [(s, 2.0 * math.exp(-s / 300) + 0.5) for s in range(start, start + n)]


async def test_a_nan_loss_is_alerted_once_and_recovers(store: AsyncStore) -> None:
    run_id = await store.call(store.store.ensure_run, "/runs/a", "run-a")
    h = Harness(store, run_id)
    await h.plugin.start()
    await h.log_points(clean(1, 40))
    await h.log_points([(41, math.nan), (42, math.nan)])
    await h.log_points(clean(43, 30))
    await h.settle()
    await h.plugin.stop()
    assert h.kinds() == ["non_finite", "resolved:non_finite"]


async def test_a_restart_neither_repeats_nor_forgets(store: AsyncStore) -> None:
    run_id = await store.call(store.store.ensure_run, "/runs/a", "run-a")
    first = Harness(store, run_id)
    await first.plugin.start()
    await first.log_points([*clean(1, 40), (41, math.inf)])
    await first.settle()
    await first.plugin.stop()
    assert first.kinds() == ["non_finite"]

    # While tunewatch is down, the ingest of a later start records more points (a second
    # anomaly among them) before the plugin runs again.
    events = [
        MetricsLogged(run="run-a", step=s, metrics={"loss": v}, source="log.jsonl")
        for s, v in [*clean(42, 5), (47, math.nan)]
    ]
    await store.call(store.store.commit_batch, run_id, events, None)

    second = Harness(store, run_id)
    await second.plugin.start()  # replays the 6 points it has not seen
    second.bus.publish_many(events)  # and the same points arriving on the bus are skipped
    await second.settle()
    await second.plugin.stop()
    # The NaN at 41 is still active (restored state): the one at 47 is a repeat, not a new alert.
    assert second.kinds() == []
    counts = second.plugin.runs["run-a"].detectors.gate.counts()
    assert sum(c.repeats for c in counts.values()) >= 1


async def test_a_dead_trainer_is_a_stall_alerted_once(store: AsyncStore) -> None:
    run_id = await store.call(store.store.ensure_run, "/runs/a", "run-a")
    status = StatusChanged(run="run-a", status="training", source="s", pid=dead_pid())
    await store.call(store.store.commit_batch, run_id, [status], None)
    h = Harness(store, run_id)
    await h.plugin.start()
    await h.plugin.check_stalls()
    await h.plugin.check_stalls()
    done = StatusChanged(run="run-a", status="completed", source="s")
    await store.call(store.store.commit_batch, run_id, [done], None)
    await h.plugin.check_stalls()
    await h.settle()
    await h.plugin.stop()
    assert h.kinds() == ["stall", "resolved:stall"]


async def test_train_loss_best_models_are_announced_at_most_once_per_interval(
    store: AsyncStore,
) -> None:
    run_id = await store.call(store.store.ensure_run, "/runs/a", "run-a")
    h = Harness(store, run_id)
    await h.plugin.start()
    await h.log_points(clean(1, 300))  # a steadily falling loss, all within a few seconds
    await h.settle()
    await h.plugin.stop()
    bests = [e for e in h.published if isinstance(e, BestModelFound)]
    assert len(bests) == 1
    assert bests[0].metric == "loss"


async def test_the_same_step_from_two_sources_is_judged_once(store: AsyncStore) -> None:
    """A status file and the trainer's log both report step 41's NaN: one alert, no repeat."""
    run_id = await store.call(store.store.ensure_run, "/runs/a", "run-a")
    h = Harness(store, run_id)
    await h.plugin.start()
    await h.log_points(clean(1, 40))
    nan_twice = [
        MetricsLogged(run="run-a", step=41, metrics={"loss": math.nan}, source=source)
        for source in ("training_status.json", "trainer_state.json")
    ]
    await store.call(store.store.commit_batch, run_id, nan_twice, None)
    h.bus.publish_many(nan_twice)
    await h.settle()
    await h.plugin.stop()
    assert h.kinds() == ["non_finite"]
    counts = h.plugin.runs["run-a"].detectors.gate.counts()
    assert sum(c.repeats for c in counts.values()) == 0


async def test_points_the_bus_drops_in_a_burst_are_read_from_the_store(
    store: AsyncStore,
) -> None:
    """A catch-up publishes far faster than detectors run: nothing may be skipped for that."""
    run_id = await store.call(store.store.ensure_run, "/runs/a", "run-a")
    h = Harness(store, run_id)
    await h.plugin.start()
    await h.log_points([*clean(1, 300), (301, math.nan)])  # 301 events at once
    await h.settle()
    [anomaly_stats] = [s for s in h.bus.stats() if s.name == "anomaly"]
    await h.plugin.stop()
    assert anomaly_stats.dropped > 0
    assert h.kinds() == ["non_finite"]
    assert h.plugin.runs["run-a"].cursor == 301
    assert h.plugin.runs["run-a"].last_steps["loss"] == 301


async def test_a_batch_is_judged_point_by_point(store: AsyncStore) -> None:
    run_id = await store.call(store.store.ensure_run, "/runs/a", "run-a")
    h = Harness(store, run_id)
    await h.plugin.start()
    losses = [v for _, v in clean(1, 100)]
    losses[60] = math.inf
    batch = MetricsBatch(
        run="run-a",
        source="trainer_log.jsonl",
        steps=array("q", range(1, 101)),
        times=array("d", [1e9 + s for s in range(1, 101)]),
        columns={"loss": array("d", losses)},
    )
    await store.call(store.store.commit_batch, run_id, [batch], None)
    h.bus.publish(batch)
    await h.settle()
    await h.plugin.stop()
    assert h.kinds() == ["non_finite", "resolved:non_finite"]
    [alert] = [e for e in h.published if isinstance(e, AnomalyDetected)]
    assert alert.step == 61


async def test_a_caught_up_history_announces_only_its_latest_best(store: AsyncStore) -> None:
    """Ten evaluations that each beat the last, read at once: one new best, the current one."""
    run_id = await store.call(store.store.ensure_run, "/runs/a", "run-a")
    h = Harness(store, run_id)
    await h.plugin.start()
    history = MetricsBatch(
        run="run-a",
        source="trainer_log.jsonl",
        steps=array("q", range(100, 1100, 100)),
        times=array("d", [1e9 + s for s in range(10)]),
        columns={"eval_loss": array("d", [2.0 - i / 10 for i in range(10)])},
    )
    await store.call(store.store.commit_batch, run_id, [history], None)
    h.bus.publish(history)
    await h.settle()
    live = MetricsLogged(run="run-a", step=1100, metrics={"eval_loss": 0.5}, source="log.jsonl")
    await store.call(store.store.commit_batch, run_id, [live], None)
    h.bus.publish(live)
    await h.settle()
    await h.plugin.stop()
    bests = [(e.step, e.value) for e in h.published if isinstance(e, BestModelFound)]
    assert bests == [(1000, 1.1), (1100, 0.5)]
