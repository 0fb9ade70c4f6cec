"""The compare plugin in the daemon: each new best snapshot against the previous one, in a real
child process, one at a time; refusals, crashes and timeouts reported, the daemon unharmed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
import structlog
from fixtures.tiny_models import write_malicious_pickle

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import Settings
from tunewatch.daemon.events import ComparisonFinished, SnapshotCreated
from tunewatch.daemon.history import to_row
from tunewatch.daemon.plugin import PluginContext
from tunewatch.daemon.store import AsyncStore
from tunewatch.plugins.compare import CompareConfig, ComparePlugin, _file_name

TINY_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}


class Harness:
    def __init__(self, store: AsyncStore, run_dir: Path, config: CompareConfig) -> None:
        self.bus = EventBus()
        self.finished: list[ComparisonFinished] = []
        self.bus.subscribe(ComparisonFinished, self.finished.append)
        self.run_dir = run_dir
        self.plugin = ComparePlugin(
            PluginContext(
                name="compare",
                bus=self.bus,
                store=store,
                config=config,
                settings=Settings(),
                log=structlog.get_logger("test"),
                run_dirs={"run-a": run_dir},
            )
        )

    def snapshot(self, step: int, path: Path) -> None:
        self.bus.publish(SnapshotCreated("run-a", step, str(path), str(path)))

    async def wait_for(self, count: int, timeout_s: float = 120.0) -> list[ComparisonFinished]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(self.finished) < count:
            assert asyncio.get_running_loop().time() < deadline, self.finished
            await asyncio.sleep(0.05)
        return self.finished


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AsyncStore]:
    opened = await AsyncStore.open(tmp_path / "state.db")
    yield opened
    await opened.close()


async def started(store: AsyncStore, run_dir: Path, **config: object) -> Harness:
    harness = Harness(store, run_dir, replace(CompareConfig(), **config))  # type: ignore[arg-type]
    await harness.plugin.start()
    return harness


async def stopped(harness: Harness) -> None:
    await harness.plugin.stop()
    await harness.bus.close()


def pickle_only(path: Path, marker: Path) -> Path:
    """A snapshot whose only weights are a pickle that would create `marker` if loaded."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(TINY_CONFIG))
    write_malicious_pickle(path / "pytorch_model.bin", marker)
    return path


async def test_the_first_best_of_a_run_has_nothing_to_be_compared_with(
    store: AsyncStore, tmp_path: Path
) -> None:
    harness = await started(store, tmp_path)
    harness.snapshot(100, pickle_only(tmp_path / "snapshots" / "step-100", tmp_path / "ran"))
    await asyncio.sleep(0.3)
    assert harness.finished == []
    assert harness.plugin._jobs.empty()
    await stopped(harness)


async def test_a_refused_snapshot_is_a_failed_comparison_that_says_why(
    store: AsyncStore, tmp_path: Path
) -> None:
    marker = tmp_path / "pickle-ran"
    harness = await started(store, tmp_path)
    harness.snapshot(100, pickle_only(tmp_path / "snapshots" / "step-100", marker))
    harness.snapshot(200, pickle_only(tmp_path / "snapshots" / "step-200", marker))
    (done,) = await harness.wait_for(1)
    assert done.failed and done.winner is None and done.report_path is None
    assert done.summary.startswith("comparison of step-100 and step-200 failed: ")
    assert "pickle" in done.summary and "safetensors" in done.summary
    assert not marker.exists()  # refused without unpickling anything
    assert to_row(done).severity == "warning"
    await stopped(harness)


def safetensors_named(path: Path) -> Path:
    """A snapshot that passes the file checks (config, *.safetensors); loading it takes time."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(TINY_CONFIG))
    (path / "model.safetensors").write_bytes(b"\0" * 64)
    return path


async def test_a_comparison_past_its_time_is_killed_and_reported(
    store: AsyncStore, tmp_path: Path
) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    harness = await started(store, tmp_path, timeout_s=0.3)
    marker = tmp_path / "ran"
    harness.snapshot(1, safetensors_named(tmp_path / "a"))
    harness.snapshot(2, safetensors_named(tmp_path / "b"))
    (done,) = await harness.wait_for(1)
    assert done.failed and "timed out after 0.3 s ([compare] timeout_s)" in done.summary
    # Killed with everything it started: no comparison process is left behind.
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    # The plugin carries on: the next best is compared (and refused, here) all the same.
    harness.plugin.config = replace(harness.plugin.config, timeout_s=120.0)
    harness.snapshot(3, pickle_only(tmp_path / "c", marker))
    second = (await harness.wait_for(2))[1]
    assert "only pickle weights" in second.summary and "timed out" not in second.summary
    await stopped(harness)


async def test_a_previous_best_that_is_gone_is_not_compared(
    store: AsyncStore, tmp_path: Path
) -> None:
    harness = await started(store, tmp_path)
    first = pickle_only(tmp_path / "a", tmp_path / "ran")
    harness.snapshot(1, first)
    await asyncio.sleep(0.2)
    for child in first.iterdir():
        child.unlink()
    first.rmdir()  # pruned by the snapshot plugin's keep_best
    harness.snapshot(2, pickle_only(tmp_path / "b", tmp_path / "ran"))
    await asyncio.sleep(0.3)
    assert harness.finished == [] and harness.plugin._jobs.empty()
    await stopped(harness)


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("checkpoint-600", "checkpoint-600"),
        ("../../etc/passwd", "etc_passwd"),
        ("a b|c*<x>`$(rm -rf)`", "a_b_c_x_rm_-rf"),
        ("", "snapshot"),
        ("\x1b[31mred", "31mred"),
    ],
)
def test_report_names_are_safe_file_names(name: str, safe: str) -> None:
    assert _file_name(name) == safe
    assert "/" not in _file_name(name) and len(_file_name(name * 50)) <= 60
