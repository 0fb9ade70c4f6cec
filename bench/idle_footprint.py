"""Benchmark: memory and CPU of an idle `tunewatch run` watching five realistic runs.

The daemon runs as a real subprocess (its own XDG dirs, READY=1 learned on a real NOTIFY_SOCKET)
over five run directories, each with a 20,000-line trainer_log.jsonl, a status file and two
checkpoints (trainer_state.json plus a 50 MB model file). Measured in the same window: one
`tail -F` on the same five logs (the floor) and a bare Python interpreter (Python's own RSS).

    .venv/bin/python bench/idle_footprint.py                  # about 80 s
    .venv/bin/python bench/idle_footprint.py --seconds 10 --log-lines 2000 --model-mb 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

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
from simulate_run import loss_at, write_bulk, write_status

RUNS = 5
LOG_NAME = "trainer_log.jsonl"
# Substrings of a mapped file's path that mean torch or transformers got into the daemon.
FORBIDDEN_MAPS = ("/torch/", "libtorch", "/transformers/")
FORBIDDEN_MODULES = frozenset({"torch", "transformers"})
READY_TIMEOUT_S = 300.0
GOAL_RSS_MB = 80.0
GOAL_CPU_PERCENT = 0.5
EVAL_EVERY = 500


# -- a realistic run directory --------------------------------------------------------------------


def trainer_state(step: int, total: int, seed: int) -> dict[str, object]:
    """A Hugging Face Trainer `trainer_state.json` as saved at `step` (logging every step)."""
    rng = random.Random(seed)
    history: list[dict[str, object]] = []
    for s in range(1, step + 1):
        epoch = round(3.0 * s / total, 4)
        history.append(
            {
                "epoch": epoch,
                "grad_norm": round(abs(rng.gauss(1.0, 0.3)), 4),
                "learning_rate": 5e-5 * (1 - s / (total + 1)),
                "loss": round(loss_at(s, total, rng), 4),
                "step": s,
            }
        )
        if s % EVAL_EVERY == 0:
            history.append(
                {
                    "epoch": epoch,
                    "eval_loss": round(loss_at(s, total, rng, noise=0.01) + 0.05, 4),
                    "eval_runtime": 41.2,
                    "eval_samples_per_second": 48.5,
                    "eval_steps_per_second": 6.07,
                    "step": s,
                }
            )
    return {
        "best_metric": None,
        "best_model_checkpoint": None,
        "epoch": round(3.0 * step / total, 4),
        "eval_steps": EVAL_EVERY,
        "global_step": step,
        "is_hyper_param_search": False,
        "is_local_process_zero": True,
        "is_world_process_zero": True,
        "log_history": history,
        "logging_steps": 1,
        "max_steps": total,
        "num_input_tokens_seen": 0,
        "num_train_epochs": 3,
        "save_steps": total // 2,
        "total_flos": 1.2e17 * step / total,
        "train_batch_size": 4,
        "trial_name": None,
        "trial_params": None,
    }


def write_zeros(path: Path, size: int) -> None:
    # Real zeros rather than a sparse file: the page cache holds what a real run's disk would.
    chunk = bytes(MIB)
    with path.open("wb") as f:
        for _ in range(size // MIB):
            f.write(chunk)
        f.write(bytes(size % MIB))


def prepare_run(run_dir: Path, lines: int, model_bytes: int, seed: int) -> None:
    run_dir.mkdir(parents=True)
    write_bulk(run_dir / LOG_NAME, lines, seed=seed)
    write_status(run_dir, "training", lines, lines, loss_at(lines, lines, random.Random(seed)))
    for step in (lines // 2, lines):
        ckpt = run_dir / f"checkpoint-{step}"
        ckpt.mkdir()
        state = trainer_state(step, lines, seed)
        (ckpt / "trainer_state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
        write_zeros(ckpt / "model.safetensors", model_bytes)


# -- the processes --------------------------------------------------------------------------------


@dataclass
class Measured:
    """One process under measurement and what was sampled from it."""

    name: str
    popen: subprocess.Popen[bytes]
    rss_max: int = 0
    rss_final: int = 0
    uss_final: int | None = None
    peak_rss: int | None = None  # VmHWM: the high-water mark since the process started
    cpu_percent: float = 0.0
    threads: int = 0

    @property
    def proc(self) -> psutil.Process:
        return psutil.Process(self.popen.pid)

    def sample_rss(self) -> None:
        rss = int(self.proc.memory_info().rss)
        self.rss_max = max(self.rss_max, rss)
        self.rss_final = rss

    def finish(self, cpu_delta_s: float, wall_s: float) -> None:
        proc = self.proc
        self.sample_rss()
        self.cpu_percent = 100 * cpu_delta_s / wall_s
        self.threads = proc.num_threads()
        try:
            self.uss_final = int(proc.memory_full_info().uss)
        except (psutil.AccessDenied, AttributeError):
            self.uss_final = None
        self.peak_rss = vm_hwm(proc.pid)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(30)


def write_config(home: Path, watch_step_ms: int | None, extra: Sequence[str] = ()) -> None:
    """No config file means the documented defaults; one is written only to override the step
    or to add sections (`--toml '[prometheus]' --toml 'listen = "127.0.0.1:9464"'`)."""
    if watch_step_ms is None and not extra:
        return
    config = home / "config" / "tunewatch" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    lines = [] if watch_step_ms is None else ["[daemon]", f"watch_step_ms = {watch_step_ms}"]
    config.write_text("\n".join([*lines, *extra, ""]))


def start_daemon(
    home: Path, run_dirs: Sequence[Path], notify_path: Path, extra_env: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **dict(item.split("=", 1) for item in extra_env),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "NOTIFY_SOCKET": str(notify_path),
        # Every import the daemon ever makes is written to stderr: the proof that torch and
        # transformers stay out covers pure-Python modules, which memory maps cannot show.
        "PYTHONPROFILEIMPORTTIME": "1",
    }
    with (home / "daemon.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tunewatch.daemon", "run", "--no-notifications"]
            + [str(d) for d in run_dirs],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


# -- evidence about imports -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportEvidence:
    forbidden_maps: list[str]
    modules: list[str]
    top_level_cumulative_us: list[tuple[str, int]]

    @property
    def forbidden_modules(self) -> list[str]:
        return sorted({m for m in self.modules if m.split(".")[0] in FORBIDDEN_MODULES})


def import_evidence(proc: psutil.Process, log: Path) -> ImportEvidence:
    maps = [m.path for m in proc.memory_maps(grouped=True)]
    forbidden_maps = sorted({p for p in maps if any(f in p for f in FORBIDDEN_MAPS)})
    modules: list[str] = []
    top: dict[str, int] = {}
    for line in log.read_text(errors="replace").splitlines():
        # "import time:  self [us] | cumulative | imported package", nesting shown by indent.
        if not line.startswith("import time:") or "imported package" in line:
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3:
            continue
        name = parts[2].strip()
        modules.append(name)
        # A package's first import, with everything it pulled in; the daemon itself is excluded.
        if "." not in name and name != "tunewatch":
            top[name] = max(top.get(name, 0), int(parts[1]))
    ranked = sorted(top.items(), key=lambda kv: kv[1], reverse=True)
    return ImportEvidence(forbidden_maps, modules, ranked)


# What the daemon imports, in an order that charges each dependency its own cost: structlog
# imports rich.traceback whenever rich is installed, and asyncio brings in ssl.
IMPORT_ORDER = (
    "asyncio",
    "sqlite3",
    "orjson",
    "rich.traceback",
    "structlog",
    "aiofiles",
    "psutil",
    "watchfiles",
    "tunewatch.daemon.cli",
    "tunewatch.daemon.service",
)
_IMPORT_PROBE = """
import importlib, json, os, sys
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
print(json.dumps(["python", rss()]))
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError:
        continue
    print(json.dumps([name, rss()]))
