"""Daily report generation over a large state database: 1,000,000 metric points, 10,000 events.

The store is filled through its real commit path (`Store.commit_batch` with `MetricsBatch`
and run events, `Store.record_many` for plugin events) for 10 runs whose points span 48 hours,
so the 24-hour report reads half of them in its period and all of them for the whole-run panel.
`generate_report` (store read-only, collect, chart child, Markdown, atomic writes) is timed,
median of 3, beside a bare competitor in the same run: one `SELECT` of the same chunk rows,
their loss columns decoded with `array.frombytes`, a plain Python pass over every point, and the
period's events read with `json.loads`. Goal: under 2 s.

    .venv/bin/python bench/report_generation.py [--points N] [--events N] [--runs N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_description, markdown_table, ratio, say

from tunewatch.daemon import events as ev
from tunewatch.daemon.store import FileState, Store
from tunewatch.plugins.report.chart_process import render_chart
from tunewatch.plugins.report.content import collect_report
from tunewatch.plugins.report.generate import generate_report
from tunewatch.plugins.report.model import Report

GOAL_S = 2.0
HOUR = 3600.0
SPAN_S = 48 * HOUR
BATCH_POINTS = 10_000
REPEATS = 3


def fill(db: Path, root: Path, *, runs: int, points: int, events: int, until: float) -> None:
    """`points` metric points and `events` events over `runs` runs, committed as the daemon
    commits them."""
    store = Store(db)
    rng = random.Random(0)
    per_run = points // runs
    events_per_run = events // runs
    for r in range(runs):
        name = f"run-{r:02d}"
        directory = root / name
        directory.mkdir(parents=True)
        run_id = store.ensure_run(str(directory), name)
        state = FileState(key=str(directory / "trainer_log.jsonl"), run_id=run_id, source="jsonl")
        status = ev.StatusChanged(name, "training", "status", step=0, total_steps=2 * per_run)
        store.commit_batch(run_id, [status], state)
        for start in range(0, per_run, BATCH_POINTS):
            steps = range(start, min(start + BATCH_POINTS, per_run))
            times = [until - SPAN_S + SPAN_S * s / per_run for s in steps]
            loss = [3.0 * math.exp(-s / per_run) + rng.random() * 0.1 for s in steps]
            batch = ev.MetricsBatch(
                name,
                "trainer_log.jsonl",
                array("q", steps),
                array("d", times),
                {
                    "loss": array("d", loss),
                    "learning_rate": array("d", [1e-4] * len(steps)),
                    "grad_norm": array("d", [rng.random() for _ in steps]),
                    "epoch": array("d", [s / per_run for s in steps]),
                },
            )
            evals = ev.MetricsLogged(
                name, steps[-1], {"eval_loss": loss[-1] + 0.05}, "trainer_log.jsonl", times[-1]
            )
            store.commit_batch(run_id, [batch, evals], state)
        record_events(store, name, directory, events_per_run, per_run, until, rng)
    store.close()


def record_events(
    store: Store,
    run: str,
    directory: Path,
    count: int,
    steps: int,
    until: float,
    rng: random.Random,
) -> None:
    """`count` events of the kinds a day produces: mostly quiet findings, some checkpoints,
    source errors, best models with snapshots, a few pushed alerts and validations."""
    made: list[ev.Event] = []
    for i in range(count):
        step = steps * i // count
        when = until - SPAN_S + SPAN_S * i / count
        kind = i % 10
        if kind < 6:
            made.append(
                ev.AnomalyDetected(
                    run,
                    step,
                    "zscore",
                    "info",
                    "grad_norm",
                    rng.random(),
                    None,
                    "z 4.1",
                    when,
                    push=False,
                )
            )
        elif kind == 6:
            made.append(ev.BestModelFound(run, step, "eval_loss", 1.0 - i / count, None, when))
        elif kind == 7:
            made.append(
                ev.SnapshotCreated(
                    run,
                    step,
                    str(directory / f"snapshots/s-{step}"),
                    str(directory / f"checkpoint-{step}"),
                    when,
                )
            )
        elif kind == 8:
            made.append(
                ev.AnomalyDetected(
                    run,
                    step,
                    "loss_spike",
                    "normal",
                    "loss",
                    9.0,
                    1.0,
                    "spike",
                    when,
                    push=i % 100 == 8,
                )
            )
        else:
            made.append(
                ev.ValidationFinished(
                    run, f"/data/{run}-{i}.jsonl", 60 + i % 40, "review", 0, 1, None, when
                )
            )
    store.record_many(made)


def competitor(db: Path, since: float, until: float) -> float:
    """A bare read of the same data: every chunk row, its loss column decoded, one pass over
    each point; the period's events with their JSON decoded."""
    start = time.perf_counter()
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    seen = 0
    low = math.inf
    for names, data in con.execute("SELECT names, data FROM metric_chunks ORDER BY first_seq"):
        layout = json.loads(names)
        n = len(data) // (16 + 8 * len(layout) + sum(layout.values()))
        times = array("d")
        times.frombytes(data[8 * n : 16 * n])
        if "loss" not in layout:
            continue
        offset = 16 * n + 8 * n * list(layout).index("loss")  # unmasked columns before it
        values = array("d")
        values.frombytes(data[offset : offset + 8 * n])
        for t, v in zip(times, values, strict=True):
            if since <= t < until:
                seen += 1
                low = min(low, v)
    rows = con.execute("SELECT kind, data FROM events WHERE time >= ? AND time < ?", (since, until))
    decoded = [json.loads(d) for _kind, d in rows]
    con.close()
    assert seen > 0 and decoded
    return time.perf_counter() - start


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timing_row(label: str, seconds: list[float]) -> tuple[str, str, str]:
    runs = ", ".join(f"{t:.3f}" for t in seconds)
    return label, f"{statistics.median(seconds):.3f}", runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    print(f"Machine: {machine_description()}")
    until = time.time()
    since = until - 24 * HOUR
    with tempfile.TemporaryDirectory(prefix="tunewatch-bench-report-") as tmp:
        root = Path(tmp)
        db = root / "state" / "state.db"
        say(f"filling a store with {args.points:,} points and {args.events:,} events ...")
        filled = timed(
            lambda: fill(
                db,
                root / "runs",
                runs=args.runs,
                points=args.points,
                events=args.events,
                until=until,
            )
        )
        say(f"filled in {filled:.1f} s ({db.stat().st_size / 2**20:.0f} MiB)")
        stamp = dt.datetime.now()

        def generate() -> object:
            return generate_report(db, root / "reports", since=since, until=until, stamp=stamp)

        def collect() -> Report:
            store = Store(db, readonly=True)
            try:
                return collect_report(store, since=since, until=until, now=until)
            finally:
                store.close()

        generate()  # warm: the page cache and matplotlib's font cache, as on a daily machine
        ours = [timed(generate) for _ in range(REPEATS)]
        collecting = [timed(collect) for _ in range(REPEATS)]
        chart = collect().chart
        drawing = [timed(lambda: render_chart(chart, root / "chart.png")) for _ in range(REPEATS)]
        bare = [competitor(db, since, until) for _ in range(REPEATS)]
    median, collect_median, bare_median = (
        statistics.median(ours),
        statistics.median(collecting),
        statistics.median(bare),
    )
    print()
    print(
        markdown_table(
            ("measure", f"median of {REPEATS} (s)", "runs (s)"),
            [
                timing_row("generate_report (all of it, chart child included)", ours),
                timing_row("  of which collect_report", collecting),
                timing_row("  of which the chart child", drawing),
                timing_row("competitor: bare SELECT + decode + one pass", bare),
            ],
        )
    )
    print()
    print(
        f"{args.points:,} points, {args.events:,} events, {args.runs} runs over 48 h; "
        f"report period 24 h"
    )
    print(
        f"generate_report / competitor: {ratio(median, bare_median)}; "
        f"collect_report / competitor: {ratio(collect_median, bare_median)}"
    )
    met = median < GOAL_S
    print(f"goal: generate_report < {GOAL_S:.0f} s: {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
