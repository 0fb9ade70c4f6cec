"""RunWatcher: whatever one file does, the other files and runs are still recorded.

Each test puts one hostile input in run `bad` next to a healthy run `good`, catches up, then
appends to `good` and checks that every good line is recorded exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import DaemonSettings, Settings
from tunewatch.daemon.events import (
    Event,
    RecordingFailed,
    RecordingResumed,
    SourceReadable,
    SourceUnreadable,
)
from tunewatch.daemon.ingest import ACTIVE_WINDOW_S
from tunewatch.daemon.sources.jsonl import JsonlParser
from tunewatch.daemon.store import AsyncStore
from tunewatch.daemon.watcher import RunWatcher


def line(step: int, loss: float = 1.0) -> str:
    return json.dumps({"step": step, "loss": loss}) + "\n"


def append(path: Path, text: str | bytes) -> None:
    with path.open("ab") as f:
        f.write(text.encode() if isinstance(text, str) else text)


@dataclass
class Harness:
    runs: Path
    store: AsyncStore
    bus: EventBus
    watcher: RunWatcher
    published: list[Event]

    @property
    def good(self) -> Path:
        return self.runs / "good"

    @property
    def bad(self) -> Path:
        return self.runs / "bad"

    def steps(self, run: str) -> list[int]:
        return [p.step for p in self.store.store.metrics() if p.run == run]

    def kinds(self, event_type: type[Event]) -> list[Event]:
        return [e for e in self.published if isinstance(e, event_type)]

    async def good_still_recorded(self, before: int = 3) -> None:
        """The healthy run was read, and a line appended now is read too, exactly once."""
        assert self.steps("good") == list(range(1, before + 1))
        append(self.good / "train.jsonl", line(before + 1))
        self.watcher.on_change(self.good / "train.jsonl")
        await self.watcher.drain()
        assert self.steps("good") == list(range(1, before + 2))


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    runs = tmp_path / "runs"
    (runs / "good").mkdir(parents=True)
    (runs / "bad").mkdir()
    append(runs / "good" / "train.jsonl", line(1) + line(2) + line(3))
    settings = Settings(daemon=DaemonSettings(state_dir=str(tmp_path / "state")))
    store = await AsyncStore.open(settings.state_db())
    bus = EventBus()
    published: list[Event] = []
    bus.subscribe(Event, published.append)
    watcher = RunWatcher(settings, store, bus, [str(runs / "*")])
    yield Harness(runs, store, bus, watcher, published)
    await watcher.close_files()
    await bus.close()
    await store.close()


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def settle(h: Harness) -> None:
    await asyncio.sleep(0.05)  # let the bus deliver to `published`


async def test_a_lone_surrogate_key_is_recorded_escaped_and_stops_nothing(h: Harness) -> None:
    append(h.bad / "m.jsonl", '{"current_steps": 4, "\\ud800": 1.0}\n' + line(5))
    await h.watcher.catch_up()
    await h.good_still_recorded()
    assert h.steps("bad") == [4, 5]
    names = {n for p in h.store.store.metrics() for n in p.metrics}
    assert "\\ud800" in names


async def test_a_symlink_loop_is_reported_once_and_skipped(h: Harness) -> None:
    (h.bad / "loop.jsonl").symlink_to("loop.jsonl")
    append(h.bad / "ok.jsonl", line(7))
    await h.watcher.catch_up()
    await h.watcher.catch_up()  # a rescan finds it again: still one report
    await h.good_still_recorded()
    assert h.steps("bad") == [7]
    await settle(h)
    (report,) = h.kinds(SourceUnreadable)
    assert isinstance(report, SourceUnreadable)
    assert (report.run, report.kind) == ("bad", "symlink_loop")
    stored = h.store.store.history(kinds=["source_unreadable"])
    assert len(stored) == 1 and "loop.jsonl" in stored[0].row.summary


async def test_a_fifo_is_never_opened_for_reading(h: Harness) -> None:
    os.mkfifo(h.bad / "f.jsonl")
    async with asyncio.timeout(10):  # opening it for reading would block forever
        await h.watcher.catch_up()
    await h.good_still_recorded()
    await settle(h)
    (report,) = h.kinds(SourceUnreadable)
    assert isinstance(report, SourceUnreadable)
    assert report.kind == "not_a_regular_file" and "FIFO" in report.message


async def test_a_symlink_to_dev_zero_is_refused_not_read_forever(h: Harness) -> None:
    (h.bad / "z.jsonl").symlink_to("/dev/zero")
    async with asyncio.timeout(10):
        await h.watcher.catch_up()
    await h.good_still_recorded()
    await settle(h)
    (report,) = h.kinds(SourceUnreadable)
    assert isinstance(report, SourceUnreadable)
    assert "character device" in report.message


async def test_a_log_replaced_by_a_directory_is_reported_and_read_again_when_it_is_back(
    h: Harness,
) -> None:
    log = h.bad / "m.jsonl"
    append(log, line(1))
    await h.watcher.catch_up()
    log.unlink()
    log.mkdir()
    h.watcher.on_change(log)
    await h.watcher.drain()
    await h.good_still_recorded()
    await settle(h)
    (report,) = h.kinds(SourceUnreadable)
    assert isinstance(report, SourceUnreadable) and "directory" in report.message
    assert h.watcher.ingest.faults
    log.rmdir()
    append(log, line(2))
    h.watcher.on_change(log)
    await h.watcher.drain()
    assert h.steps("bad") == [1, 2]
    await settle(h)
    assert len(h.kinds(SourceReadable)) == 1
    assert not h.watcher.ingest.faults


async def test_an_unreadable_file_is_retried_by_itself(h: Harness) -> None:
    """The retry needs no rescan and no change: a timer marks the file again."""
    (h.bad / "loop.jsonl").symlink_to("loop.jsonl")
    await h.watcher.catch_up()
    (h.bad / "loop.jsonl").unlink()
    append(h.bad / "loop.jsonl", line(3))
    stop = asyncio.Event()
    runner = asyncio.create_task(h.watcher._process_loop(stop))
    await wait_until(lambda: h.steps("bad") == [3])
    runner.cancel()
    assert not h.watcher.ingest.faults


async def test_a_parser_that_raises_costs_its_lines_not_the_file(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_parse = JsonlParser.parse

    def parse(self: JsonlParser, lines: list[bytes], first_line_no: int) -> object:
        if any(b"boom" in raw for raw in lines):
            raise RuntimeError("parser bug")
        return real_parse(self, lines, first_line_no)

    monkeypatch.setattr(JsonlParser, "parse", parse)
    append(h.bad / "m.jsonl", '{"step": 1, "boom": 1}\n')
    await h.watcher.catch_up()
    append(h.bad / "m.jsonl", line(2))
    h.watcher.on_change(h.bad / "m.jsonl")
    await h.watcher.drain()
    assert h.steps("bad") == [2]
    errors = h.store.store.history(kinds=["source_error"])
    assert [e.row.data["kind"] for e in errors] == ["parser_failed"]
    await h.good_still_recorded()


async def test_a_run_directory_whose_name_is_not_utf8_is_watched(h: Harness) -> None:
    odd = Path(os.fsdecode(bytes(h.runs) + b"/r\xff\xfe"))
    odd.mkdir()
    append(odd / "train.jsonl", line(9))
    await h.watcher.catch_up()
    await h.good_still_recorded()
    assert h.steps("r\\udcff\\udcfe") == [9]


async def test_a_full_store_loses_nothing_and_recording_resumes_by_itself(h: Harness) -> None:
    await h.watcher.catch_up()
    db = h.store.store.db
    pages = await h.store.call(lambda: db.execute("PRAGMA page_count").fetchone()[0])
    # SQLite reports SQLITE_FULL ("database or disk is full") past max_page_count, as on a
    # full disk.
    await h.store.call(db.execute, f"PRAGMA max_page_count = {pages}")
    big = {f"metric_{i}": float(i) for i in range(200)}
    lines = "".join(json.dumps({"step": s, **big}) + "\n" for s in range(4, 200))
    append(h.good / "train.jsonl", lines)
    h.watcher.on_change(h.good / "train.jsonl")
    drain = asyncio.create_task(h.watcher.drain())
    await wait_until(lambda: h.watcher.ingest.recording_failure is not None)
    failure = h.watcher.ingest.recording_failure
    assert failure is not None and "database or disk is full" in failure.reason
    await settle(h)
    assert len(h.kinds(RecordingFailed)) == 1
    assert h.steps("good") == [1, 2, 3]
    await h.store.call(db.execute, "PRAGMA max_page_count = 1073741823")  # space is freed
    async with asyncio.timeout(10):
        await drain
    assert h.steps("good") == list(range(1, 200))
    assert h.watcher.ingest.recording_failure is None
    await settle(h)
    assert len(h.kinds(RecordingResumed)) == 1


# -- property: nothing written to one run can stop another run from being recorded ------------

_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
_GARBAGE = st.one_of(
    st.binary(max_size=120),
    _JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.text(max_size=6), _JSON_VALUES, max_size=4).map(
        lambda d: json.dumps({"step": 1, **d}).encode()
    ),
    st.integers().map(lambda s: json.dumps({"current_steps": s, "loss": 1.0}).encode()),
    st.sampled_from(
        [
            b'{"current_steps": 4, "\\ud800": 1.0}',
            b'{"current_steps": 9223372036854775807, "loss": 1.0}',
            b'{"current_steps": -3, "loss": 1.0}',
            b'{"step": 5, "loss": "1.2"}',
            b'{"step": 6, "loss": NaN}',
            b'{"step": 1e400}',
            b"\xff\xfe\x00",
        ]
    ),
)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(rounds=st.lists(st.lists(_GARBAGE, max_size=12), min_size=1, max_size=3))
def test_garbage_in_one_run_never_stops_the_others(rounds: list[list[bytes]]) -> None:
    async def scenario(root: Path) -> list[int]:
        control, hostile = root / "runs" / "control", root / "runs" / "hostile"
        control.mkdir(parents=True)
        hostile.mkdir()
        settings_ = Settings(daemon=DaemonSettings(state_dir=str(root / "state")))
        store = await AsyncStore.open(settings_.state_db())
        watcher = RunWatcher(settings_, store, EventBus(), [str(root / "runs" / "*")])
        step = 0
        try:
            for garbage in rounds:
                append(hostile / "m.jsonl", b"\n".join(garbage) + b"\n")
                step += 1
                append(control / "train.jsonl", line(step))
                await watcher.catch_up()
            return [p.step for p in store.store.metrics() if p.run == "control"]
        finally:
            await watcher.close_files()
            await store.close()

    with tempfile.TemporaryDirectory() as tmp:
        recorded = asyncio.run(scenario(Path(tmp)))
    assert recorded == list(range(1, len(rounds) + 1))


# -- which runs are watched closely -----------------------------------------------------------


async def test_a_run_being_written_is_active_after_a_restart_even_if_its_folder_is_old(
    h: Harness,
) -> None:
    """Appending to a log does not touch its folder's mtime: the file's mtime must count."""
    await h.watcher.catch_up()  # the daemon before its restart read everything
    await h.watcher.close_files()
    day_ago = time.time() - 86400
    os.utime(h.good, (day_ago, day_ago))
    settings = h.watcher.settings
    restarted = RunWatcher(settings, h.store, h.bus, [str(h.runs / "*")])
    await restarted.catch_up()  # nothing new to read: only the log's mtime says it is alive
    good = restarted.runs[h.good]
    assert good.active(time.time(), ACTIVE_WINDOW_S)
    assert h.good in restarted._active_roots()
    assert restarted.runs[h.good].followers  # its log stays open for the next line
    await restarted.close_files()


async def test_a_new_empty_run_folder_is_active_and_an_old_idle_one_is_not(h: Harness) -> None:
    fresh = h.runs / "just-started"
    fresh.mkdir()
    idle = h.runs / "abandoned"
    idle.mkdir()
    week_ago = time.time() - 7 * 86400
    os.utime(idle, (week_ago, week_ago))
    await h.watcher.catch_up()
    roots = h.watcher._active_roots()
    assert fresh in roots
    assert idle not in roots


async def test_a_finished_run_costs_no_open_file_and_no_watch(h: Harness) -> None:
    (h.bad / "training_status.json").write_text('{"status": "completed", "step": 3}')
    append(h.bad / "train.jsonl", line(1) + line(2) + line(3))
    h.watcher.wakeups.open()
    try:
        await h.watcher.catch_up()
        bad = h.watcher.runs[h.bad]
        assert bad.finished
        assert bad.followers == {}
        assert not h.watcher.wakeups.is_watching(h.bad / "train.jsonl")
        assert h.bad not in h.watcher._active_roots()
        assert h.watcher.runs[h.good].followers  # the run still training keeps its file open
    finally:
        h.watcher.wakeups.close()
