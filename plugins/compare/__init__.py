"""The compare plugin: A/B comparison of two snapshots (speed, quality, size, significance).

`tunewatch compare A B` runs it by hand. In the daemon, each new best snapshot of a run is
compared with the run's previous best (or a configured baseline) in a child process at low
priority, one comparison at a time; the report goes to `reports/comparisons/` of the run and a
`ComparisonFinished` tells the person. Nothing imported here at module level imports torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import psutil

from tunewatch.daemon.atomic import write_atomic
from tunewatch.daemon.config import PositiveFloat, PositiveInt
from tunewatch.daemon.events import ComparisonFinished, SnapshotCreated
from tunewatch.daemon.plugin import CommandRegistry, PluginContext
from tunewatch.plugins.compare.request import ComparisonOutcome, ComparisonRequest
from tunewatch.plugins.compare.weights import RecommendWeights

# The last lines of a crashed child's stderr that go into the report of its failure.
STDERR_TAIL_LINES = 5
# Longest part of a report's file name taken from a snapshot's directory name.
NAME_CHARS = 60


@dataclass(frozen=True, slots=True)
class CompareConfig:
    enabled: bool = True
    # Compare each new best snapshot with the run's previous best in the daemon.
    on_new_best: bool = True
    # A snapshot every new best is compared with instead of the previous best ("": none).
    baseline: str = ""
    # Test items (any format `tunewatch validate` reads); relative paths are in the run dir.
    test_file: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # "auto" and too little free GPU memory for the model plus the margin: run on the CPU,
    # or wait `defer_retry_s` and try again. The training run must never go out of memory.
    when_gpu_short: Literal["cpu", "defer"] = "cpu"
    gpu_margin_gb: float = 2.0
    defer_retry_s: PositiveFloat = 600.0
    max_new_tokens: PositiveInt = 32
    repeats: PositiveInt = 5
    examples: int = 5
    timeout_s: PositiveFloat = 3600.0
    # Niceness of the comparison process (0-19; it also gets the idle I/O class).
    nice: int = 19
    reports: str = "reports/comparisons"
    # Once quality does not decide: how much decode speed, prefill speed and size count, and
    # the relative difference below which two figures are the same.
    weight_decode_speed: float = 1.0
    weight_prefill_speed: float = 0.25
    weight_size: float = 0.5
    min_relative_difference: float = 0.05

    def weights(self) -> RecommendWeights:
        return RecommendWeights(
            decode_speed=self.weight_decode_speed,
            prefill_speed=self.weight_prefill_speed,
            size=self.weight_size,
            min_relative_difference=self.min_relative_difference,
        )

    def request(self, a: str, b: str, test_file: str | None, **overrides: Any) -> ComparisonRequest:
        """What a comparison of `a` and `b` is asked to do, by this section and `overrides`."""
        request = ComparisonRequest(
            a=a,
            b=b,
            test_file=test_file,
            device=self.device,
            max_new_tokens=self.max_new_tokens,
            repeats=self.repeats,
            examples=self.examples,
            gpu_margin_bytes=int(self.gpu_margin_gb * 2**30),
            when_gpu_short=self.when_gpu_short,
            weights=asdict(self.weights()),
        )
        return replace(request, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True, slots=True)
class _Job:
    run: str
    a: str  # the previous best (or the baseline)
    b: str  # the new best
    step: int


class ComparePlugin:
    """Compares every new best snapshot with the previous one, one comparison at a time."""

    name: ClassVar[str] = "compare"
    Config: ClassVar[type[CompareConfig]] = CompareConfig

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self.config: CompareConfig = ctx.config
        self._jobs: asyncio.Queue[_Job] = asyncio.Queue()
        self._unsubscribe: Any = None
        self._worker: asyncio.Task[None] | None = None
        self._retries: set[asyncio.TimerHandle] = set()
        self._child: asyncio.subprocess.Process | None = None

    @classmethod
    def register_commands(cls, commands: CommandRegistry) -> None:
        from tunewatch.plugins.compare import command

        commands.add(
            "compare",
            help="compare two model snapshots: speed, quality, size, which to use",
            add_arguments=command.add_arguments,
            run=command.run,
        )

    @classmethod
    def doctor_checks(cls, config: CompareConfig, settings: Any) -> list[Any]:
        from tunewatch.plugins.compare.doctor import checks

        return checks(config)

    async def start(self) -> None:
        self.config.weights()  # a bad weight is a config error at start, not at the first best
        if not (self.config.enabled and self.config.on_new_best):
            return
        self._unsubscribe = self.ctx.bus.subscribe(
            SnapshotCreated, self._on_snapshot, name="compare:snapshot"
        )
        self._worker = self.ctx.spawn(self._work(), name="comparisons")

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        for handle in self._retries:
            handle.cancel()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        _kill(self._child)

    async def _on_snapshot(self, event: SnapshotCreated) -> None:
        store = self.ctx.store
        key = f"best:{event.run}"
        saved = await store.call(store.store.plugin_get, self.name, key)
        previous = self.config.baseline or saved
        await store.call(store.store.plugin_put, self.name, key, event.path)
        if not previous or previous == event.path:
            return  # the run's first best: nothing to compare with yet
        if not await asyncio.to_thread(Path(previous).is_dir):
            self.ctx.log.info("previous best snapshot is gone; not compared", path=previous)
            return
        self._jobs.put_nowait(_Job(event.run, previous, event.path, event.step))

    async def _work(self) -> None:
        while True:
            job = await self._jobs.get()
            try:
                await self._compare(job)
            except Exception:  # one comparison's failure must not end the others
                self.ctx.log.exception("comparison failed", a=job.a, b=job.b)

    async def _compare(self, job: _Job) -> None:
        run_dir = await self._run_dir(job.run)
        outcome = await self._run_child(self._request(job, run_dir))
        if outcome.status == "deferred":
            self.ctx.log.info(
                "comparison deferred", why=outcome.message, retry_s=self.config.defer_retry_s
            )
            loop = asyncio.get_running_loop()
            handle = loop.call_later(self.config.defer_retry_s, self._retry, job)
            self._retries.add(handle)
            return
        a, b = Path(job.a).name, Path(job.b).name
        if outcome.comparison is None:
            self.ctx.log.warning("comparison failed", a=job.a, b=job.b, why=outcome.message)
            summary = f"comparison of {a} and {b} failed: {outcome.message}"
            self.ctx.bus.publish(
                ComparisonFinished(job.run, job.a, job.b, None, summary, None, failed=True)
            )
            return
        from tunewatch.plugins.compare import render  # (rich: only once there is a report)

        comparison = outcome.comparison
        folder = self.ctx.run_path(run_dir, self.config.reports)
        stem = f"{_file_name(a)}-vs-{_file_name(b)}"
        report = folder / f"{stem}.md"
        write_atomic(folder / f"{stem}.json", render.dumps_json(comparison))
        write_atomic(report, render.render_markdown(comparison, examples=self.config.examples))
        choice = comparison.recommendation.choice if comparison.recommendation else None
        winner = {"a": job.a, "b": job.b}.get(choice or "")
        summary = render.notification_summary(comparison)
        self.ctx.log.info("comparison finished", a=job.a, b=job.b, report=str(report))
        self.ctx.bus.publish(
            ComparisonFinished(job.run, job.a, job.b, winner, summary, str(report))
        )

    def _retry(self, job: _Job) -> None:
        self._retries = {h for h in self._retries if not h.cancelled() and h.when() > 0}
        self._jobs.put_nowait(job)

    def _request(self, job: _Job, run_dir: Path) -> ComparisonRequest:
        test_file = self.config.test_file
        path = str(self.ctx.run_path(run_dir, test_file)) if test_file else None
        return self.config.request(job.a, job.b, path)

    async def _run_dir(self, run: str) -> Path:
        known = self.ctx.run_dirs.get(run)
        if known is not None:
            return known
        store = self.ctx.store
        for row in await store.call(store.store.runs):
            if row.name == run:
                return Path(row.path)
        return self.ctx.settings.state_dir() / "runs" / _file_name(run)

    async def _run_child(self, request: ComparisonRequest) -> ComparisonOutcome:
        """Run one comparison in its own process, at low priority, within `timeout_s`."""
        with tempfile.TemporaryDirectory(prefix="tunewatch-compare-") as tmp:
            request_path, out_path = Path(tmp) / "request.json", Path(tmp) / "outcome.json"
            request.write(request_path)
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tunewatch.plugins.compare.child",
                "--request",
                str(request_path),
                "--out",
                str(out_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group: a timeout kills it all
            )
            self._child = child
            _lower_priority(child.pid, self.config.nice)
            try:
                _, stderr = await asyncio.wait_for(child.communicate(), self.config.timeout_s)
            except TimeoutError:
                _kill(child)
                await child.wait()
                return ComparisonOutcome(
                    "error", f"timed out after {self.config.timeout_s:g} s ([compare] timeout_s)"
                )
            finally:
                self._child = None
            if child.returncode != 0 or not out_path.is_file():
                return ComparisonOutcome(
                    "error",
                    f"the comparison process {_exit_text(child.returncode)}: "
                    f"{_tail(stderr) or 'no error output'}",
                )
            return ComparisonOutcome.read(out_path)


def _lower_priority(pid: int, nice: int) -> None:
    """CPU and disk go to the training run first."""
    try:
        process = psutil.Process(pid)
        process.nice(max(0, min(19, nice)))
        if hasattr(psutil, "IOPRIO_CLASS_IDLE"):
            process.ionice(psutil.IOPRIO_CLASS_IDLE)
    except (psutil.Error, OSError):
        pass  # gone already, or not allowed: it still runs, at normal priority


def _kill(child: asyncio.subprocess.Process | None) -> None:
    if child is None or child.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def _tail(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return " | ".join(line.strip() for line in lines[-STDERR_TAIL_LINES:])


def _file_name(name: str) -> str:
    """A safe file-name part from a directory or run name (hostile names included)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "snapshot"
    return safe[:NAME_CHARS]
