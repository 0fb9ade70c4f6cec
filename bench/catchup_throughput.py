"""Catch-up throughput: a 1,000,000-line LLaMA-Factory log through parse, normalise, store, publish.

The daemon's real pipeline runs in-process (RunWatcher.catch_up with a real SQLite store and a
bus subscriber counting points), beside a bare `for line in f: json.loads(line)` loop over the
same file in the same run. A second pipeline figure has the subscriber take every point as its
own `MetricsLogged`, as a per-point plugin does. Run: .venv/bin/python bench/catchup_throughput.py
[--lines N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_description
from simulate_run import write_bulk

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import DaemonSettings, Settings
from tunewatch.daemon.events import MetricsBatch, MetricsEvent
from tunewatch.daemon.memory import tune_malloc
from tunewatch.daemon.service import tune_gc
from tunewatch.daemon.store import AsyncStore
from tunewatch.daemon.watcher import RunWatcher


def baseline_json_loads(path: Path) -> tuple[float, int]:
    start = time.perf_counter()
    n = 0
    with path.open() as f:
        for line in f:
            json.loads(line)
            n += 1
    return time.perf_counter() - start, n


async def tunewatch_catch_up(
    run_dir: Path, state_dir: Path, per_point: bool
) -> tuple[float, int, int, int]:
    settings = Settings(daemon=DaemonSettings(state_dir=str(state_dir)))
    store = await AsyncStore.open(settings.state_db())
    bus = EventBus(default_maxsize=2_000_000)
    received = 0

    def count(event: MetricsEvent) -> None:
        nonlocal received
        if per_point:
            for _point in event.points():
                received += 1
        else:
            received += len(event) if isinstance(event, MetricsBatch) else 1

    bus.subscribe(MetricsEvent, count)
    watcher = RunWatcher(settings, store, bus, [str(run_dir)])
    start = time.perf_counter()
    await watcher.catch_up()
    await bus.close(timeout_s=60)  # every event delivered to the subscriber
    elapsed = time.perf_counter() - start
    stored = (await store.call(store.store.point_counts)).get(1, 0)
    await store.close()
    return elapsed, received, stored, settings.state_db().stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best is reported")
    args = parser.parse_args()
    tune_malloc()  # as `tunewatch run` does, before any thread starts
    print(f"machine: {machine_description()}")
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        log = run_dir / "trainer_log.jsonl"
        write_bulk(log, args.lines)
        size_mb = log.stat().st_size / 1e6
        print(f"{args.lines:,} lines, {size_mb:.0f} MB: {log.read_text().splitlines()[0][:100]}...")
        base = min(baseline_json_loads(log)[0] for _ in range(args.repeat))
        tune_gc()  # as `tunewatch run` does
        theirs = args.lines / base
        print(
            f"json.loads loop (parse only):              {theirs:>10,.0f} lines/s  ({base:.2f} s)"
        )
        for per_point, label in ((False, "batches"), (True, "each point as MetricsLogged")):
            runs = []
            for i in range(args.repeat):
                state = Path(tmp) / f"state-{label[:7]}-{i}"
                runs.append(asyncio.run(tunewatch_catch_up(run_dir, state, per_point)))
            elapsed, received, stored, db_bytes = min(runs)
            assert received == args.lines == stored, (received, stored)
            ours = args.lines / elapsed
            print(
                f"tunewatch catch-up, subscriber takes {label}: {ours:>10,.0f} lines/s"
                f"  ({elapsed:.2f} s)  ratio {ours / theirs:.2f}x"
                f"  state.db {db_bytes / 1e6:.1f} MB ({db_bytes / stored:.1f} bytes/point)"
            )


if __name__ == "__main__":
    main()
