"""Benchmark: `tunewatch run` over thousands of mostly finished run directories.

A user with `runs = ["~/runs/*"]` accumulates run directories for months. This starts the real
daemon (a subprocess, READY=1 learned on a real NOTIFY_SOCKET, the open-file limit set to
systemd's default soft limit of 1,024) over N run directories, each holding one small finished
`trainer_log.jsonl` and a `training_status.json` saying "completed". It measures, cold (first
start) and warm (a restart over the same state): time to READY, RSS, open descriptors,
inotify watches, idle CPU, and how long `tunewatch status` takes. The competitor is the floor
of any watcher: one Python process that opens, reads and parses every log once.

    .venv/bin/python bench/many_runs.py                     # 10,000 runs, a few minutes
    .venv/bin/python bench/many_runs.py --runs 1000 --idle-s 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import psutil
from _common import (
    MIB,
    cpu_seconds,
    machine_description,
    markdown_table,
    ratio,
    say,
    vm_hwm,
    wait_ready,
)
from simulate_run import write_bulk, write_status

READY_TIMEOUT_S = 1800.0
GOALS = {"ready_s": 30.0, "rss_mb": 150.0, "status_s": 1.0}
SYSTEMD_NOFILE = 1024
# The daemon has settled when two consecutive seconds each use less than this much CPU.
SETTLED_CPU_PERCENT = 2.0
SETTLE_LIMIT_S = 300.0


@dataclass(frozen=True, slots=True)
class Start:
    ready_s: float
    settled_s: float  # after READY, until the CPU stays under SETTLED_CPU_PERCENT
    rss_mb: float
    peak_rss_mb: float
    fds: int
    inotify_watches: int
    idle_cpu_percent: float
    status_s: float
    status_runs: int


def make_runs(root: Path, count: int, lines: int) -> None:
    for i in range(count):
        run = root / f"run-{i:05d}"
        run.mkdir(parents=True)
        write_bulk(run / "trainer_log.jsonl", lines, seed=i)
        write_status(run, "completed", lines, lines, 1.0)


def inotify_watches(pid: int) -> int:
    """Watches held through every inotify descriptor of `pid` (from /proc/PID/fdinfo)."""
    total = 0
    fdinfo = Path(f"/proc/{pid}/fdinfo")
    for entry in fdinfo.iterdir():
        try:
            total += entry.read_text().count("inotify wd:")
        except OSError:
            continue
    return total


def limit_open_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (SYSTEMD_NOFILE, SYSTEMD_NOFILE))


def start(home: Path, runs: Path, idle_s: float) -> Start:
    env = {
        **os.environ,
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "NOTIFY_SOCKET": str(home / "notify"),
    }
    config = home / "config" / "tunewatch" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"[daemon]\nruns = [{json.dumps(str(runs / '*'))}]\n")
    (home / "notify").unlink(missing_ok=True)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(home / "notify"))
    notify.settimeout(0.5)
    started = time.monotonic()
    with (home / "daemon.log").open("ab") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "tunewatch.daemon", "run", "--no-notifications"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=limit_open_files,
        )
    try:
        wait_ready(notify, daemon, home / "daemon.log", READY_TIMEOUT_S)
        ready_s = time.monotonic() - started
        proc = psutil.Process(daemon.pid)
        settled_s = wait_settled(proc)
        cpu_before = cpu_seconds(proc)
        time.sleep(idle_s)
        idle_cpu = 100 * (cpu_seconds(proc) - cpu_before) / idle_s
        rss_mb = proc.memory_info().rss / MIB
        fds = len(os.listdir(f"/proc/{daemon.pid}/fd"))
        watches = inotify_watches(daemon.pid)
        status_started = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-m", "tunewatch.daemon", "status", "--json"],
            env=env,
            capture_output=True,
            check=True,
        ).stdout
        status_s = time.monotonic() - status_started
        peak = (vm_hwm(daemon.pid) or 0) / MIB
    finally:
        daemon.terminate()
        daemon.wait(60)
        notify.close()
    return Start(
        ready_s,
        settled_s,
        rss_mb,
        peak,
        fds,
        watches,
        idle_cpu,
        status_s,
        len(orjson.loads(out)["runs"]),
    )


def wait_settled(proc: psutil.Process) -> float:
    """Seconds until the work that follows READY (plugins judging what start-up read) is done."""
    started = time.monotonic()
    quiet = 0
    while quiet < 2 and time.monotonic() - started < SETTLE_LIMIT_S:
        before = cpu_seconds(proc)
        time.sleep(1.0)
        quiet = quiet + 1 if 100 * (cpu_seconds(proc) - before) < SETTLED_CPU_PERCENT else 0
    return time.monotonic() - started - 2.0


def read_everything_once(runs: Path) -> float:
    """The competitor: open, read and parse every log once, in one Python process."""
    started = time.monotonic()
    points = 0
    for run in sorted(runs.iterdir()):
        with (run / "trainer_log.jsonl").open("rb") as f:
            points += sum(1 for line in f if orjson.loads(line))
        orjson.loads((run / "training_status.json").read_bytes())
    return time.monotonic() - started


def entries_in_runs(runs: Path) -> int:
    return sum(len(os.listdir(run)) for run in runs.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--lines", type=int, default=20, help="lines per run's log")
    parser.add_argument("--idle-s", type=float, default=30.0, help="idle CPU window")
    args = parser.parse_args()
    say(machine_description())
    with tempfile.TemporaryDirectory(prefix="tunewatch-many-") as tmp:
        root = Path(tmp)
        runs = root / "runs"
        say(f"writing {args.runs:,} run directories ...")
        make_runs(runs, args.runs, args.lines)
        before = entries_in_runs(runs)
        floor_s = read_everything_once(runs)
        say("cold start ...")
        cold = start(root / "home", runs, args.idle_s)
        say("warm restart ...")
        warm = start(root / "home", runs, args.idle_s)
        created = entries_in_runs(runs) - before
    rows = []
    for name, s in (("first start", cold), ("restart", warm)):
        rows.append(
            [
                name,
                f"{s.ready_s:.1f} s",
                f"{s.settled_s:.0f} s",
                f"{s.rss_mb:.0f} MB (peak {s.peak_rss_mb:.0f})",
                f"{s.fds:,}",
                f"{s.inotify_watches:,}",
                f"{s.idle_cpu_percent:.2f} %",
                f"{s.status_s:.2f} s ({s.status_runs:,} runs)",
            ]
        )
    print(machine_description())
    print(
        f"\n{args.runs:,} run directories, {args.lines} log lines each, "
        f"open-file limit {SYSTEMD_NOFILE:,}\n"
    )
    print(
        markdown_table(
            [
                "",
                "READY after",
                "busy after READY",
                "RSS",
                "open fds",
                "inotify watches",
                "idle CPU",
                "status",
            ],
            rows,
        )
    )
    print(
        f"\nfloor (read and parse every file once, one process): {floor_s:.1f} s; "
        f"first start to READY {ratio(cold.ready_s, floor_s)} of it"
    )
    print(f"entries tunewatch created inside the run directories: {created}")
    print(
        f"goals: READY < {GOALS['ready_s']:g} s, RSS < {GOALS['rss_mb']:g} MB, "
        f"status < {GOALS['status_s']:g} s"
    )


if __name__ == "__main__":
    main()
