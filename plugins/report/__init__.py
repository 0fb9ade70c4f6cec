"""The report plugin: a Markdown report with a chart, every day on schedule, and `tunewatch report`.

APScheduler's `AsyncIOScheduler` fires at each due time of `[report] schedule` (cron, default
08:00 local time). A report missed while the machine slept or the daemon was down is written at
start-up or at the next periodic check (`check_interval_s`): the due time of the last report is
kept in the store, so each due time gets one report, never two. The very first start owes
nothing: the first report is at the first due time after it. Writing it (store queries,
Markdown, the chart in a child process) runs off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tunewatch.daemon.config import PositiveFloat
from tunewatch.daemon.events import ReportWritten
from tunewatch.daemon.plugin import CommandRegistry, PluginContext
from tunewatch.plugins.report.schedule import cron_trigger, latest_due, owed

LAST_DUE_KEY = "last_due"


@dataclass(frozen=True, slots=True)
class ReportConfig:
    enabled: bool = True
    # A crontab line: minute hour day-of-month month day-of-week ("0 8 * * *": 08:00 daily).
    schedule: str = "0 8 * * *"
    # IANA time zone of the schedule ("Europe/Paris"); "": the machine's local time.
    timezone: str = ""
    # The period a report covers, ending at its due time.
    period_hours: PositiveFloat = 24.0
    # Where reports go; "": <state dir>/reports (never inside a run folder unless set so).
    out_dir: str = ""
    # How often a missed report is looked for (this also catches a machine waking from sleep).
    check_interval_s: PositiveFloat = 300.0


class ReportPlugin:
    """Writes the daily report at each due time, and the one a missed stretch still owes."""

    name: ClassVar[str] = "report"
    Config: ClassVar[type[ReportConfig]] = ReportConfig

    def __init__(self, ctx: PluginContext, clock: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.config: ReportConfig = ctx.config
        self.clock = clock  # tests drive the time
        self._lock = asyncio.Lock()
        self._scheduler: Any = None
        self._ticker: asyncio.Task[None] | None = None

    @classmethod
    def register_commands(cls, commands: CommandRegistry) -> None:
        from tunewatch.plugins.report import command

        commands.add(
            "report",
            help="write a report now (runs, activity, anomalies, resources, a chart)",
            add_arguments=command.add_arguments,
            run=command.run,
        )

    def out_dir(self) -> Path:
        return out_dir(self.config, self.ctx.settings.state_dir())

    async def start(self) -> None:
        trigger = cron_trigger(self.config.schedule, self.config.timezone)  # a bad line: here
        if not self.config.enabled:
            return
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._scheduler = AsyncIOScheduler(timezone=trigger.timezone)
        # Fired late (a busy loop, a suspend), it runs once: the store says whether it is owed.
        self._scheduler.add_job(
            self.catch_up, trigger, id="report", coalesce=True, misfire_grace_time=None
        )
        self._scheduler.start()
        self._ticker = self.ctx.spawn(self._tick(), name="report-check")

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker

    async def _tick(self) -> None:
        while True:
            await self.catch_up()
            await asyncio.sleep(self.config.check_interval_s)

    async def catch_up(self) -> Path | None:
        """Write the report that is due and not written yet, if any; its path."""
        async with self._lock:
            trigger = cron_trigger(self.config.schedule, self.config.timezone)
            now = dt.datetime.fromtimestamp(self.clock(), tz=trigger.timezone)
            store = self.ctx.store
            saved = await store.call(store.store.plugin_get, self.name, LAST_DUE_KEY)
            if saved is None:
                # The first start: tunewatch missed nothing before it was there, and a report
                # at once is what `tunewatch report` is for. The next due time is the first.
                first = latest_due(trigger, now) or now
                await store.call(
                    store.store.plugin_put, self.name, LAST_DUE_KEY, str(first.timestamp())
                )
                return None
            last = dt.datetime.fromtimestamp(float(saved), now.tzinfo)
            due = owed(trigger, now, last)
            if due is None:
                return None
            path = await self._write(due)
            # Recorded once written: a crash in between writes the same file again (its name
            # is its due time), never a second report.
            await store.call(store.store.plugin_put, self.name, LAST_DUE_KEY, str(due.timestamp()))
            return path

    async def _write(self, due: dt.datetime) -> Path:
        from tunewatch.plugins.report.generate import generate_report

        until = due.timestamp()
        since = until - self.config.period_hours * 3600.0
        written = await asyncio.to_thread(
            generate_report,
            self.ctx.settings.state_db(),
            self.out_dir(),
            since=since,
            until=until,
            stamp=due,
        )
        self.ctx.log.info("report written", path=str(written.markdown), due=due.isoformat())
        self.ctx.bus.publish(
            ReportWritten(str(written.markdown), self.config.period_hours, written.health)
        )
        return written.markdown


def out_dir(config: ReportConfig, state_dir: Path) -> Path:
    """Where reports are written: `out_dir`, or the state directory's reports/."""
    return Path(config.out_dir).expanduser() if config.out_dir else state_dir / "reports"
