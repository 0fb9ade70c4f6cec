"""A real Alertmanager (Debian's prometheus-alertmanager) on a loopback port, and the webhook it
notifies, so a test sees what on-call would: the alerts in its API and its notifications."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fixtures.local_servers import free_port, require_binaries

BINARY = "prometheus-alertmanager"


def require_alertmanager() -> str:
    """The binary's path; skipped on a workstation without it, a failure under CI."""
    require_binaries((BINARY,), "prometheus-alertmanager", "the sender against a real server")
    path = shutil.which(BINARY)
    assert path is not None
    return path


def nan_loss_labels(run: str, cluster: str) -> dict[str, str]:
    """The labels Alertmanager shows for a NaN loss in `run`, from this machine, in `cluster`."""
    return {
        "alertname": "TunewatchNonFinite",
        "run": run,
        "kind": "non_finite",
        "severity": "critical",
        "metric": "loss",
        "host": socket.gethostname(),
        "cluster": cluster,
    }


def eventually(check: Callable[[], Any], timeout_s: float = 20.0, what: str = "") -> Any:
    """Poll `check` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.1)


class Notifications:
    """The webhook receiver Alertmanager notifies (send_resolved on): every alert it told of."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                sink.received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def alerts(self, status: str | None = None) -> list[dict[str, Any]]:
        """Each alert of each notification, in order; only those of `status` if given."""
        found = [a for n in list(self.received) for a in n["alerts"]]
        return [a for a in found if status is None or a["status"] == status]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class AlertmanagerServer:
    """`prometheus-alertmanager` on 127.0.0.1, routing everything to `notifications` at once."""

    def __init__(self, workdir: Path, notifications: Notifications) -> None:
        self.binary = require_alertmanager()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        (workdir / "am.yml").write_text(
            "route:\n"
            "  receiver: sink\n"
            "  group_by: ['alertname', 'run']\n"
            "  group_wait: 1s\n"
            "  group_interval: 1s\n"
            "  repeat_interval: 1h\n"
            "receivers:\n"
            "  - name: sink\n"
            "    webhook_configs:\n"
            f"      - url: {notifications.url}\n"
            "        send_resolved: true\n"
        )

    def start(self, *, basic_auth: tuple[str, str] | None = None) -> None:
        """Start it; with `basic_auth` (user, bcrypt hash) its API asks for that login."""
        web = []
        if basic_auth is not None:
            user, hashed = basic_auth
            (self.workdir / "web.yml").write_text(f"basic_auth_users:\n  {user}: '{hashed}'\n")
            web = [f"--web.config.file={self.workdir / 'web.yml'}"]
        log = (self.workdir / "alertmanager.log").open("ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.workdir / 'am.yml'}",
                f"--storage.path={self.workdir}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                *web,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        eventually(self._ready, 30, "Alertmanager to be ready")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = (self.workdir / "alertmanager.log").read_text(errors="replace")
            raise AssertionError(f"alertmanager exited {self.proc.returncode}:\n{log}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError as exc:
            return exc.code == 401  # up, and asking for the login
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        self.proc = None

    def alerts(self) -> list[dict[str, Any]]:
        """GET /api/v2/alerts: the alerts Alertmanager holds now (a resolved one is not listed)."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as response:
            found: list[dict[str, Any]] = json.loads(response.read())
        return found

    def alert(self, **labels: str) -> dict[str, Any] | None:
        """The listed alert whose labels include `labels`, if any."""
        for alert in self.alerts():
            if labels.items() <= alert["labels"].items():
                return alert
        return None
