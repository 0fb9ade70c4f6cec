"""Memory alerts: a real trainer process whose memory really grows, and the host's threshold."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tunewatch.plugins.resources.config import ResourcesConfig
from tunewatch.plugins.resources.episodes import EpisodeGate
from tunewatch.plugins.resources.findings import Finding
from tunewatch.plugins.resources.memory_watch import (
    HostMemory,
    TrainerMemory,
    judge_host_memory,
    judge_trainer_memory,
)
from tunewatch.plugins.resources.watch import ResourceWatch

from .conftest import MiB, run_row

GiB = 2**30
# A trainer that grows by a step of real, touched memory each time it is told to, and says so.
GROWING = """
import sys
held = []
for line in sys.stdin:
    held.append(b"\\x01" * int(line))
    print("grown", flush=True)
"""


class Trainer:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", GROWING],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def grow(self, size: int) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{size}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline() == "grown\n"

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def trainer() -> Iterator[Trainer]:
    started = Trainer()
    yield started
    started.stop()


class Minutes:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def trainer_findings(watch: ResourceWatch, run_dir: Path, pid: int) -> list[Finding]:
    found = watch.observe([run_row(run_dir, pid=pid)]).findings
    return [f for f in found if f.resource == "trainer_memory"]


def test_a_trainer_whose_memory_really_grows_is_told_once_and_recovers_when_it_ends(
    tmp_path: Path, trainer: Trainer
) -> None:
    clock = Minutes()
    # A host with 8 GiB free below the 90 % line: at 64 MiB a minute, reached in about 2 h...
    host = HostMemory(total_bytes=32 * GiB, used_bytes=int(32 * GiB * 0.9) - 8 * GiB)
    config = ResourcesConfig(gpu=False, memory_warn_hours=3.0)
    watch = ResourceWatch(config, host_memory=lambda: host, clock=clock)
    gate = EpisodeGate(recover_samples=2, cooldown_s=3600)
    told = []
    for _ in range(5):
        trainer.grow(64 * MiB)
        opened, _ = gate.update(trainer_findings(watch, tmp_path, trainer.proc.pid), clock.now)
        told.extend(opened)
        clock.now += 60
    (alert,) = told
    assert alert.finding.run == "run-a" and alert.finding.severity == "critical" and alert.push
    summary = alert.finding.summary
    assert summary.startswith(f"The trainer of run-a (pid {trainer.proc.pid}) grows ")
    assert "memory reaches 90% in 2." in summary and summary.endswith("h at this rate")

    trainer.stop()
    recovered = []
    for _ in range(2):
        clock.now += 60
        recovered.extend(gate.update(trainer_findings(watch, tmp_path, trainer.proc.pid), 0)[1])
    (recovery,) = recovered
    assert recovery.resource == "trainer_memory" and recovery.run == "run-a" and recovery.push


def test_a_trainer_whose_memory_holds_steady_is_not_told(tmp_path: Path, trainer: Trainer) -> None:
    clock = Minutes()
    host = HostMemory(total_bytes=32 * GiB, used_bytes=20 * GiB)
    watch = ResourceWatch(ResourcesConfig(gpu=False), host_memory=lambda: host, clock=clock)
    trainer.grow(64 * MiB)
    for _ in range(6):
        assert trainer_findings(watch, tmp_path, trainer.proc.pid) == []
        clock.now += 60


def test_real_host_memory_over_a_low_threshold_is_critical(tmp_path: Path) -> None:
    used = psutil.virtual_memory().percent / 100
    config = ResourcesConfig(gpu=False, memory_warn_fraction=max(used / 2, 0.01))
    found = ResourceWatch(config).observe([run_row(tmp_path)]).findings
    (memory,) = [f for f in found if f.resource == "memory"]
    assert memory.severity == "critical" and memory.summary.startswith("Memory ")
    assert "OOM killer" in memory.advice


def test_host_memory_threshold() -> None:
    assert judge_host_memory(HostMemory(100, 89), 0.9) is None
    finding = judge_host_memory(HostMemory(100 * GiB, 93 * GiB), 0.9)
    assert finding is not None
    assert finding.summary == "Memory 93% used (7.0 GiB available; warning at 90%)"


def test_a_trainer_over_the_threshold_by_itself_is_told_and_a_full_host_is_told_once() -> None:
    host = HostMemory(100 * GiB, 50 * GiB)
    big = TrainerMemory("run-a", 42, 95 * GiB, None)
    finding = judge_trainer_memory(big, host, 0.9, 3600)
    assert finding is not None and "uses 95.0 GiB, over 90% of RAM" in finding.summary
    growing = TrainerMemory("run-a", 42, 40 * GiB, growth_per_s=float(GiB))
    full = HostMemory(100 * GiB, 95 * GiB)
    assert judge_trainer_memory(growing, full, 0.9, 3600) is None  # the host's finding says it
    assert judge_trainer_memory(growing, host, 0.9, 3600) is not None  # 40 GiB to go: 40 s
    slow = TrainerMemory("run-a", 42, 40 * GiB, growth_per_s=1000.0)
    assert judge_trainer_memory(slow, host, 0.9, 3600) is None
