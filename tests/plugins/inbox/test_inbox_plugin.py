"""The inbox plugin with a real store, bus and child process: validate once, report, quarantine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest
import structlog

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import Settings
from tunewatch.daemon.events import InboxFileReady, ValidationFinished
from tunewatch.daemon.plugin import PluginContext
from tunewatch.daemon.store import AsyncStore
from tunewatch.plugins.inbox import InboxConfig, InboxPlugin

GOOD = [
    {
        "messages": [
            {"role": "user", "content": f"What is {i} plus {i}?"},
            {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."},
        ]
    }
    for i in range(40)
]


class Harness:
    def __init__(self, store: AsyncStore, run_dir: Path, config: InboxConfig) -> None:
        self.bus = EventBus()
        self.finished: list[ValidationFinished] = []
        self.ready: list[InboxFileReady] = []
        self.bus.subscribe(ValidationFinished, self.finished.append)
        self.bus.subscribe(InboxFileReady, self.ready.append)
        self.run_dir = run_dir
        self.inbox = run_dir / "inbox"
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.plugin = InboxPlugin(
            PluginContext(
                name="inbox",
                bus=self.bus,
                store=store,
                config=config,
                settings=Settings(),
                log=structlog.get_logger("test"),
                run_dirs={"run-a": run_dir},
            )
        )

    async def scan_until_settled(self, rounds: int = 3) -> int:
        done = 0
        for i in range(rounds):
            done += await self.plugin.scan_once(now=1000.0 + 10.0 * i)
        await asyncio.sleep(0.05)
        return done


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    store = await AsyncStore.open(tmp_path / "state.db")
    run_dir = tmp_path / "run-a"
    run_dir.mkdir()
    await store.call(store.store.ensure_run, str(run_dir), "run-a")
    h = Harness(store, run_dir, InboxConfig(settle_s=5.0, quarantine=True))
    h.plugin._pool = None
    await h.plugin.start()
    for task in h.plugin._tasks:  # drive the scans by hand, deterministically
        task.cancel()
    yield h
    await h.plugin.stop()
    await h.bus.close()
    await store.close()


def write_jsonl(path: Path, rows: Sequence[Mapping[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


async def test_a_good_file_is_validated_once_with_reports(harness: Harness) -> None:
    write_jsonl(harness.inbox / "my_data.jsonl", GOOD)
    assert await harness.scan_until_settled() == 1
    (done,) = harness.finished
    assert done.score >= 90 and done.verdict == "ready"
    assert done.report_path is not None
    report = Path(done.report_path)
    assert report.parent == harness.run_dir / "reports" / "validation"
    assert report.read_text().strip()
    assert json.loads(report.with_suffix(".json").read_text())
    assert harness.ready[0].sha256 and harness.ready[0].path.endswith("my_data.jsonl")
    # The same content dropped again under another name is not validated again.
    write_jsonl(harness.inbox / "copy.jsonl", GOOD)
    assert await harness.scan_until_settled() == 0
    assert len(harness.finished) == 1


async def test_a_file_still_being_written_waits(harness: Harness) -> None:
    path = harness.inbox / "slow.jsonl"
    with path.open("w") as f:
        for i, row in enumerate(GOOD):
            f.write(json.dumps(row) + "\n")
            f.flush()
            if i % 10 == 0:
                # Each scan sees a new size: never ready while the copy goes on.
                assert await harness.plugin.scan_once(now=2000.0 + i) == 0
    assert harness.finished == []
    assert await harness.scan_until_settled() == 1
    assert harness.finished[0].path.endswith("slow.jsonl")


async def test_a_failing_file_is_moved_aside_and_reported_as_failing(harness: Harness) -> None:
    rows: list[dict[str, object]] = [{"messages": [{"role": "user", "content": "hi"}]}] * 30
    write_jsonl(harness.inbox / "bad.jsonl", rows)
    assert await harness.scan_until_settled() == 1
    (done,) = harness.finished
    assert done.verdict == "fix" and done.errors > 0
    assert Path(done.path) == harness.inbox / "rejected" / "bad.jsonl"
    assert Path(done.path).exists() and not (harness.inbox / "bad.jsonl").exists()


async def test_binary_and_empty_files_are_reported_not_crashing(harness: Harness) -> None:
    (harness.inbox / "weights.bin").write_bytes(bytes(range(256)) * 100)
    (harness.inbox / "empty.jsonl").write_bytes(b"")
    assert await harness.scan_until_settled() == 2
    assert sorted((Path(f.path).name, f.verdict, f.score) for f in harness.finished) == [
        ("empty.jsonl", "unreadable", 0),
        ("weights.bin", "unreadable", 0),
    ]
    # Unchanged unreadable files are not retried on every scan.
    assert await harness.scan_until_settled() == 0
    assert len(harness.finished) == 2
