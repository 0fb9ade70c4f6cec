"""Benchmark: the cost of live ingest, many runs logging at once.

100 runs each append a line every 100 ms (1,000 lines/s in all) for a while, written by
separate processes on a fixed schedule. The real daemon (a subprocess with every built-in
plugin, READY learned on a real NOTIFY_SOCKET) follows them; this process polls the state
database every few milliseconds, so each line's ingest latency (append -> committed, visible
to `tunewatch status`) is measured from outside, an upper bound by the polling period. The
daemon's CPU is read from /proc. In the same run, GNU `tail -F` follows the same number of
files at the same rate: its CPU and latency (append -> printed) are the floor.

    .venv/bin/python bench/live_ingest.py                       # 100 runs x 10 lines/s, ~2 min
    .venv/bin/python bench/live_ingest.py --runs 20 --seconds 10
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import os
import random
import socket
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
from _common import (
    LatencySummary,
    cpu_seconds,
    machine_description,
    markdown_table,
    ratio,
    say,
    wait_ready,
)

LOG_NAME = "trainer_log.jsonl"
PREFIX_LINES = 100
WRITERS = 2
POLL_S = 0.005
START_DELAY_S = 1.0
ARRIVAL_TIMEOUT_S = 10.0
GOAL_CPU_PERCENT = 15.0
GOAL_P99_MS = 100.0
# Steps carry the run's number, so a line read back (from the store or from tail) names its run.
STEP_BASE = 1_000_000


def monotonic_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def line(step: int, loss: float) -> bytes:
    return orjson.dumps({"current_steps": step, "loss": loss, "lr": 1e-4, "epoch": 0.5}) + b"\n"


def loss_at(n: int) -> float:
    """A training loss: decaying, with a few percent of batch noise (fixed, from the step)."""
    noise = random.Random(n).gauss(0.0, 0.03)
    return (0.7 + 1.8 * math.exp(-n / 300)) * (1.0 + noise)


def step_of(run: int, n: int) -> int:
    return run * STEP_BASE + n


# -- writers ---------------------------------------------------------------------------------------


def write_lines(
    paths: Sequence[str], first_run: int, lines: int, interval_s: float, conn: Connection
) -> None:
    """Append `lines` lines to each path, one every `interval_s`, staggered across the paths."""
    fds = [os.open(p, os.O_WRONLY | os.O_APPEND) for p in paths]
    stamps: dict[int, int] = {}
    schedule = sorted(
        (n * interval_s + i * interval_s / len(paths), i, n)
        for i in range(len(paths))
        for n in range(lines)
    )
    start = time.monotonic() + START_DELAY_S
    try:
        for at, i, n in schedule:
            wait = start + at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            step = step_of(first_run + i, PREFIX_LINES + 1 + n)
            stamps[step] = monotonic_ns()
            os.write(fds[i], line(step, loss_at(PREFIX_LINES + 1 + n)))
    finally:
        for fd in fds:
            os.close(fd)
    conn.send(stamps)
    conn.close()


def run_writers(runs: Sequence[Path], lines: int, interval_s: float) -> dict[int, int]:
    ctx = multiprocessing.get_context("spawn")
    per = (len(runs) + WRITERS - 1) // WRITERS
    started = []
    for w in range(WRITERS):
        group = runs[w * per : (w + 1) * per]
        if not group:
            continue
        receive, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=write_lines,
            args=([str(r / LOG_NAME) for r in group], w * per, lines, interval_s, send),
            daemon=True,
        )
        proc.start()
        send.close()
        started.append((proc, receive))
    stamps: dict[int, int] = {}
    for proc, receive in started:
        stamps.update(receive.recv())
        proc.join()
    return stamps


def make_runs(root: Path, count: int) -> list[Path]:
    runs = []
    for i in range(count):
        run = root / f"run-{i:03d}"
        run.mkdir(parents=True)
        with (run / LOG_NAME).open("wb") as f:
            for n in range(1, PREFIX_LINES + 1):
                f.write(line(step_of(i, n), loss_at(n)))
        runs.append(run)
    return runs


# -- the daemon, observed from its database --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    latency: LatencySummary
    received: int
    sent: int
    cpu_percent: float


def poll_store(db: Path, arrivals: dict[int, int], stop: threading.Event) -> None:
    from tunewatch.daemon.store import Store

    store = Store(db, readonly=True)
    last = store.last_seq()
    try:
        while not stop.is_set():
            points = store.metrics(after_seq=last)
            now = monotonic_ns()
            for point in points:
                arrivals.setdefault(point.step, now)
                last = max(last, point.seq)
            time.sleep(POLL_S)
    finally:
        store.close()


def measure_daemon(root: Path, runs: Sequence[Path], lines: int, interval_s: float) -> Result:
    home = root / "home"
    root.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "NOTIFY_SOCKET": str(home / "notify"),
    }
    home.mkdir()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(home / "notify"))
    notify.settimeout(1.0)
    with (home / "daemon.log").open("wb") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "tunewatch.daemon", "run", "--no-notifications"]
            + [str(r) for r in runs],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(notify, daemon, home / "daemon.log", 120.0)
        time.sleep(2.0)  # the watcher's start-up rescan
        arrivals: dict[int, int] = {}
        stop = threading.Event()
        poller = threading.Thread(
            target=poll_store,
            args=(home / "state" / "tunewatch" / "state.db", arrivals, stop),
            daemon=True,
        )
        poller.start()
        proc = psutil.Process(daemon.pid)
        cpu0, wall0 = cpu_seconds(proc), time.monotonic()
        stamps = run_writers(runs, lines, interval_s)
        wall = time.monotonic() - wall0
        cpu = 100 * (cpu_seconds(proc) - cpu0) / wall
        wait_for(arrivals, stamps)
        stop.set()
        poller.join(10)
    finally:
        daemon.terminate()
        daemon.wait(60)
        notify.close()
    return summarise("tunewatch (every plugin)", stamps, arrivals, cpu)


def wait_for(arrivals: dict[int, int], stamps: dict[int, int]) -> None:
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while time.monotonic() < deadline and not all(s in arrivals for s in stamps):
        time.sleep(0.05)


def summarise(name: str, stamps: dict[int, int], arrivals: dict[int, int], cpu: float) -> Result:
    latencies = [(arrivals[s] - sent) / 1e6 for s, sent in stamps.items() if s in arrivals]
    return Result(name, LatencySummary.of(latencies), len(latencies), len(stamps), cpu)


# -- the floor: GNU tail -F on the same files ------------------------------------------------------


def read_tail(stdout: IO[bytes], arrivals: dict[int, int]) -> None:
    for raw in stdout:
        now = monotonic_ns()
        with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
            arrivals.setdefault(int(orjson.loads(raw)["current_steps"]), now)


def measure_tail(runs: Sequence[Path], lines: int, interval_s: float) -> Result:
    tail = subprocess.Popen(
        ["tail", "-F", "-q", "-n0", *[str(r / LOG_NAME) for r in runs]], stdout=subprocess.PIPE
    )
    assert tail.stdout is not None
    arrivals: dict[int, int] = {}
    reader = threading.Thread(target=read_tail, args=(tail.stdout, arrivals), daemon=True)
    reader.start()
    try:
        time.sleep(1.0)
        proc = psutil.Process(tail.pid)
        cpu0, wall0 = cpu_seconds(proc), time.monotonic()
        stamps = run_writers(runs, lines, interval_s)
        cpu = 100 * (cpu_seconds(proc) - cpu0) / (time.monotonic() - wall0)
        wait_for(arrivals, stamps)
    finally:
        tail.terminate()
        tail.wait(10)
        reader.join(10)
        tail.stdout.close()
    return summarise("GNU tail -F", stamps, arrivals, cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10.0, help="lines per second per run")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the runs log")
    parser.add_argument(
        "--repeat", type=int, default=3, help="daemon measurements (the median is reported)"
    )
    args = parser.parse_args()
    say(machine_description())
    interval = 1.0 / args.rate
    lines = int(args.seconds * args.rate)
    with tempfile.TemporaryDirectory(prefix="tunewatch-live-") as tmp:
        root = Path(tmp)
        say("GNU tail -F ...")
        tail = measure_tail(make_runs(root / "tail", args.runs), lines, interval)
        repeats = []
        for i in range(args.repeat):
            say(f"tunewatch, {i + 1} of {args.repeat} ...")
            runs = make_runs(root / f"runs-{i}", args.runs)
            repeats.append(measure_daemon(root / f"daemon-{i}", runs, lines, interval))
        ours = sorted(repeats, key=lambda r: r.cpu_percent)[len(repeats) // 2]
    rows = [
        [
            r.name,
            f"{r.received:,}/{r.sent:,}",
            f"{r.cpu_percent:.1f} %",
            f"{r.latency.p50:.1f}",
            f"{r.latency.p99:.1f}",
            f"{r.latency.max:.1f}",
        ]
        for r in (tail, ours)
    ]
    rows[1][0] += " (median)"
    print(machine_description())
    print(
        f"\n{args.runs} runs x {args.rate:g} lines/s for {args.seconds:g} s; latency = append ->"
        f" visible (tunewatch: committed, polled every {POLL_S * 1000:g} ms; tail: printed)\n"
    )
    print(
        markdown_table(["follower", "lines", "CPU (one core)", "p50 ms", "p99 ms", "max ms"], rows)
    )
    each = ", ".join(f"{r.cpu_percent:.1f} %" for r in repeats)
    print(f"\ntunewatch CPU in each of {len(repeats)} measurements: {each}")
    print(
        f"tunewatch CPU {ratio(ours.cpu_percent, tail.cpu_percent)} of tail's; "
        f"goals: CPU < {GOAL_CPU_PERCENT:g} %, p99 < {GOAL_P99_MS:g} ms"
    )


if __name__ == "__main__":
    main()
