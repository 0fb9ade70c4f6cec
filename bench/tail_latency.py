"""Benchmark: time from a line appended to a trainer log to its point on the bus.

Runs the real pipeline in-process (settings, store, bus, RunWatcher) for each `watch_step_ms`
in a sweep, with GNU `tail -F` measured the same way in the same run as the floor, and measures
the watcher's CPU while nothing is written (the step is how often watchfiles polls). The writer
is a separate process, so that it never competes for this process's GIL, and stamps each
append with CLOCK_MONOTONIC, which is system-wide and therefore comparable across processes.

    .venv/bin/python bench/tail_latency.py                       # full sweep, about 4.5 min
    .venv/bin/python bench/tail_latency.py --lines 200 --steps 1,5 --idle-seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO

import orjson
import psutil
from _common import LatencySummary, cpu_seconds, machine_description, markdown_table, ratio, say
from simulate_run import log_line, loss_at, write_bulk

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import DaemonSettings, Settings
from tunewatch.daemon.events import MetricsEvent
from tunewatch.daemon.logs import configure_logging
from tunewatch.daemon.memory import tune_malloc
from tunewatch.daemon.service import tune_gc
from tunewatch.daemon.sources.discovery import SourceKind
from tunewatch.daemon.sources.run_sources import RunSources
from tunewatch.daemon.store import AsyncStore
from tunewatch.daemon.watcher import RunWatcher

LOG_NAME = "trainer_log.jsonl"
# Lines already in the log before following starts: catch-up reads them, so the measured
# lines are appended to a file the watcher has open at a real offset, as in a live run.
PREFIX_LINES = 200
# The writer starts this long after it was spawned, once the follower is surely watching.
WRITER_START_DELAY_S = 0.3
# After the last append, how long a missing line is waited for before it counts as lost.
ARRIVAL_TIMEOUT_S = 5.0
# Let the watcher's start-up rescan (0.5 s after it starts) happen before the measurement.
WATCHER_WARMUP_S = 1.0
GOAL_P99_MS = 10.0
GOAL_IDLE_CPU_PERCENT = 0.5


def monotonic_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


# -- the writer process ---------------------------------------------------------------------------


def append_lines(
    path: str, first_step: int, lines: int, interval_ms: float, conn: Connection
) -> None:
    """Append `lines` log lines, one write() each, `interval_ms` apart; send back the stamps.

    Runs in a spawned process. The stamp is taken just before the write() system call, so a
    measured latency includes the append itself.
    """
    rng = random.Random(1)
    total = first_step + lines
    started = time.time()
    payloads = [
        (log_line(step, total, loss_at(step, total, rng), started) + "\n").encode()
        for step in range(first_step, first_step + lines)
    ]
    sent: list[int] = []
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        interval_ns = int(interval_ms * 1e6)
        # A fixed schedule rather than sleep-after-write: spacing does not drift with slow writes.
        start = monotonic_ns() + int(WRITER_START_DELAY_S * 1e9)
        for i, payload in enumerate(payloads):
            wait_ns = start + i * interval_ns - monotonic_ns()
            if wait_ns > 0:
                time.sleep(wait_ns / 1e9)
            sent.append(monotonic_ns())
            os.write(fd, payload)
    finally:
        os.close(fd)
    conn.send(sent)
    conn.close()


@dataclass
class Writer:
    """The writer process and the pipe its send stamps come back on."""

    process: multiprocessing.process.BaseProcess
    stamps: Connection

    @classmethod
    def start(cls, path: Path, first_step: int, lines: int, interval_ms: float) -> Writer:
        ctx = multiprocessing.get_context("spawn")
        receive, send = ctx.Pipe(duplex=False)
        process = ctx.Process(
            target=append_lines,
            args=(str(path), first_step, lines, interval_ms, send),
            name="latency-writer",
            daemon=True,
        )
        process.start()
        send.close()
        return cls(process, receive)

    def finish(self) -> list[int]:
        """Block until the writer is done; its send stamps, in step order."""
        sent: list[int] = self.stamps.recv()
        self.process.join()
        self.stamps.close()
        return sent


# -- measuring ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    latency: LatencySummary
    sent: int
    follow_cpu_percent: float  # CPU while lines arrive every interval
    idle_cpu_percent: float  # CPU with nothing written
    # tunewatch only: append -> the watcher wakes up to read the file, and from there -> bus.
    detect: LatencySummary | None = None
    pipeline: LatencySummary | None = None

    def meets_goals(self) -> bool:
        return (
            self.latency.count == self.sent
            and self.latency.p99 < GOAL_P99_MS
            and self.idle_cpu_percent < GOAL_IDLE_CPU_PERCENT
        )


def latencies_ms(sent: Sequence[int], first_step: int, arrivals: dict[int, int]) -> list[float]:
    out: list[float] = []
    for i, sent_ns in enumerate(sent):
        arrived = arrivals.get(first_step + i)
        if arrived is not None:
            out.append((arrived - sent_ns) / 1e6)
    return out


def split_latencies(
    sent: Sequence[int], first_step: int, arrivals: dict[int, int], wakeups: Sequence[int]
) -> tuple[list[float], list[float]]:
    """Each latency cut at the first wake-up after its append: (to wake-up, wake-up to bus)."""
    to_wakeup: list[float] = []
    to_bus: list[float] = []
    for i, sent_ns in enumerate(sent):
        arrived = arrivals.get(first_step + i)
        if arrived is None:
            continue
        at = bisect.bisect_left(wakeups, sent_ns)
        if at == len(wakeups) or wakeups[at] > arrived:
            continue
        to_wakeup.append((wakeups[at] - sent_ns) / 1e6)
        to_bus.append((arrived - wakeups[at]) / 1e6)
    return to_wakeup, to_bus


def record_wakeups(watcher: RunWatcher, wakeups: list[int]) -> None:
    """Stamp every time the watcher marks a file to read, whichever watcher woke it.

    Wraps `mark` on this instance: both the inotify wake-ups of followed files and watchfiles'
    changes end in `self.mark`, so an instance attribute of that name sees them all.
    """
    mark = watcher.mark

    def stamped(run: RunSources, kind: SourceKind, path: Path) -> None:
        wakeups.append(monotonic_ns())
        mark(run, kind, path)

    setattr(watcher, "mark", stamped)  # noqa: B010


def prepare_run(root: Path, name: str) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    write_bulk(run_dir / LOG_NAME, PREFIX_LINES)
    return run_dir


async def measure_tunewatch(
    root: Path, step_ms: int, lines: int, interval_ms: float, idle_s: float
) -> Result:
    run_dir = prepare_run(root, f"run-step{step_ms}")
    settings = Settings(
        daemon=DaemonSettings(
            runs=(str(run_dir),),
            state_dir=str(root / f"state-step{step_ms}"),
            watch_step_ms=step_ms,
        )
    )
    store = await AsyncStore.open(settings.state_db())
    bus = EventBus(default_maxsize=settings.daemon.queue_size)
    watcher = RunWatcher(settings, store, bus, [str(run_dir)])
    await watcher.catch_up()
    arrivals: dict[int, int] = {}
    all_arrived = asyncio.Event()

    def on_metrics(event: MetricsEvent) -> None:
        now = monotonic_ns()
        for point in event.points():
            arrivals.setdefault(point.step, now)
        if len(arrivals) >= lines:
            all_arrived.set()

    # Subscribed after the catch-up: only the appended lines are timed.
    bus.subscribe(MetricsEvent, on_metrics, name="latency-probe")
    wakeups: list[int] = []
    record_wakeups(watcher, wakeups)
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    try:
        await asyncio.sleep(WATCHER_WARMUP_S)
        first_step = PREFIX_LINES + 1
        cpu0, wall0 = time.process_time(), time.monotonic()
        writer = Writer.start(run_dir / LOG_NAME, first_step, lines, interval_ms)
        sent = await asyncio.to_thread(writer.finish)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_arrived.wait(), ARRIVAL_TIMEOUT_S)
        follow_cpu = 100 * (time.process_time() - cpu0) / (time.monotonic() - wall0)
        await asyncio.sleep(WATCHER_WARMUP_S)
        # Nothing is written now: whatever CPU this process uses is the watcher idling.
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(idle_s)
        idle_cpu = 100 * (time.process_time() - cpu0) / (time.monotonic() - wall0)
    finally:
        stop.set()
        await task
        await bus.close(1.0)
        await store.close()
    detect, pipeline = split_latencies(sent, first_step, arrivals, wakeups)
    return Result(
        name=f"tunewatch step={step_ms} ms",
        latency=LatencySummary.of(latencies_ms(sent, first_step, arrivals)),
        sent=lines,
        follow_cpu_percent=follow_cpu,
        idle_cpu_percent=idle_cpu,
        detect=LatencySummary.of(detect),
        pipeline=LatencySummary.of(pipeline),
    )


def read_tail_lines(stdout: IO[bytes], arrivals: dict[int, int]) -> None:
    for line in stdout:
        arrived = monotonic_ns()
        with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
            arrivals.setdefault(int(orjson.loads(line)["current_steps"]), arrived)


def measure_tail(root: Path, lines: int, interval_ms: float, idle_s: float) -> Result:
    run_dir = prepare_run(root, "run-tail")
    tail = subprocess.Popen(["tail", "-F", "-n0", str(run_dir / LOG_NAME)], stdout=subprocess.PIPE)
    assert tail.stdout is not None
    arrivals: dict[int, int] = {}
    reader = threading.Thread(target=read_tail_lines, args=(tail.stdout, arrivals), daemon=True)
    reader.start()
    probe = psutil.Process(tail.pid)
    try:
        time.sleep(WATCHER_WARMUP_S)
        first_step = PREFIX_LINES + 1
        cpu0, wall0 = cpu_seconds(probe), time.monotonic()
        sent = Writer.start(run_dir / LOG_NAME, first_step, lines, interval_ms).finish()
        deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
        while len(arrivals) < lines and time.monotonic() < deadline:
            time.sleep(0.01)
        follow_cpu = 100 * (cpu_seconds(probe) - cpu0) / (time.monotonic() - wall0)
        time.sleep(WATCHER_WARMUP_S)
        cpu0, wall0 = cpu_seconds(probe), time.monotonic()
        time.sleep(idle_s)
        idle_cpu = 100 * (cpu_seconds(probe) - cpu0) / (time.monotonic() - wall0)
    finally:
        tail.terminate()
        tail.wait(10)
        reader.join(10)
        tail.stdout.close()
    return Result(
        name="GNU tail -F (inotify)",
        latency=LatencySummary.of(latencies_ms(sent, first_step, arrivals)),
        sent=lines,
        follow_cpu_percent=follow_cpu,
        idle_cpu_percent=idle_cpu,
    )


# -- reporting ------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.2f}"


def report(results: Sequence[Result], baseline: Result, interval_ms: float) -> str:
    header = [
        "follower",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "received",
        "CPU following %",
        "CPU idle %",
        "p50 / tail",
        "p99 / tail",
        "goals met",
    ]
    rows: list[list[str]] = []
    for r in [baseline, *results]:
        lat = r.latency
        is_tail = r is baseline
        rows.append(
            [
                r.name,
                _ms(lat.p50),
                _ms(lat.p90),
                _ms(lat.p99),
                _ms(lat.max),
                f"{lat.count}/{r.sent}",
                f"{r.follow_cpu_percent:.2f}",
                f"{r.idle_cpu_percent:.3f}",
                "1.0x" if is_tail else ratio(lat.p50, baseline.latency.p50),
                "1.0x" if is_tail else ratio(lat.p99, baseline.latency.p99),
                "-" if is_tail else ("yes" if r.meets_goals() else "no"),
            ]
        )
    out = [
        f"machine: {machine_description()}",
        f"one line every {interval_ms:g} ms; goals: p99 < {GOAL_P99_MS:g} ms, "
        f"idle CPU < {GOAL_IDLE_CPU_PERCENT:g} % of one core",
        "",
        markdown_table(header, rows),
        "",
    ]
    split_rows = [
        [r.name, _ms(r.detect.p50), _ms(r.detect.p99), _ms(r.pipeline.p50), _ms(r.pipeline.p99)]
        for r in results
        if r.detect is not None and r.pipeline is not None
    ]
    split_header = [
        "follower",
        "append->wake-up p50",
        "append->wake-up p99",
        "wake-up->bus p50",
        "wake-up->bus p99",
    ]
    out.extend(["where the time goes (ms):", "", markdown_table(split_header, split_rows), ""])
    passing = [r for r in results if r.meets_goals()]
    if passing:
        best = min(passing, key=lambda r: (r.latency.p99, r.idle_cpu_percent))
        names = ", ".join(r.name for r in passing)
        out.append(f"meets both goals: {names}; lowest p99 among them: {best.name}")
    else:
        out.append("no setting meets both goals")
    return "\n".join(out)


def parse_steps(text: str) -> list[int]:
    steps = [int(part) for part in text.split(",") if part.strip()]
    if not steps or any(s < 1 for s in steps):
        raise argparse.ArgumentTypeError(f"not a list of positive step values: {text!r}")
    return steps


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1000, help="appended lines per follower")
    parser.add_argument(
        "--interval-ms", type=float, default=20.0, help="time between two appends (ms)"
    )
    parser.add_argument(
        "--steps",
        type=parse_steps,
        default=[1, 2, 5, 10, 50],
        help="watch_step_ms values to sweep, comma-separated (default 1,2,5,10,50)",
    )
    parser.add_argument(
        "--idle-seconds", type=float, default=20.0, help="idle CPU window per follower (s)"
    )
    return parser


async def sweep(
    root: Path, steps: Sequence[int], lines: int, interval_ms: float, idle_s: float
) -> list[Result]:
    results: list[Result] = []
    for step_ms in steps:
        say(f"tunewatch, watch_step_ms={step_ms}...")
        results.append(await measure_tunewatch(root, step_ms, lines, interval_ms, idle_s))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if shutil.which("tail") is None:
        say("GNU tail not found: it is the baseline this benchmark compares against")
        return 2
    configure_logging("warning", "console")
    tune_malloc()  # the daemon's malloc and GC settings (see service.run_daemon)
    tune_gc()
    say(f"machine: {machine_description()}")
    with tempfile.TemporaryDirectory(prefix="tunewatch-latency-") as tmp:
        root = Path(tmp)
        say("baseline: tail -F...")
        baseline = measure_tail(root, args.lines, args.interval_ms, args.idle_seconds)
        results = asyncio.run(
            sweep(root, args.steps, args.lines, args.interval_ms, args.idle_seconds)
        )
    print(report(results, baseline, args.interval_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
