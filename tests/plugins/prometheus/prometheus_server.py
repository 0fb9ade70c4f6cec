"""A real Prometheus server (Debian package `prometheus`) for tests, on loopback ports.

Missing binaries skip these tests on a workstation and fail them in CI (as the notification
server's `require_binaries`).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fixtures.local_servers import free_port
from fixtures.local_servers import require_binaries as require_binaries_of

BINARIES = ("prometheus", "promtool")


def require_binaries() -> None:
    require_binaries_of(BINARIES, "prometheus", "the exporter against a real server")


@dataclass(frozen=True)
class PrometheusServer:
    url: str
    log: Path

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector `promql` evaluates to now (the `result` of /api/v1/query)."""
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(address, timeout=10) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def wait_value(self, promql: str, wanted: float, timeout_s: float = 60) -> float:
        """Poll until `promql` returns one sample equal to `wanted`; the value."""
        deadline = time.monotonic() + timeout_s
        seen: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            seen = self.query(promql)
            if len(seen) == 1 and float(seen[0]["value"][1]) == wanted:
                return wanted
            time.sleep(0.5)
        raise AssertionError(f"{promql} never became {wanted}; last {seen}\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@contextmanager
def prometheus_scraping(home: Path, target: str) -> Iterator[PrometheusServer]:
    """Prometheus scraping `target` ("127.0.0.1:PORT") every second, its data in `home`."""
    require_binaries()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: tunewatch\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    log = home / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = PrometheusServer(f"http://127.0.0.1:{port}", log)
    try:
        _wait_ready(server, proc)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def _wait_ready(server: PrometheusServer, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited {proc.returncode}:\n{server.tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"prometheus not ready within 60 s:\n{server.tail()}")
