"""The anomaly plugin shell: bus in, alerts out, and restarts that neither repeat nor forget."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from array import array
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

import tunewatch.plugins.anomaly as anomaly_plugin
from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import Settings
from tunewatch.daemon.events import (
    AnomalyDetected,
    AnomalyResolved,
    BestModelFound,
    CaughtUp,
    Event,
    MetricsBatch,
    MetricsLogged,
    StatusChanged,
)
from tunewatch.daemon.plugin import PluginContext
from tunewatch.daemon.run_status import INACTIVE_AFTER_S
from tunewatch.daemon.store import AsyncStore
from tunewatch.plugins import anomaly
from tunewatch.plugins.anomaly import AnomalyPlugin
from tunewatch.plugins.anomaly.config import AnomalyConfig


class Harness:
    """A real store and bus, a recorder of what the plugin publishes, and the plugin itself."""

    def __init__(self, store: AsyncStore, run_id: int = 0) -> None:
        self.store = store
        self.run_id = run_id
        self.bus = EventBus()
        self.published: list[Event] = []
        self.clock = 1e9
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

    async def log_points(
        self, points: list[tuple[int, float]], source: str = "log.jsonl", run: str = "run-a"
    ) -> list[MetricsLogged]:
        """Record points as the ingest does (stored first, then published), a second apart."""
        events = []
        for s, v in points:
            self.clock += 1
            events.append(
                MetricsLogged(run=run, step=s, metrics={"loss": v}, source=source, time=self.clock)
            )
        await record(self.store, run, events)
        self.bus.publish_many(events)
        return events

    async def settle(self) -> None:
        for _ in range(50):
            await asyncio.sleep(0.005)

    async def finish(self) -> None:
        """Let the plugin judge what was logged, then stop it."""
        await self.settle()
        await self.plugin.stop()

    def repeats(self) -> int:
        """Findings the gate held back because their episode was already alerted."""
        return sum(c.repeats for c in self.plugin.runs["run-a"].detectors.gate.counts().values())

    def kinds(self) -> list[str]:
        out = []
        for e in self.published:
            if isinstance(e, AnomalyDetected):
                out.append(e.kind)
            elif isinstance(e, AnomalyResolved):
                out.append(f"resolved:{e.kind}")
        return out


async def record(store: AsyncStore, run: str, events: list[MetricsLogged]) -> None:
    """Store points in `run` (registered if new), as the ingest does before publishing them."""
    path = f"/runs/{run.removeprefix('run-')}"  # run-a is /runs/a, as the fixtures register it
    run_id = await store.call(store.store.ensure_run, path, run)
    await store.call(store.store.commit_batch, run_id, events, None)


def points_of(run: str, points: list[tuple[int, float]]) -> list[MetricsLogged]:
    return [
        MetricsLogged(run=run, step=s, metrics={"loss": v}, source="log.jsonl") for s, v in points
    ]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AsyncStore]:
    store = await AsyncStore.open(tmp_path / "state.db")
    yield store
    await store.close()


@pytest.fixture
async def harness(store: AsyncStore) -> Harness:
    """The plugin, started, watching run-a."""
    run_id = await store.call(store.store.ensure_run, "/runs/a", "run-a")
    h = Harness(store, run_id)
    await h.plugin.start()
    return h


def dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)


async def set_status(store: AsyncStore, run_id: int, status: str, pid: int | None = None) -> None:
    """run-a's status file says `status`, recorded as the ingest does."""
    event = StatusChanged(run="run-a", status=status, source="s", pid=pid)
    await store.call(store.store.commit_batch, run_id, [event], None)


def clean(start: int, n: int) -> list[tuple[int, float]]:
    return [(s, 2.0 * math.exp(-s / 300) + 0.5) for s in range(start, start + n)]


def resumed_with_nan_from_30() -> list[tuple[int, float]]:
    """The issue's resumed run, after steps 1-40: steps 21-35 again, NaN from step 30."""
    return [*clean(21, 9), *((s, math.nan) for s in range(30, 36))]


def alerts(h: Harness) -> list[tuple[str, int, str]]:
    return [(e.kind, e.step, e.severity) for e in h.published if isinstance(e, AnomalyDetected)]


