"""Benchmark: the Prometheus exporter of a daemon watching 100 runs that are being written.

The real daemon (a subprocess, READY=1 on a real NOTIFY_SOCKET) follows 100 runs, each
appending a line every second (live_ingest's writers and runs), while this process scrapes
GET /metrics every second, as a Prometheus with a 1 s scrape_interval would (15 s is usual).
Measured per variant, each a fresh daemon over fresh runs: scrape time (median, p95) and the
size of a scrape, the daemon's CPU while the runs log, its CPU and RSS at rest afterwards
(scraped every 5 s). Variants, in the same run:
- exporter off (the default): the CPU and RSS floor;
- the exporter as shipped (asyncio server on the event loop);
- the competitor: the same registry served by prometheus_client's own `start_http_server`
  (a thread), swapped in by this script (THREAD_SERVER), for its RSS and scrape time.

    .venv/bin/python bench/prometheus_exporter.py                     # about 3 min
    .venv/bin/python bench/prometheus_exporter.py --runs 20 --seconds 10 --idle-s 5
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from _common import (
    MIB,
    cpu_seconds,
    machine_description,
    markdown_table,
    percentile,
    ratio,
    say,
    wait_ready,
)
from live_ingest import make_runs, run_writers

SCRAPE_EVERY_S = 1.0
IDLE_SCRAPE_EVERY_S = 5.0
SETTLE_S = 3.0  # after READY: the start-up rescan and the plugins' replay
GOAL_RSS_MB = 80.0


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    listen: bool
    thread_server: bool = False


VARIANTS = (
    Variant("exporter off (default)", listen=False),
    Variant("exporter on: asyncio server (shipped)", listen=True),
    Variant("exporter on: prometheus_client start_http_server (thread)", True, True),
)


@dataclass(frozen=True, slots=True)
class Measured:
    variant: Variant
    scrape_ms: list[float]
    scrape_bytes: int
    failed_scrapes: int
    busy_cpu_percent: float
    idle_cpu_percent: float
    rss_mb: float
    threads: int


class Scraper:
    """GETs /metrics every `every_s` in a thread of this process, timing each."""

    def __init__(self, port: int, every_s: float) -> None:
        self.port = port
        self.every_s = every_s
        self.times_ms: list[float] = []
        self.size = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.scrape()

    def scrape(self) -> None:
        started = time.perf_counter()
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            connection.request("GET", "/metrics")
            response = connection.getresponse()
            body = response.read()
            connection.close()
        except OSError:
            self.failed += 1
            return
        if response.status != 200 or b"tunewatch_run_loss" not in body:
            self.failed += 1
            return
        self.times_ms.append(1000 * (time.perf_counter() - started))
        self.size = len(body)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(
    root: Path, variant: Variant, runs_count: int, seconds: float, idle_s: float
) -> Measured:
    home = root / "home"
    home.mkdir(parents=True)
    runs = make_runs(root / "runs", runs_count)
    port = free_port()
    config = home / "config" / "tunewatch" / "config.toml"
    config.parent.mkdir(parents=True)
    if variant.listen:
        config.write_text(f'[prometheus]\nlisten = "127.0.0.1:{port}"\n')
    env = {
        **os.environ,
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "NOTIFY_SOCKET": str(home / "notify"),
    }
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(home / "notify"))
    notify.settimeout(1.0)
    daemon_args = ["run", "--no-notifications", *(str(r) for r in runs)]
    if variant.thread_server:
        command = [sys.executable, "-c", THREAD_SERVER, *daemon_args]
    else:
        command = [sys.executable, "-m", "tunewatch.daemon", *daemon_args]
    with (home / "daemon.log").open("wb") as log:
        daemon = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(notify, daemon, home / "daemon.log", 120.0)
        time.sleep(SETTLE_S)
        proc = psutil.Process(daemon.pid)
        scraper = Scraper(port, SCRAPE_EVERY_S)
        cpu0, wall0 = cpu_seconds(proc), time.monotonic()
        if variant.listen:
            with scraper:
                run_writers(runs, int(seconds), 1.0)
        else:
            run_writers(runs, int(seconds), 1.0)
        busy = 100 * (cpu_seconds(proc) - cpu0) / (time.monotonic() - wall0)
        time.sleep(SETTLE_S)  # the last lines recorded
        idle = Scraper(port, IDLE_SCRAPE_EVERY_S)
        cpu0, wall0 = cpu_seconds(proc), time.monotonic()
        if variant.listen:
            with idle:
                time.sleep(idle_s)
        else:
            time.sleep(idle_s)
        idle_cpu = 100 * (cpu_seconds(proc) - cpu0) / (time.monotonic() - wall0)
        rss = proc.memory_info().rss / MIB
        threads = proc.num_threads()
    finally:
        daemon.terminate()
        daemon.wait(60)
        notify.close()
    return Measured(
        variant,
        scraper.times_ms,
        scraper.size,
        scraper.failed + idle.failed,
        busy,
        idle_cpu,
        rss,
        threads,
    )


# The competitor's daemon: `python -c THREAD_SERVER ARGS` runs `tunewatch ARGS` with the
# exporter's registry served by prometheus_client's own `start_http_server` (a thread) instead
# of the asyncio server. Code run with -c imports nothing of this script (its imports would
# count in the daemon's RSS).
THREAD_SERVER = """
import sys
from prometheus_client import start_http_server
from tunewatch.daemon.cli import main
from tunewatch.plugins.prometheus import http_server

