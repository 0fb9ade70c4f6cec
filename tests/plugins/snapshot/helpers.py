"""Real checkpoint folders written by the tests, and a handle on a running snapshot plugin."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.events import BestModelFound, CheckpointSaved, SnapshotCreated
from tunewatch.plugins.snapshot import SnapshotPlugin

# What structlog.testing.capture_logs() collects: one mapping per log call.
LogEntries = list[MutableMapping[str, Any]]


def write_checkpoint(run_dir: Path, step: int, *, seed: int = 0, state: bool = True) -> Path:
    """A Hugging Face-shaped `checkpoint-<step>/`, written the way the Trainer writes one:
    weights first, `trainer_state.json` last."""
    folder = run_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    rng = hashlib.sha256(f"{step}-{seed}".encode()).digest()
    (folder / "model.safetensors").write_bytes(rng * 4096)  # 128 KiB
    (folder / "optimizer.pt").write_bytes(rng[::-1] * 2048)
    (folder / "rng_state.pth").write_bytes(b"\x80\x04not-a-real-pickle")
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')
    if state:
        (folder / "trainer_state.json").write_text(f'{{"global_step": {step}, "log_history": []}}')
    return folder


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


async def until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@dataclass
class Harness:
    """A started SnapshotPlugin, what it published and what it logged."""

    bus: EventBus
    plugin: SnapshotPlugin
    logs: LogEntries
    created: list[SnapshotCreated] = field(default_factory=list)

    def best(
        self,
        run: str,
        step: int,
        value: float,
        *,
        metric: str = "eval_loss",
        checkpoint: str | None = None,
        historical: bool = False,
    ) -> None:
        self.bus.publish(
            BestModelFound(run, step, metric, value, checkpoint, historical=historical)
        )

    def saved(self, run: str, folder: Path, step: int) -> None:
        self.bus.publish(CheckpointSaved(run, step, str(folder), "checkpoint-state"))

    async def snapshots(self, count: int, within: float = 10.0) -> list[SnapshotCreated]:
        await until(lambda: len(self.created) >= count, within)
        return self.created

    def skips(self) -> LogEntries:
        return [e for e in self.logs if e["event"] == "no snapshot of this best model"]

    async def skipped(self, count: int = 1, within: float = 10.0) -> list[str]:
        await until(lambda: len(self.skips()) >= count, within)
        return [str(e["reason"]) for e in self.skips()]


StartPlugin = Callable[..., Awaitable[Harness]]


def same_file(a: Path, b: Path) -> bool:
    """Whether two names are hardlinks of one file."""
    sa, sb = os.stat(a), os.stat(b)
    return (sa.st_ino, sa.st_dev) == (sb.st_ino, sb.st_dev)
