"""The inbox plugin with a real store, bus and child process: validate once, report, quarantine."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest
import structlog

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import PathSettings, Settings
from tunewatch.daemon.events import InboxFileReady, ValidationFinished
from tunewatch.daemon.plugin import PluginContext
from tunewatch.daemon.store import AsyncStore
from tunewatch.plugins.inbox import IDLE_SCAN_S, InboxConfig, InboxPlugin
from tunewatch.plugins.validate.render import escape_markdown

GOOD = [
    {
        "messages": [
            {"role": "user", "content": f"What is {i} plus {i}?"},
            {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."},
        ]
    }
    for i in range(40)
]


QUICK_SETTLE = InboxConfig(settle_s=0.1)


def make_plugin(
    store: AsyncStore,
    settings: Settings,
    config: InboxConfig = QUICK_SETTLE,
    bus: EventBus | None = None,
) -> InboxPlugin:
    return InboxPlugin(
        PluginContext(
            name="inbox",
            bus=bus or EventBus(),
            store=store,
            config=config,
            settings=settings,
            log=structlog.get_logger("test"),
            run_dirs={},
        )
    )


class Harness:
    def __init__(self, store: AsyncStore, run_dir: Path, config: InboxConfig) -> None:
        self.bus = EventBus()
        self.finished: list[ValidationFinished] = []
        self.ready: list[InboxFileReady] = []
        self.bus.subscribe(ValidationFinished, self.finished.append)
        self.bus.subscribe(InboxFileReady, self.ready.append)
        self.run_dir = run_dir
        self.inbox = run_dir / "inbox"
        self.inbox.mkdir(parents=True, exist_ok=True)  # the user opts the run in
        self.plugin = make_plugin(store, Settings(), config, self.bus)

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


async def test_a_file_name_cannot_inject_a_line_html_or_markdown_into_its_report(
    harness: Harness,
) -> None:
    write_jsonl(harness.inbox / "x\n<img src=x onerror=alert(1)>\n.jsonl", GOOD)
    assert await harness.scan_until_settled() == 1
    (done,) = harness.finished
    assert done.report_path is not None
    report = Path(done.report_path)
    # The report's own name stays readable: no line break in a file name tunewatch writes.
    assert report.name.startswith("x_<img src=x onerror=alert(1)>_.jsonl-")
    markdown = report.read_text()
    title = markdown.splitlines()[0]
    assert title.startswith("## Validation of ")
    assert title.endswith(r"x\\n\<img src=x onerror=alert\(1\)\>\\n\.jsonl")
    assert re.search(r"(?<!\\)[<>]", markdown) is None  # no HTML tag: each < and > escaped


async def test_reports_of_files_validated_in_the_same_second_never_collide(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "strftime", lambda fmt, *args: "20261201-101500")
    write_jsonl(harness.inbox / "dup.jsonl", GOOD)
    (harness.inbox / "dup.json").write_text(json.dumps(GOOD))
    assert await harness.scan_until_settled() == 2
    write_jsonl(harness.inbox / "dup.jsonl", GOOD[:30])  # new content, same name, same second
    assert await harness.scan_until_settled() == 1
    reports = harness.run_dir / "reports" / "validation"
    assert sorted(p.name for p in reports.glob("*.md")) == [
        "dup.json-20261201-101500.md",
        "dup.jsonl-20261201-101500-2.md",
        "dup.jsonl-20261201-101500.md",
    ]
    assert len(list(reports.glob("*.json"))) == 3
    for done in harness.finished:  # each notification points at its own report
        assert done.report_path is not None
        title = Path(done.report_path).read_text().splitlines()[0]
        assert title == f"## Validation of {escape_markdown(done.path)}"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AsyncStore]:
    store = await AsyncStore.open(tmp_path / "state.db")
    yield store
    await store.close()


async def add_runs(store: AsyncStore, parent: Path, count: int) -> list[Path]:
    def add() -> list[Path]:
        dirs = [parent / f"run-{i}" for i in range(count)]
        for run_dir in dirs:
            run_dir.mkdir(parents=True)
            store.store.ensure_run(str(run_dir), run_dir.name)
        return dirs

    return await store.call(add)


class DiscoveryCounter:
    """Counts the plugin's searches for inboxes: each scan makes one."""

    def __init__(self, plugin: InboxPlugin, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.first = asyncio.Event()
        self._discover = plugin.inboxes
        monkeypatch.setattr(plugin, "inboxes", self._counted)

    async def _counted(self) -> list[tuple[str, Path, Path]]:
        self.count += 1
        found = await self._discover()
        self.first.set()
        return found


async def test_runs_without_an_inbox_get_no_folder_no_watcher_and_no_busy_loop(
    tmp_path: Path, store: AsyncStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `runs = ["~/runs/*"]` with 10,000 runs, none of which asked for an inbox.
    run_dirs = await add_runs(store, tmp_path / "runs", 10_000)
    plugin = make_plugin(store, Settings())
    discoveries = DiscoveryCounter(plugin, monkeypatch)
    await plugin.start()
    try:
        await asyncio.sleep(1.0)
        assert discoveries.count == 1  # one scan, then it waits instead of spinning
        assert plugin._watcher is None
        assert not any(task.done() for task in plugin._tasks)
    finally:
        await plugin.stop()
    assert [d for d in run_dirs if any(d.iterdir())] == []


async def test_an_inbox_created_later_is_found_by_the_next_scan_and_watched_with_the_others(
    tmp_path: Path, store: AsyncStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dirs = await add_runs(store, tmp_path / "runs", 50)
    plugin = make_plugin(store, Settings())
    assert await plugin.inboxes() == []
    (run_dirs[7] / "inbox").mkdir()  # the user opts two runs in
    (run_dirs[9] / "inbox").mkdir()
    assert [(run, inbox) for run, inbox, _dir in await plugin.inboxes()] == [
        ("run-7", run_dirs[7] / "inbox"),
        ("run-9", run_dirs[9] / "inbox"),
    ]
    discoveries = DiscoveryCounter(plugin, monkeypatch)
    await plugin.start()
    try:
        await discoveries.first.wait()
        # One watcher for every inbox together, never one per run.
        assert plugin._watched == {run_dirs[7] / "inbox", run_dirs[9] / "inbox"}
        assert plugin._watcher is not None and not plugin._watcher.done()
    finally:
        await plugin.stop()


async def test_a_file_dropped_into_a_watched_inbox_wakes_the_scan_without_waiting(
    tmp_path: Path, store: AsyncStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    (run_dir,) = await add_runs(store, tmp_path / "runs", 1)
    (run_dir / "inbox").mkdir()
    bus = EventBus()
    finished = asyncio.Event()
    bus.subscribe(ValidationFinished, lambda _event: finished.set())
    plugin = make_plugin(store, Settings(), bus=bus)
    discoveries = DiscoveryCounter(plugin, monkeypatch)
    await plugin.start()
    try:
        await discoveries.first.wait()
        await asyncio.sleep(1.0)  # the first scan found nothing; the scan loop waits
        write_jsonl(run_dir / "inbox" / "data.jsonl", GOOD)
        # Well before the next periodic scan: the watcher woke the loop.
        await asyncio.wait_for(finished.wait(), IDLE_SCAN_S / 2)
    finally:
        await plugin.stop()
        await bus.close()


async def test_an_absolute_inbox_is_shared_and_created(tmp_path: Path, store: AsyncStore) -> None:
    (run_dir,) = await add_runs(store, tmp_path / "runs", 1)
    shared = tmp_path / "drop" / "inbox"
    plugin = make_plugin(store, Settings(paths=PathSettings(inbox=str(shared))))
    await plugin.start()
    try:
        assert shared.is_dir()  # the user named it: tunewatch makes it
        assert [(run, inbox) for run, inbox, _dir in await plugin.inboxes()] == [("run-0", shared)]
    finally:
        await plugin.stop()
    assert list(run_dir.iterdir()) == []