def kinds_by_run(h: Harness) -> list[tuple[str, str, int]]:
    """(run, kind, step) of each alert and recovery, sorted: runs are judged in any order."""
    found = [
        (e.run, e.kind if isinstance(e, AnomalyDetected) else f"resolved:{e.kind}", e.step)
        for e in h.published
        if isinstance(e, AnomalyDetected | AnomalyResolved)
    ]
    return sorted(found)


@pytest.fixture
def three_runs_in_memory(monkeypatch: pytest.MonkeyPatch) -> int:
    """At most three run trackers in memory, so that a test's eight runs are evicted often."""
    monkeypatch.setattr(anomaly, "MAX_TRACKED_RUNS", 3)
    return 3


async def test_a_nan_loss_is_alerted_once_and_recovers(store: AsyncStore) -> None:
    run_id = await store.call(store.store.ensure_run, "/runs/a", "run-a")
    h = Harness(store, run_id)
    await h.plugin.start()
    await h.log_points(clean(1, 40))
    await h.log_points([(41, math.nan), (42, math.nan)])
    await h.log_points(clean(43, 30))
    await h.finish()
    assert h.kinds() == ["non_finite", "resolved:non_finite"]


async def test_a_restart_neither_repeats_nor_forgets(store: AsyncStore) -> None:
    run_id = await store.call(store.store.ensure_run, "/runs/a", "run-a")
    first = Harness(store, run_id)
    await first.plugin.start()
    await first.log_points([*clean(1, 40), (41, math.inf)])
    await first.finish()
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
    await second.finish()
    # The NaN at 41 is still active (restored state): the one at 47 is a repeat, not a new alert.
    assert second.kinds() == []
    counts = second.plugin.runs["run-a"].detectors.gate.counts()
    assert sum(c.repeats for c in counts.values()) >= 1


async def test_points_recorded_before_a_stop_are_judged_before_it_ends(harness: Harness) -> None:
    """`tunewatch run --once` stops the plugins as soon as it has read everything."""
    await harness.log_points([*clean(1, 300), (301, math.nan)])
    await harness.plugin.stop()  # at once: most points are still queued
    await harness.settle()
    assert harness.kinds() == ["non_finite"]


async def test_a_dead_trainer_is_a_stall_alerted_once(store: AsyncStore) -> None:
    run_id = await store.call(store.store.ensure_run, "/runs/a", "run-a")
    await set_status(store, run_id, "training", pid=dead_pid())
    h = Harness(store, run_id)
    await h.plugin.start()
    await h.plugin.check_stalls()
    await h.plugin.check_stalls()
    await set_status(store, run_id, "completed")
    await h.plugin.check_stalls()
    await h.finish()
    assert h.kinds() == ["stall", "resolved:stall"]


async def test_train_loss_best_models_are_announced_at_most_once_per_interval(
    store: AsyncStore,
) -> None:
    run_id = await store.call(store.store.ensure_run, "/runs/a", "run-a")
    h = Harness(store, run_id)
    await h.plugin.start()
    await h.log_points(clean(1, 300))  # a steadily falling loss, all within a few seconds
    await h.finish()
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
    await h.finish()
    assert h.kinds() == ["non_finite"]
    counts = h.plugin.runs["run-a"].detectors.gate.counts()
    assert sum(c.repeats for c in counts.values()) == 0


