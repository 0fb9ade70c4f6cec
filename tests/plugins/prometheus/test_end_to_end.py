"""The exporter in a real `tunewatch run`: a real Prometheus scrapes it and its query API
returns the run's loss; the textfile mode survives a restart; a port taken shows in
`tunewatch plugins` while the daemon keeps recording."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest
from fixtures.daemon_process import DaemonProcess
from fixtures.local_servers import free_port

from .harness import parse, value
from .prometheus_server import prometheus_scraping, require_binaries
from .test_docs import dashboard_queries


def write_log(run: Path, losses: list[float], first_step: int = 1) -> None:
    run.mkdir(parents=True, exist_ok=True)
    with (run / "train_log.jsonl").open("a") as log:
        for i, loss in enumerate(losses):
            log.write(json.dumps({"step": first_step + i, "loss": loss, "lr": 1e-4}) + "\n")


def config_file(home: Path, section: str) -> Path:
    path = home / "tunewatch.toml"
    path.write_text(f"[prometheus]\n{section}\n")
    return path


@pytest.mark.slow
def test_prometheus_scrapes_the_daemon_and_its_query_api_returns_the_runs_loss(
    tmp_path: Path,
) -> None:
    require_binaries()
    run = tmp_path / "runs" / "llama-sft"
    losses = [2.5 - i * 0.01 for i in range(200)]
    write_log(run, losses)
    port = free_port()
    config = config_file(tmp_path, f'listen = "127.0.0.1:{port}"')
    with DaemonProcess(tmp_path) as daemon:
        daemon.start(str(run), config=config)
        with prometheus_scraping(tmp_path / "prometheus", f"127.0.0.1:{port}") as prometheus:
            query = 'tunewatch_run_loss{run="llama-sft"}'
            assert prometheus.wait_value(query, losses[-1]) == losses[-1]
            # A line logged now reaches Prometheus at its next scrape.
            write_log(run, [0.123], first_step=201)
            prometheus.wait_value(query, 0.123)
            prometheus.wait_value('tunewatch_run_step{run="llama-sft"}', 201)
            prometheus.wait_value('tunewatch_run_points_total{run="llama-sft"}', 201)
            prometheus.wait_value('tunewatch_run_status{run="llama-sft",status="training"}', 1)
            prometheus.wait_value("tunewatch_recording_failed", 0)
            prometheus.wait_value('up{job="tunewatch"}', 1)
            # Every query of the Grafana dashboard is PromQL this Prometheus accepts.
            for query in dashboard_queries():
                prometheus.query(query.replace("$instance", ".*").replace("$run", ".*"))
        assert daemon.stop() == 0


def test_the_textfile_is_written_atomically_checked_by_promtool_and_restored_on_restart(
    tmp_path: Path,
) -> None:
    require_binaries()
    run = tmp_path / "runs" / "qwen-dpo"
    write_log(run, [1.5, 1.25, math.nan])
    textfiles = tmp_path / "textfile"
    config = config_file(tmp_path, f'textfile_dir = "{textfiles}"\ntextfile_interval_s = 0.2')
    prom = textfiles / "tunewatch.prom"
    with DaemonProcess(tmp_path) as daemon:
        daemon.start(str(run), config=config)
        written = b'tunewatch_run_points_total{run="qwen-dpo"} 3.0'
        daemon.wait_for(lambda: prom.exists() and written in prom.read_bytes(), what="the file")
        first = parse(prom.read_text())
        assert daemon.stop() == 0
    loss = value(first, "tunewatch_run_loss", run="qwen-dpo")
    assert loss is not None and math.isnan(loss)
    assert value(first, "tunewatch_run_points_total", run="qwen-dpo") == 3
    assert [p.name for p in textfiles.iterdir()] == ["tunewatch.prom"], "no temp file left"
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=prom.read_bytes(), capture_output=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    prom.unlink()
    with DaemonProcess(tmp_path) as daemon:  # nothing new to read: every value from the store
        daemon.start(str(run), config=config)
        daemon.wait_for(prom.exists, what="the textfile after a restart")
        again = parse(prom.read_text())
        assert daemon.stop() == 0
    for name in ("tunewatch_run_points_total", "tunewatch_run_step", "tunewatch_run_learning_rate"):
        assert again[name] == first[name], name
    assert math.isnan(value(again, "tunewatch_run_loss", run="qwen-dpo") or 0.0)


def test_a_port_taken_shows_in_tunewatch_plugins_and_recording_goes_on(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "gemma-lora"
    write_log(run, [3.0, 2.0])
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = config_file(tmp_path, f'listen = "127.0.0.1:{port}"\nretry_s = 0.5')
        with DaemonProcess(tmp_path) as daemon:
            daemon.start(str(run), config=config)

            def listed() -> str:
                return daemon.cli("--config", str(config), "plugins", check=False).stdout

            daemon.wait_for(lambda: "cannot listen" in listed(), what="the failure listed")
            line = next(x for x in listed().splitlines() if x.startswith("prometheus"))
            assert f"FAILED in the running daemon: cannot listen on 127.0.0.1:{port}" in line
            write_log(run, [1.0], first_step=3)
            daemon.wait_for(
                lambda: (daemon.run_status("gemma-lora") or {}).get("loss") == 1.0,
                what="recording to go on",
            )
            assert daemon.log().count("cannot listen on") == 1, "logged once, not per retry"
            holder.close()  # the port is free: the exporter listens, and is no longer FAILED
            daemon.wait_for(
                lambda: (
                    "FAILED"
                    not in next(x for x in listed().splitlines() if x.startswith("prometheus"))
                ),
                what="the failure cleared",
            )
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                assert b"tunewatch_run_loss" in reply.read()
            assert daemon.stop() == 0
