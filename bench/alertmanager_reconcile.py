"""Alertmanager plugin: what one turn of reading the history costs, on a large history.

Each turn (every `resend_s`, and after an alert on the bus) the plugin reads the recorded events
after its cursor with a range on the events' primary key. The competitor, measured in the same
run on the same database, is what the public `Store.history(kinds=...)` would cost (it has no
seq bound: every alert-kind row, filtered in Python). Then the catch-up after an outage: N alert
rows applied to the book. With --footprint, the daemon's RSS, threads and CPU with the plugin
sending to a real Alertmanager (re-sending every second) against the same daemon without it.

    .venv/bin/python bench/alertmanager_reconcile.py [--events N] [--footprint [--seconds S]]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil
from _common import cpu_seconds, machine_description, ratio, wait_ready

from tunewatch.daemon import events as ev
from tunewatch.daemon.store import Store
from tunewatch.plugins.alertmanager import recorded_after
from tunewatch.plugins.alertmanager.book import AlertBook
from tunewatch.plugins.alertmanager.mapping import HISTORY_KINDS, change_for

RUNS = 200


def fill(store: Store, events: int) -> None:
    """A long-lived daemon's history: resource samples every minute, status changes, and an
    anomaly with its recovery now and then (1 row in 50)."""
    batch: list[ev.Event] = []
    start = time.time() - events * 60.0
    for i in range(events):
        when = start + i * 60.0
        run = f"run-{(i - i % 50) % RUNS}"  # an anomaly and its recovery: the same run
        if i % 50 == 0:
            batch.append(
                ev.AnomalyDetected(
                    run, i, "non_finite", "critical", "loss", math.nan, None, "", time=when
                )
            )
        elif i % 50 == 1:
            batch.append(ev.AnomalyResolved(run, i, "non_finite", "loss", time=when))
        elif i % 10 == 2:
            batch.append(ev.StatusChanged(run, "training", "training_status.json", time=when))
        else:
            batch.append(ev.ResourceSample("/data", 0.5, 10**12, 0.4, 1.0, time=when))
        if len(batch) == 10_000:
            store.record_many(batch)
            batch = []
    store.record_many(batch)


def best_of(repeats: int, work: Callable[[], None]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


# -- footprint ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_alertmanager(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("prometheus-alertmanager")
    if binary is None:
        raise SystemExit("prometheus-alertmanager not found (apt install prometheus-alertmanager)")
    (home / "am.yml").write_text("route:\n  receiver: none\nreceivers:\n  - name: none\n")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={home / 'am.yml'}",
            f"--storage.path={home}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit("alertmanager did not become ready")


def alerts_in(url: str) -> int:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as response:
        return len(json.loads(response.read()))


def daemon_footprint(home: Path, url: str, seconds: float) -> tuple[float, int, float]:
    """RSS (MiB), threads and CPU seconds of `tunewatch run` after `seconds` with a NaN alert
    open; `url` "" runs it without the plugin."""
    home.mkdir()
    run = home / "run"
    run.mkdir()
    lines = [json.dumps({"step": i, "loss": 2.0 - i / 1000}) for i in range(1, 200)]
    (run / "trainer_log.jsonl").write_text("\n".join(lines) + "\n")
    config = home / "config" / "tunewatch" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[alertmanager]\nurl = "{url}"\nresend_s = 1.0\n' if url else "")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(home / "notify.sock"))
    notify.settimeout(0.2)
    env = {
        **os.environ,
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "NOTIFY_SOCKET": str(home / "notify.sock"),
    }
    with (home / "daemon.log").open("wb") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "tunewatch.daemon", "run", "--no-notifications", str(run)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(notify, daemon, home / "daemon.log", 60)
        with (run / "trainer_log.jsonl").open("a") as log_file:
            log_file.write(json.dumps({"step": 200, "loss": float("nan")}) + "\n")
        time.sleep(seconds)
        proc = psutil.Process(daemon.pid)
        return proc.memory_info().rss / 2**20, proc.num_threads(), cpu_seconds(proc)
    finally:
        daemon.terminate()
        daemon.wait(30)
        notify.close()


def footprint(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        am, url = start_alertmanager(Path(tmp))
        try:
            off = daemon_footprint(Path(tmp) / "off", "", seconds)
            on = daemon_footprint(Path(tmp) / "on", url, seconds)
            sent = alerts_in(url)
        finally:
            am.terminate()
            am.wait(15)
    print(f"footprint after {seconds:g} s with a NaN alert open (re-sent every second when on):")
    for name, (rss, threads, cpu) in (("plugin off", off), ("plugin on", on)):
        print(f"  {name}: RSS {rss:.1f} MiB, {threads} threads, CPU {cpu:.2f} s")
    print(
        f"  RSS on/off {ratio(on[0], off[0])}, CPU on/off {ratio(on[2], off[2])}; "
        f"alerts in Alertmanager: {sent}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--footprint", action="store_true", help="measure the daemon instead")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    print(machine_description())
    if args.footprint:
        footprint(args.seconds)
        return
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "state.db")
        start = time.perf_counter()
        fill(store, args.events)
        print(f"history: {args.events:,} events recorded in {time.perf_counter() - start:.1f} s")
        cursor = store.last_seq()

        def plugin_turn() -> None:
            assert recorded_after(store, cursor, HISTORY_KINDS, 2000) == []

        def public_api_turn() -> None:
            rows = store.history(kinds=HISTORY_KINDS)
            assert [r for r in rows if r.seq > cursor] == []

        ours = best_of(20, plugin_turn)
        theirs = best_of(3, public_api_turn)
        print(
            f"one turn, nothing new: plugin (seq range) {ours * 1e3:.3f} ms; "
            f"Store.history(kinds) + filter {theirs * 1e3:.1f} ms; ratio {theirs / ours:,.0f}x"
        )

        # Catch-up after an outage: every alert row of the history applied to the book.
        begin = time.perf_counter()
        book = AlertBook()
        rows = 0
        while batch := recorded_after(store, book.cursor, HISTORY_KINDS, 2000):
            for seq, kind, data in batch:
                change = change_for(kind, data, {})
                if change is not None:
                    book.apply(change, now=time.time(), one_off_s=3600.0)
                book.cursor = seq
            rows += len(batch)
        spent = time.perf_counter() - begin
        print(
            f"catch-up: {rows:,} alert-kind rows read and applied in {spent:.2f} s "
            f"({rows / spent:,.0f} rows/s); book: {len(book.alerts):,} alerts "
            f"({book.firing()} firing), saved as {len(book.to_json()):,} bytes"
        )
        store.close()


if __name__ == "__main__":
    main()