async def test_points_the_bus_drops_in_a_burst_are_read_from_the_store(
    store: AsyncStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A catch-up publishes far faster than detectors run: nothing may be skipped for that."""
    monkeypatch.setattr(anomaly_plugin, "QUEUE_POINTS", 32)  # a burst larger than the queue
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
    assert h.plugin.runs["run-a"].timeline.judged["loss"].steps[-1] == 301


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
    await h.finish()
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
    await h.finish()
    bests = [(e.step, e.value) for e in h.published if isinstance(e, BestModelFound)]
    assert bests == [(1000, 1.1), (1100, 0.5)]


async def test_a_run_resumed_from_a_checkpoint_is_judged_again(harness: Harness) -> None:
    """Steps 1-40, then 21-35 again from checkpoint-20: the NaN from step 30 is alerted."""
    await harness.log_points(clean(1, 40))
    await harness.log_points(resumed_with_nan_from_30())
    await harness.finish()
    assert alerts(harness) == [("non_finite", 30, "critical")]


async def test_a_spike_in_a_resumed_segment_is_detected(harness: Harness) -> None:
    await harness.log_points(clean(1, 40))
    resumed = clean(21, 15)
    resumed[9] = (30, 10 * resumed[9][1])
    await harness.log_points(resumed)
    await harness.finish()
    # A bad batch the loss shrugs off: recorded, not pushed.
    assert ("loss_spike", 30, "info") in alerts(harness)


async def test_a_bogus_huge_step_does_not_switch_detection_off(harness: Harness) -> None:
    """After one line at step 2**63-1, the log's normal steps (a NaN among them) are judged."""
    await harness.log_points([*clean(1, 40), (9223372036854775807, 0.9)])
    await harness.log_points([*clean(41, 4), (45, math.nan), (46, math.nan)])
    await harness.finish()
    assert alerts(harness) == [("non_finite", 45, "critical")]


async def test_a_resume_seen_first_in_the_status_file_is_judged_once(harness: Harness) -> None:
    """The status file shows the resumed step 30 before the log does: one segment, not two."""
    await harness.log_points(clean(1, 40))
    await harness.log_points([(40, clean(40, 1)[0][1])], source="training_status.json")
    await harness.log_points([(30, math.nan)], source="training_status.json")
    await harness.log_points(resumed_with_nan_from_30())
    await harness.finish()
    assert alerts(harness) == [("non_finite", 30, "critical")]
    # Steps 31-35 repeat the NaN; the log's step 30 is the status file's, not judged again.
    assert harness.repeats() == 5


async def test_a_status_file_ahead_of_a_buffered_log_hides_none_of_it(harness: Harness) -> None:
    """The status file says step 60 while the log still flushes 41-60: the log's NaN counts."""
    await harness.log_points(clean(1, 40))
    await harness.log_points(clean(60, 1), source="training_status.json")
    await harness.log_points([*clean(41, 9), (50, math.nan), *clean(51, 10)])
    await harness.finish()
    assert alerts(harness) == [("non_finite", 50, "critical")]


async def test_a_replay_of_history_already_seen_raises_nothing(harness: Harness) -> None:
    """trainer_state.json of a checkpoint repeats what the log gave, NaN and all: no new alert."""
    history = [*clean(1, 30), (31, math.nan), *clean(32, 40)]
    await harness.log_points(history)
    await harness.settle()
    assert harness.kinds() == ["non_finite", "resolved:non_finite"]
    await harness.log_points(history[:50], source="trainer_state.json")
    await harness.finish()
    assert harness.kinds() == ["non_finite", "resolved:non_finite"]
    assert harness.repeats() == 0


async def test_a_resume_after_a_restart_is_alerted_and_never_again(store: AsyncStore) -> None:
    """Where each source stood survives a restart; replaying what was judged alerts nothing."""
    run_id = await store.call(store.store.ensure_run, "/runs/a", "run-a")
    first = Harness(store, run_id)
    await first.plugin.start()
    await first.log_points(clean(1, 40))
    await first.finish()

    second = Harness(store, run_id)
    await second.plugin.start()
    resumed = await second.log_points(resumed_with_nan_from_30())
    await second.finish()
    assert alerts(second) == [("non_finite", 30, "critical")]

    third = Harness(store, run_id)
    await third.plugin.start()
    third.bus.publish_many(resumed)  # the same points again, as after a crash before an ack
    await third.finish()
    assert alerts(third) == []


async def test_a_state_saved_before_segments_is_kept_and_no_longer_blinds(
    store: AsyncStore,
) -> None:
    """An old state, saved after a bogus step, still restores detectors and cursor."""
    run_id = await store.call(store.store.ensure_run, "/runs/a", "run-a")
    first = Harness(store, run_id)
    await first.plugin.start()
    await first.log_points([*clean(1, 40), (41, math.nan)])
    await first.finish()
    assert first.kinds() == ["non_finite"]
    text = await store.call(store.store.plugin_get, "anomaly", "run:run-a")
    assert text is not None
    saved = json.loads(text)
    del saved["timeline"]
    saved["last_steps"] = {"loss": 9223372036854775807}  # what the old version kept
    await store.call(store.store.plugin_put, "anomaly", "run:run-a", json.dumps(saved))

    second = Harness(store, run_id)
    second.clock = first.clock + 3600  # an hour later: past the cooldown of the first alert
    await second.plugin.start()
    await second.log_points([*clean(42, 30), (72, math.inf)])
    await second.finish()
    # The NaN episode at 41 was restored (it recovers, not re-alerts); the Inf at 72 is new.
    assert second.kinds() == ["resolved:non_finite", "non_finite"]
    assert second.plugin.runs["run-a"].cursor == 72


EIGHT_RUNS = [f"run-{i}" for i in range(8)]


async def test_only_a_few_runs_stay_in_memory_and_restarts_stay_exact(
    store: AsyncStore, three_runs_in_memory: int
) -> None:
    """Eight runs, three trackers in memory: each run's NaN is alerted once, and neither
    repeated nor forgotten after a restart, however often its tracker left memory."""
    first = Harness(store)
    await first.plugin.start()
    for run in EIGHT_RUNS:  # one run after the other: each tracker leaves memory in between
        await first.log_points(clean(1, 40), run=run)
    for run in EIGHT_RUNS:
        await first.log_points([(41, math.nan)], run=run)
    await first.settle()
    assert len(first.plugin.runs) == three_runs_in_memory
    await first.finish()
    assert kinds_by_run(first) == [(run, "non_finite", 41) for run in EIGHT_RUNS]

    # While tunewatch is down, every run logs the NaN again: the same episode, no new alert.
    for run in EIGHT_RUNS:
        await record(store, run, points_of(run, [(42, math.nan)]))
    second = Harness(store)
    second.clock = first.clock
    await second.plugin.start()  # replays eight runs through three trackers
    for part in (clean(43, 5), clean(48, 10)):  # the first part raises nothing: it is only saved
        for run in EIGHT_RUNS:  # when its tracker leaves memory
            await second.log_points(part, run=run)
    await second.finish()
    assert kinds_by_run(second) == [(run, "resolved:non_finite", 52) for run in EIGHT_RUNS]

    third = Harness(store)
    await third.plugin.start()
    await third.finish()
    assert third.published == []


async def test_a_restart_loads_only_the_runs_with_points_it_has_not_judged(
    store: AsyncStore,
) -> None:
    """Ten thousand finished runs must not be loaded one by one to learn that none is behind."""
    first = Harness(store)
    await first.plugin.start()
    for run in ("run-a", "run-b", "run-c"):
        await first.log_points(clean(1, 30), run=run)
    await first.finish()
    await record(store, "run-b", points_of("run-b", clean(31, 5)))  # while tunewatch is down

    second = Harness(store)
    await second.plugin.start()
    assert list(second.plugin.runs) == ["run-b"]
    assert second.plugin.runs["run-b"].cursor == 3 * 30 + 5
    await second.finish()


async def test_a_state_saved_without_a_position_still_loads_and_gets_one(
    store: AsyncStore,
) -> None:
    """States saved by an older version hold their cursor only inside: the run is loaded the old
    way, neither repeats nor forgets, and is saved with a position for the next start."""
    first = Harness(store)
    await first.plugin.start()
    await first.log_points([*clean(1, 40), (41, math.nan)])
    await first.finish()
    assert first.kinds() == ["non_finite"]
    await store.call(store.store.db.execute, "DELETE FROM plugin_state WHERE key LIKE 'pos:%'")
    await record(store, "run-a", points_of("run-a", [(42, math.nan), *clean(43, 15)]))

    second = Harness(store)
    await second.plugin.start()
    await second.finish()
    assert second.kinds() == ["resolved:non_finite"]
    position = await store.call(store.store.plugin_get, "anomaly", "pos:run-a")
    assert position is not None and json.loads(position)["cursor"] == 57


async def test_a_stall_is_resolved_after_its_tracker_left_memory_and_after_a_restart(
    store: AsyncStore, three_runs_in_memory: int
) -> None:
    run_id = await store.call(store.store.ensure_run, "/runs/a", "run-a")
    await set_status(store, run_id, "training", pid=dead_pid())
    first = Harness(store, run_id)
    await first.plugin.start()
    await first.plugin.check_stalls()
    for run in EIGHT_RUNS:
        await first.log_points(clean(1, 5), run=run)
    await first.settle()
    assert "run-a" not in first.plugin.runs
    await first.finish()
    assert first.kinds() == ["stall"]

    second = Harness(store, run_id)
    await second.plugin.start()
    await set_status(store, run_id, "completed")
    await second.plugin.check_stalls()
    await second.plugin.check_stalls()
    await second.finish()
    assert second.kinds() == ["resolved:stall"]


async def test_a_stall_check_never_runs_while_points_are_judged(harness: Harness) -> None:
    """Both change trackers; a tracker changed by one must not be evicted under the other."""
    async with harness.plugin._feeding:
        check = asyncio.create_task(harness.plugin.check_stalls())
        await harness.settle()
        assert not check.done()
    await check


def eval_losses(steps: range, first_value: float) -> MetricsBatch:
    """Evaluations that each beat the last by 0.1."""
    return MetricsBatch(
        run="run-a",
        source="trainer_log.jsonl",
        steps=array("q", steps),
        times=array("d", [1e9 + s for s in steps]),
        columns={"eval_loss": array("d", [first_value - i / 10 for i in range(len(steps))])},
    )


async def test_bests_read_at_start_up_are_history_and_later_ones_are_news(
    harness: Harness, store: AsyncStore
) -> None:
    """Until CaughtUp says where start-up reading ended, every best is history; after it, the
    bests of points up to its seq still are (they were queued), later ones are not."""
    read_first = eval_losses(range(100, 600, 100), 2.0)
    read_last = eval_losses(range(600, 1100, 100), 1.5)
    await store.call(store.store.commit_batch, harness.run_id, [read_first, read_last], None)
    harness.bus.publish(read_first)
    await harness.settle()
    harness.bus.publish(CaughtUp(last_seq=await store.call(store.store.last_seq)))
    await harness.settle()
    harness.bus.publish(read_last)
    live = MetricsLogged(run="run-a", step=1100, metrics={"eval_loss": 0.5}, source="log.jsonl")
    await store.call(store.store.commit_batch, harness.run_id, [live], None)
    harness.bus.publish(live)
    await harness.finish()
    bests = [(e.step, e.historical) for e in harness.published if isinstance(e, BestModelFound)]
    assert bests == [(500, True), (1000, True), (1100, False)]


# -- a run's end ---------------------------------------------------------------------------------

# pl-vqvae-weld-v37's last evaluations (bench/corpus, BSD-3-Clause) after a history of eval
# losses swinging 30-70 %: a best of 3.06, then 3.34, 3.08, 3.98, 3.89, 3.92 to the end while
# the train loss falls. Within its noise while it runs; overfitting once the run has ended.
END_EVALS = [11.27, 8.43, 9.04, 6.72, 5.30, 7.07, 5.47, 9.22, 6.47, 5.81, 4.83, 4.25, 4.63, 4.79,
             3.06, 3.34, 3.08, 3.98, 3.89, 3.92]  # fmt: skip


def overfit_at_the_end(start: float) -> list[MetricsLogged]:
    """Four train losses (falling) then one evaluation, 20 times, a second apart from `start`."""
    events: list[MetricsLogged] = []
    for i, value in enumerate(END_EVALS):
        for k in range(4):
            step = 10 * i + k
            loss = 2.0 * 0.95**i * (1.0 + 0.05 * (k % 2))
            events.append(_logged(step, {"loss": loss}, start + len(events)))
        events.append(_logged(10 * i + 4, {"eval_loss": value}, start + len(events)))
    return events


def _logged(step: int, metrics: dict[str, float], when: float) -> MetricsLogged:
    return MetricsLogged(run="run-a", step=step, metrics=metrics, source="metrics.csv", time=when)


def end_alerts(h: Harness) -> list[tuple[str, int, bool]]:
    return [
        (e.kind, e.step, e.push)
        for e in h.published
        if isinstance(e, AnomalyDetected) and "ended" in e.detail
    ]


async def watching_a_run_overfit_at_the_end(
    store: AsyncStore, run_id: int = 0
) -> tuple[Harness, list[MetricsLogged]]:
    """The plugin, started, and the run's points logged live (recorded, then published)."""
    h = Harness(store, run_id)
    await h.plugin.start()
    events = overfit_at_the_end(time.time())
    await record(store, "run-a", events)
    h.bus.publish_many(events)
    await h.settle()
    return h, events


async def test_a_run_silent_for_an_hour_has_its_end_judged_once(store: AsyncStore) -> None:
    h, events = await watching_a_run_overfit_at_the_end(store)
    assert h.kinds() == []  # nothing while it runs: the rise is within the eval loss's noise
    last = events[-1].time
    assert await h.plugin.check_ends(now=last + 600) == []  # quiet for 10 minutes: not yet
    (told,) = await h.plugin.check_ends(now=last + INACTIVE_AFTER_S)
    assert isinstance(told, AnomalyDetected)
    assert (told.kind, told.metric, told.step, told.push) == (
        "inverted_loss",
        "eval_loss",
        194,
        True,
    )
    assert "step 144" in told.detail and told.time == last
    assert await h.plugin.check_ends(now=last + 2 * INACTIVE_AFTER_S) == []  # told once
    await h.finish()

    second = Harness(store)  # a restart neither repeats it
    await second.plugin.start()
    assert await second.plugin.check_ends(now=last + 3 * INACTIVE_AFTER_S) == []
    await second.finish()
    assert end_alerts(h) == [("inverted_loss", 194, True)] and second.kinds() == []


async def test_an_end_still_to_judge_survives_a_restart(store: AsyncStore) -> None:
    first, events = await watching_a_run_overfit_at_the_end(store)
    await first.finish()  # stopped while the run was still going: its end is not judged

    second = Harness(store)
    await second.plugin.start()
    await second.plugin.check_ends(now=events[-1].time + INACTIVE_AFTER_S)
    await second.finish()
    assert end_alerts(first) == [] and end_alerts(second) == [("inverted_loss", 194, True)]


async def test_a_finished_run_has_its_end_judged_at_once(store: AsyncStore) -> None:
    run_id = await store.call(store.store.ensure_run, "/runs/a", "run-a")
    h, _ = await watching_a_run_overfit_at_the_end(store, run_id)
    await set_status(store, run_id, "completed")
    await h.plugin.check_ends()
    await h.finish()
    assert end_alerts(h) == [("inverted_loss", 194, True)]


async def test_once_judges_the_end_of_a_finished_run_before_it_stops(store: AsyncStore) -> None:
    """`tunewatch run --once` on a run that finished minutes ago: its end is told (a daemon
    restarted, or killed, right after a run ended does the same)."""
    run_id = await store.call(store.store.ensure_run, "/runs/a", "run-a")
    await record(store, "run-a", overfit_at_the_end(time.time() - 100))
    await set_status(store, run_id, "completed")
    h = Harness(store, run_id)
    await h.plugin.start()
    await h.plugin.stop()
    await h.settle()
    assert end_alerts(h) == [("inverted_loss", 194, True)]


async def test_a_run_that_ended_before_tunewatch_started_is_history(store: AsyncStore) -> None:
    events = overfit_at_the_end(time.time() - 2 * INACTIVE_AFTER_S)
    await record(store, "run-a", events)
    h = Harness(store)
    await h.plugin.start()
    await h.plugin.check_ends()
    await h.finish()
    # Silent for two hours when tunewatch started ("inactive since ..."): recorded (`tunewatch
    # events` lists it), not pushed, as it is old news.
    assert end_alerts(h) == [("inverted_loss", 194, False)]


async def test_only_a_run_whose_end_could_tell_something_waits_for_its_end(
    store: AsyncStore,
) -> None:
    """Ten thousand finished runs that never evaluated are not loaded again at their end."""
    h = Harness(store)
    await h.plugin.start()
    await h.log_points(clean(1, 40), run="run-b")  # no evaluation: nothing to judge at its end
    overfit = overfit_at_the_end(time.time())
    await record(store, "run-a", overfit)
    h.bus.publish_many(overfit)
    await h.finish()
    ended = {}
    for run in ("run-a", "run-b"):
        position = await store.call(store.store.plugin_get, "anomaly", f"pos:{run}")
        assert position is not None
        ended[run] = json.loads(position)["ended"]
    assert ended == {"run-a": False, "run-b": True}