class ThreadServer(http_server.MetricsServer):
    async def start(self):
        plugin = self.render.__self__  # the plugin's bound render()
        start_http_server(self.address.port, self.address.host, registry=plugin.registry)

    async def close(self):
        return None

http_server.MetricsServer = ThreadServer
raise SystemExit(main(sys.argv[1:]))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=40.0, help="window the runs log in")
    parser.add_argument("--idle-s", type=float, default=20.0, help="window at rest afterwards")
    args = parser.parse_args()
    say(machine_description())
    results = []
    for variant in VARIANTS:
        say(f"{variant.name} ...")
        with tempfile.TemporaryDirectory(prefix="tunewatch-prom-") as tmp:
            results.append(measure(Path(tmp), variant, args.runs, args.seconds, args.idle_s))
    off, shipped, thread = results
    rows = []
    for r in results:
        scraped = bool(r.scrape_ms)
        rows.append(
            [
                r.variant.name,
                f"{percentile(r.scrape_ms, 50):.1f} ms" if scraped else "-",
                f"{percentile(r.scrape_ms, 95):.1f} ms" if scraped else "-",
                f"{r.scrape_bytes / 1024:.0f} KiB" if scraped else "-",
                f"{len(r.scrape_ms)} / {r.failed_scrapes}" if scraped else "-",
                f"{r.busy_cpu_percent:.1f} %",
                f"{r.idle_cpu_percent:.2f} %",
                f"{r.rss_mb:.0f} MB",
                str(r.threads),
            ]
        )
    print(machine_description())
    print(
        f"\n{args.runs} runs, each logging a line every second for {args.seconds:g} s; "
        f"GET /metrics every {SCRAPE_EVERY_S:g} s meanwhile, every {IDLE_SCRAPE_EVERY_S:g} s "
        f"in the {args.idle_s:g} s at rest\n"
    )
    header = ["", "scrape p50", "scrape p95", "scrape size", "scrapes ok / failed"]
    header += ["CPU while logging", "CPU at rest", "RSS at rest", "threads"]
    print(markdown_table(header, rows))
    print(
        "\ndaemon CPU while logging, exporter on vs off: "
        f"{ratio(shipped.busy_cpu_percent, off.busy_cpu_percent)}; "
        f"RSS +{shipped.rss_mb - off.rss_mb:.1f} MB with it "
        f"(+{thread.rss_mb - off.rss_mb:.1f} MB with start_http_server's thread)"
    )
    print(
        "scrape p50, asyncio server vs start_http_server: "
        f"{ratio(percentile(shipped.scrape_ms, 50), percentile(thread.scrape_ms, 50))}"
    )
    print(f"goal: RSS < {GOAL_RSS_MB:g} MB with the exporter on")


if __name__ == "__main__":
    main()
