"""`tunewatch demo`: a real tiny training run under a real `tunewatch run`, narrated live.

Three processes, as on a real box: the daemon (`tunewatch run`, every plugin on), the trainer
(`python -m tunewatch.plugins.demo.train`, a real `transformers.Trainer` on CPU), and this one,
which drops a flawed data file into the run's inbox partway, reads the state database the
daemon writes to show each event as it happens, and writes the report at the end.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewatch.daemon.plugin import CommandContext
from tunewatch.daemon.text import printable

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# How long the trainer and the daemon get, together, to stop after SIGTERM before they are killed.
STOP_WAIT_S = 20.0
RUN_NAME = "demo-run"
POLL_S = 0.5
START_TIMEOUT_S = 60.0
# After training: time for the last snapshots' comparisons and the inbox validation.
SETTLE_TIMEOUT_S = 120.0
INBOX_AT_STEP = 30  # the flawed data file is dropped once training passes this step
SHOWN_EVENTS = 14
CONFIG = """\
[daemon]
runs = [{run!r}]
state_dir = {state!r}

[inbox]
settle_s = 1.0

[notify]
# Two minutes hold what a real run spreads over hours: let every notification through.
max_per_window = 50

[compare]
device = "cpu"
max_new_tokens = 8
repeats = 2
examples = 3
"""
FLAWED_DATA = [
    {"instruction": "Add 2 and 3.", "input": "", "output": "The sum is 5."},
    {"instruction": "Add 2 and 3.", "input": "", "output": "The sum is 5."},
    {"instruction": "Name a colour.", "input": "", "output": ""},
    *({"instruction": f"Add {i} and {i}.", "input": "", "output": f"{2 * i}"} for i in range(6)),
]
BROKEN_LINE = '{"instruction": "Translate hello", "output": "bonjour"\n'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep", type=Path, help="run the demo in this new folder and keep it to explore"
    )
    parser.add_argument("--no-notifications", action="store_true", help="no desktop notifications")
    parser.add_argument(
        "--pace-s", type=float, default=0.35, help="seconds added to each training step"
    )


def run(ctx: CommandContext) -> int:
    from rich.console import Console

    args = ctx.args
    console = Console()
    if importlib.util.find_spec("accelerate") is None:
        console.print(
            "The demo trains with transformers.Trainer, which needs accelerate: "
            'pip install "tunewatch[compare]"'
        )
        return EXIT_USAGE
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        console.print(f"{printable(str(args.keep))} is not empty: each demo starts fresh.")
        return EXIT_USAGE
    # Ctrl-C is how the demo stops. A shell without job control starts a background command
    # with SIGINT ignored, and Python then never raises KeyboardInterrupt: the demo could not
    # be stopped by SIGINT at all (`tunewatch run` installs its own handlers for the same reason).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="tunewatch-demo-"))
    scenario = Scenario(
        workdir,
        notifications=not args.no_notifications,
        pace_s=args.pace_s,
        kept=args.keep is not None,
    )
    try:
        return scenario.play(console)
    except KeyboardInterrupt:
        scenario.stop()
        console.print("\nStopped. Nothing was left running.")
        return EXIT_INTERRUPTED
    finally:
        scenario.stop()
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class Seen:
    """What the person has been shown so far."""

    events: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, severity, text)
    last_seq: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    artefacts: dict[str, str] = field(default_factory=dict)  # what -> path


class Scenario:
    def __init__(self, workdir: Path, *, notifications: bool, pace_s: float, kept: bool) -> None:
        self.workdir = workdir.resolve()
        self.kept = kept  # else the folder goes when the demo ends
        self.run_dir = self.workdir / RUN_NAME
        self.state = self.workdir / "state"
        self.config = self.workdir / "config.toml"
        self.notifications = notifications
        self.pace_s = pace_s
        self.daemon: subprocess.Popen[bytes] | None = None
        self.trainer: subprocess.Popen[bytes] | None = None
        self.seen = Seen()
        self.dropped = False
        self.report: Path | None = None

    # -- the story ------------------------------------------------------------------------

    def play(self, console: Any) -> int:
        from rich.live import Live

        self._prepare()
        self.daemon = self._spawn(self._daemon_command(), "daemon.log")
        self._wait_for(lambda: (self.state / "state.db").is_file(), START_TIMEOUT_S, "tunewatch")
        self.trainer = self._spawn(
            [
                sys.executable,
                "-m",
                "tunewatch.plugins.demo.train",
                str(self.run_dir),
                "--pace-s",
                str(self.pace_s),
            ],
            "train.log",
        )
        with Live(self._view(), console=console, refresh_per_second=4) as live:
            while self.trainer.poll() is None:
                self._step()
                live.update(self._view())
                time.sleep(POLL_S)
            if self.trainer.returncode != 0:
                self.stop()
                console.print(
                    f"The training run failed (exit {self.trainer.returncode}); its output is in "
                    f"{printable(str(self.workdir / 'train.log'))}"
                )
                return EXIT_FAILED
            deadline = time.monotonic() + SETTLE_TIMEOUT_S
            while not self._settled() and time.monotonic() < deadline:
                self._step()
                live.update(self._view())
                time.sleep(POLL_S)
            self.report = self._write_report()
            self._step()
            live.update(self._view())
        self.stop()
        console.print(self._summary())
        return EXIT_OK if self.trainer.returncode == 0 else EXIT_FAILED

    def _prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "inbox").mkdir(parents=True)  # a run opts in to validation this way
        self.config.write_text(
            CONFIG.format(run=str(self.run_dir), state=str(self.state)), encoding="utf-8"
        )

    def _daemon_command(self) -> list[str]:
        command = [sys.executable, "-m", "tunewatch.daemon", "--config", str(self.config), "run"]
        return command + ([] if self.notifications else ["--no-notifications"])

    def _spawn(self, command: list[str], log: str) -> subprocess.Popen[bytes]:
        with (self.workdir / log).open("ab") as out:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C is ours to handle: we stop them in order
                env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
            )

    def _step(self) -> None:
        self._read_events()
        if not self.dropped and self._training_step() >= INBOX_AT_STEP:
            self._drop_flawed_file()

    def _drop_flawed_file(self) -> None:
        # Written under a temporary name, then renamed: the inbox never reads half a file.
        part = self.run_dir / "inbox" / "my_data.jsonl.part"
        part.write_text("".join(json.dumps(r) + "\n" for r in FLAWED_DATA) + BROKEN_LINE)
        part.rename(part.with_suffix(""))
        self.dropped = True
        self.seen.events.append(("demo", "info", "dropped a flawed data file into the inbox"))

    def _settled(self) -> bool:
        counts = self.seen.counts
        compared = counts.get("comparison", 0) >= counts.get("snapshot", 0) - 1
        return compared and counts.get("validation", 0) >= 1

    def _training_step(self) -> int:
        try:
            status = json.loads((self.run_dir / "training_status.json").read_text())
        except (OSError, ValueError):
            return 0
        return int(status.get("current_step") or 0)

    def _read_events(self) -> None:
        from tunewatch.daemon.store import Store, StoreError

        try:
            store = Store(self.state / "state.db", readonly=True)
        except (StoreError, OSError):
            return
        try:
            rows = store.history(exclude_kinds=("resources", "metrics"))
        finally:
            store.close()
        for stored in rows:
            if stored.seq <= self.seen.last_seq:
                continue
            self.seen.last_seq = stored.seq
            row = stored.row
            self.seen.counts[row.kind] = self.seen.counts.get(row.kind, 0) + 1
            self.seen.events.append((row.kind, row.severity, row.summary))
            self._note_artefact(row.kind, row.data)

    def _note_artefact(self, kind: str, data: dict[str, Any]) -> None:
        path = data.get("report_path") or data.get("path")
        if kind in ("snapshot", "comparison", "validation") and path:
            self.seen.artefacts[kind] = str(path)

    def _write_report(self) -> Path | None:
        import datetime as dt

        from tunewatch.plugins.report.generate import generate_report

        now = dt.datetime.now().astimezone()
        written = generate_report(
            self.state / "state.db",
            self.workdir / "reports",
            since=now.timestamp() - 3600.0,
            until=now.timestamp(),
            stamp=now,
        )
        self.seen.events.append(("report", "info", f"daily report written: {written.health}"))
        self.seen.artefacts["report"] = str(written.markdown)
        return written.markdown

    def stop(self) -> None:
        """The trainer and the daemon (SIGTERM: both stop cleanly); idempotent.

        Both are told at once and share one deadline, so Ctrl-C takes as long as the slower of
        the two, not their sum; the daemon exits within its own stop grace (15 s) whatever is
        stuck, and anything still running after `STOP_WAIT_S` is killed.
        """
        running = [c for c in (self.trainer, self.daemon) if c is not None and c.poll() is None]
        for child in running:
            child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        for child in running:
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def _wait_for(self, ready: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if self.daemon is not None and self.daemon.poll() is not None:
                raise SystemExit(f"{what} exited early; see {self.workdir / 'daemon.log'}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start in {timeout_s:g} s")
            time.sleep(0.1)

    # -- what the person sees ------------------------------------------------------------

    def _view(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        step = self._training_step()
        header = Text(f"tunewatch demo · training {RUN_NAME}: step {step} / 120", style="bold")
        lines = [header, Text("")]
        for kind, severity, text in self.seen.events[-SHOWN_EVENTS:]:
            style = {"critical": "bold red", "warning": "yellow"}.get(severity, "")
            lines.append(Text(f"  {kind:<12} {printable(text)}", style=style))
        return Group(*lines)

    def _summary(self) -> str:
        c = self.seen.counts
        lines = [
            "",
            "What you just saw:",
            f"  - {c.get('anomaly', 0)} anomalies recorded (the blown-up learning rate among them)",
            f"  - {c.get('best_model', 0)} new best models, {c.get('snapshot', 0)} snapshots kept",
            f"  - {c.get('comparison', 0)} comparisons of each new best with the previous one",
            f"  - {c.get('validation', 0)} data file validated from the inbox",
            (
                "  - no report"
                if self.report is None
                else f"  - a report with its chart: {self.report}"
            )
            if self.kept
            else "  - a report with its chart",
            "",
        ]
        if self.kept:
            lines += [
                f"Everything is in {self.workdir}. Try next:",
                f"  tunewatch --config {self.config} status",
                f"  tunewatch --config {self.config} events --kind anomaly",
            ]
        else:
            lines += [
                "The demo's folder is gone; `tunewatch demo --keep DIR` keeps it to explore.",
                "Try next:",
            ]
        lines += [
            "  tunewatch run ~/runs/your-run        # watch your own training",
            "  tunewatch doctor                     # what this machine still needs",
        ]
        return "\n".join(printable(line) for line in lines)
