"""Background thinning of old metric points, as the daemon runs it."""

from __future__ import annotations

import time
from array import array
from pathlib import Path

from tunewatch.daemon.config import DaemonSettings
from tunewatch.daemon.downsampling import CHUNKS_PER_TRANSACTION, downsample_once
from tunewatch.daemon.events import MetricsBatch
from tunewatch.daemon.store import AsyncStore

DAY_S = 86_400.0


def batch(first_step: int, n: int, age_days: float) -> MetricsBatch:
    when = time.time() - age_days * DAY_S
    return MetricsBatch(
        run="run-a",
        source="log.jsonl",
        steps=array("q", range(first_step, first_step + n)),
        times=array("d", [when] * n),
        columns={"loss": array("d", [1.0 + i % 7 for i in range(n)])},
    )


async def test_points_older_than_the_setting_are_thinned_in_every_chunk(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "state.db")
    run_id = await store.call(store.store.ensure_run, "/r", "run-a")
    chunks = CHUNKS_PER_TRANSACTION + 20  # more than one transaction's worth
    old = [batch(i * 50, 50, age_days=40) for i in range(chunks)]
    await store.call(store.store.commit_batch, run_id, [*old, batch(10**6, 50, age_days=1)], None)
    settings = DaemonSettings(downsample_after_days=30, downsample_keep_every=10)
    assert await downsample_once(store, settings) == chunks
    counted = (await store.call(store.store.point_counts))[run_id]
    # Each old 50-point chunk keeps its every-10th points (0, 10, ... 40), its last point (49)
    # and the loss extremes (1.0 at 0, 7.0 at 6): 7 of 50. The recent chunk keeps all 50.
    assert counted == chunks * 7 + 50
    assert await downsample_once(store, settings) == 0
    await store.close()


async def test_zero_days_keeps_every_point(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "state.db")
    run_id = await store.call(store.store.ensure_run, "/r", "run-a")
    await store.call(store.store.commit_batch, run_id, [batch(0, 50, age_days=400)], None)
    assert await downsample_once(store, DaemonSettings(downsample_after_days=0)) == 0
    assert (await store.call(store.store.point_counts))[run_id] == 50
    await store.close()