"""


def import_rss() -> list[tuple[str, int]]:
    """RSS growth of a fresh interpreter as it imports what the daemon imports, in order.

    The daemon core first, then each installed plugin: the daemon loads every one it finds.
    """
    plugins = sorted({ep.module for ep in entry_points(group="tunewatch.plugins")})
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, *IMPORT_ORDER, *plugins],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    steps: list[tuple[str, int]] = []
    previous = 0
    for line in out.splitlines():
        name, rss = json.loads(line)
        steps.append((name, rss - previous))
        previous = rss
    return steps


# -- the measurement ------------------------------------------------------------------------------


def measure(processes: Sequence[Measured], seconds: float) -> None:
    cpu0 = [cpu_seconds(p.proc) for p in processes]
    wall0 = time.monotonic()
    end = wall0 + seconds
    while (now := time.monotonic()) < end:
        for p in processes:
            p.sample_rss()
        time.sleep(min(1.0, end - now))
    wall = time.monotonic() - wall0
    for p, before in zip(processes, cpu0, strict=True):
        p.finish(cpu_seconds(p.proc) - before, wall)


def _mb(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.1f}"


def report(
    processes: Sequence[Measured],
    evidence: ImportEvidence,
    imports: Sequence[tuple[str, int]],
    ready_s: float,
    args: argparse.Namespace,
) -> str:
    daemon, floor = processes[0], processes[1]
    step = "default" if args.watch_step_ms is None else f"{args.watch_step_ms} ms"
    env_note = f"; daemon env: {' '.join(args.env)}" if args.env else ""
    header = [
        "process",
        "RSS max MB",
        "RSS final MB",
        "USS MB",
        "peak RSS since start MB",
        "CPU % of one core",
        "threads",
        "RSS / tail",
    ]
    rows = [
        [
            p.name,
            _mb(p.rss_max),
            _mb(p.rss_final),
            _mb(p.uss_final),
            _mb(p.peak_rss),
            f"{p.cpu_percent:.3f}",
            str(p.threads),
            ratio(p.rss_max, floor.rss_max),
        ]
        for p in processes
    ]
    rss_ok = daemon.rss_max / MIB < GOAL_RSS_MB
    cpu_ok = daemon.cpu_percent < GOAL_CPU_PERCENT
    forbidden = evidence.forbidden_maps + evidence.forbidden_modules
    if forbidden:
        imports_line = f"torch/transformers in the daemon: YES: {', '.join(forbidden)}"
    else:
        imports_line = (
            f"torch/transformers in the daemon: no (no mapped file matches "
            f"{', '.join(FORBIDDEN_MAPS)}; none of the {len(evidence.modules)} modules it "
            "imported comes from torch or transformers)"
        )
    by_import = ", ".join(
        f"{name} {'+' if i else ''}{size / MIB:.1f} MB" for i, (name, size) in enumerate(imports)
    )
    slowest = evidence.top_level_cumulative_us[:8]
    top = ", ".join(f"{name} {us / 1000:.0f} ms" for name, us in slowest)
    return "\n".join(
        [
            f"machine: {machine_description()}",
            f"{RUNS} runs x ({args.log_lines} log lines, 2 checkpoints with a "
            f"{args.model_mb} MB model each); READY=1 after {ready_s:.2f} s of catch-up; "
            f"measured over {args.seconds:g} s after a {args.settle:g} s settle; "
            f"watch_step_ms: {step}{env_note}",
            "",
            markdown_table(header, rows),
            "",
            f"goals: RSS < {GOAL_RSS_MB:g} MB: {'yes' if rss_ok else 'NO'}; "
            f"idle CPU < {GOAL_CPU_PERCENT:g} %: {'yes' if cpu_ok else 'NO'}",
            imports_line,
            f"slowest packages the daemon imports (cumulative import time): {top}",
            f"RSS of a fresh interpreter importing the daemon step by step: {by_import}",
        ]
    )


def env_item(text: str) -> str:
    if "=" not in text or text.startswith("="):
        raise argparse.ArgumentTypeError(f"not KEY=VALUE: {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement window (s)")
    parser.add_argument("--settle", type=float, default=5.0, help="wait after READY=1 (s)")
    parser.add_argument("--log-lines", type=int, default=20_000, help="lines per trainer log")
    parser.add_argument("--model-mb", type=int, default=50, help="size of each dummy model (MB)")
    parser.add_argument(
        "--watch-step-ms", type=int, help="override [daemon] watch_step_ms (default: the default)"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        type=env_item,
        metavar="KEY=VALUE",
        help="extra environment for the daemon only, e.g. MALLOC_ARENA_MAX=1 (repeatable)",
    )
    parser.add_argument(
        "--toml",
        action="append",
        default=[],
        metavar="LINE",
        help="a line added to the daemon's config file, e.g. '[prometheus]' (repeatable)",
    )
    parser.add_argument("--no-bare-python", action="store_true", help="skip the interpreter floor")
    return parser


def run(home: Path, args: argparse.Namespace) -> str:
    run_dirs = [home / "runs" / f"run-{i}" for i in range(RUNS)]
    say(f"writing {RUNS} runs under {home}...")
    for i, run_dir in enumerate(run_dirs):
        prepare_run(run_dir, args.log_lines, args.model_mb * MIB, seed=i)
    write_config(home, args.watch_step_ms, args.toml)
    notify_path = home / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(0.2)
    processes: list[Measured] = []
    try:
        say("starting tunewatch run...")
        started = time.monotonic()
        daemon = Measured("tunewatch run", start_daemon(home, run_dirs, notify_path, args.env))
        processes.append(daemon)
        wait_ready(notify, daemon.popen, home / "daemon.log", READY_TIMEOUT_S)
        ready_s = time.monotonic() - started
        tail = subprocess.Popen(
            ["tail", "-F", "-n0", *(str(d / LOG_NAME) for d in run_dirs)],
            stdout=subprocess.DEVNULL,
        )
        processes.append(Measured(f"tail -F ({RUNS} logs)", tail))
        if not args.no_bare_python:
            bare = [sys.executable, "-c", "import time; time.sleep(1e9)"]
            processes.append(Measured("bare python (sleep)", subprocess.Popen(bare)))
        say(f"READY=1 after {ready_s:.2f} s; settling {args.settle:g} s...")
        time.sleep(args.settle)
        say(f"measuring for {args.seconds:g} s...")
        measure(processes, args.seconds)
        evidence = import_evidence(daemon.proc, home / "daemon.log")
    finally:
        for p in processes:
            p.stop()
        notify.close()
    return report(processes, evidence, import_rss(), ready_s, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    say(f"machine: {machine_description()}")
    with tempfile.TemporaryDirectory(prefix="tunewatch-footprint-") as tmp:
        print(run(Path(tmp), args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
