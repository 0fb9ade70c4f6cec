"""The report plugin on a controllable clock: due time, a missed report caught up once after a
"sleep", no duplicate after a restart; a ReportWritten with its health line."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import structlog

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import DaemonSettings, Settings
from tunewatch.daemon.events import ReportWritten
from tunewatch.daemon.plugin import PluginContext
from tunewatch.daemon.store import AsyncStore
from tunewatch.plugins.report import LAST_DUE_KEY, ReportConfig, ReportPlugin

UTC = dt.UTC
CONFIG = ReportConfig(schedule="0 8 * * *", timezone="UTC", check_interval_s=3600.0)


class Clock:
    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now.timestamp()


class Daemon:
    """One start of the daemon: its own bus and plugin, on the shared state directory."""

    def __init__(self, store: AsyncStore, state_dir: Path, clock: Clock) -> None:
        self.bus = EventBus()
        self.written: list[ReportWritten] = []
        self.bus.subscribe(ReportWritten, self.written.append)
        settings = replace(Settings(), daemon=DaemonSettings(state_dir=str(state_dir)))
        self.plugin = ReportPlugin(
            PluginContext(
                name="report",
                bus=self.bus,
                store=store,
                config=CONFIG,
                settings=settings,
                log=structlog.get_logger("test"),
                run_dirs={},
            ),
            clock=clock,
        )

    async def close(self) -> None:
        await self.plugin.stop()
        await self.bus.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AsyncStore]:
    opened = await AsyncStore.open(tmp_path / "state.db")
    yield opened
    await opened.close()


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 12, day, hour, minute, tzinfo=UTC)


async def test_a_report_is_written_once_per_due_time_and_a_missed_one_once(
    store: AsyncStore, tmp_path: Path
) -> None:
    clock = Clock(at(2, 7, 30))
    daemon = Daemon(store, tmp_path, clock)
    # The very first start owes nothing (tunewatch was not there to miss anything)...
    assert await daemon.plugin.catch_up() is None
    # ...the next due time is the first report; a restart after it owes nothing more.
    clock.now = at(2, 8, 0)
    first = await daemon.plugin.catch_up()
    assert first is not None and first.name == "daily_report_20261202_0800.md"
    assert await daemon.plugin.catch_up() is None
    clock.now = at(3, 8, 0)
    second = await daemon.plugin.catch_up()
    assert second is not None and second.name == "daily_report_20261203_0800.md"
    # Asleep from the 3rd 09:00 to the 6th 10:30: one report on waking, the 6th's.
    clock.now = at(6, 10, 30)
    woke = await daemon.plugin.catch_up()
    assert woke is not None and woke.name == "daily_report_20261206_0800.md"
    assert await daemon.plugin.catch_up() is None
    await daemon.close()
    # A restart the same morning: nothing again.
    restarted = Daemon(store, tmp_path, clock)
    assert await restarted.plugin.catch_up() is None
    await restarted.close()
    reports = tmp_path / "reports"
    assert sorted(p.name for p in reports.glob("daily_report_*.md")) == [
        "daily_report_20261202_0800.md",
        "daily_report_20261203_0800.md",
        "daily_report_20261206_0800.md",
    ]
    assert (reports / "latest_report.md").is_file()
    assert [Path(w.path).name for w in daemon.written] == [
        "daily_report_20261202_0800.md",
        "daily_report_20261203_0800.md",
        "daily_report_20261206_0800.md",
    ]
    assert all(w.period_hours == 24.0 and w.health for w in daemon.written)


async def wait_for_reports(daemon: Daemon, count: int, timeout_s: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(daemon.written) < count:
        assert asyncio.get_running_loop().time() < deadline, daemon.written
        await asyncio.sleep(0.05)


async def test_the_scheduler_runs_the_check_at_each_due_time(
    store: AsyncStore, tmp_path: Path
) -> None:
    # The real AsyncIOScheduler; a schedule of every minute, on a clock the test moves.
    clock = Clock(dt.datetime.now(UTC).replace(second=0, microsecond=0))
    daemon = Daemon(store, tmp_path, clock)
    daemon.plugin.config = replace(CONFIG, schedule="* * * * *", check_interval_s=3600.0)
    await daemon.plugin.start()  # the first start: nothing owed, the next minute is the first
    for _ in range(500):  # the start-up check ran
        if await store.call(store.store.plugin_get, "report", LAST_DUE_KEY) is not None:
            break
        await asyncio.sleep(0.02)
    (job,) = daemon.plugin._scheduler.get_jobs()
    assert job.id == "report" and job.next_run_time > dt.datetime.now(UTC)
    # A minute later the scheduler fires (made to fire now): that minute's report.
    clock.now += dt.timedelta(minutes=1)
    job.modify(next_run_time=dt.datetime.now(UTC))
    await wait_for_reports(daemon, 1)
    assert Path(daemon.written[0].path).name.endswith(clock.now.strftime("%Y%m%d_%H%M") + ".md")
    await daemon.close()
