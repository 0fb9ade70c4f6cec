"""When reports are due: the cron schedule, and the one report a missed stretch still owes.

APScheduler fires the job at each due time while the daemon runs; what it cannot do is know
that the machine slept through 08:00, or that the daemon was down then (re-adding a job at
start-up forgets the missed run). So the due time is computed here from the trigger and the
last report's due time, kept in the store, and the scheduler only wakes the check up.
"""

from __future__ import annotations

import datetime as dt

from apscheduler.triggers.cron import CronTrigger

# How far back a missed report is looked for: a machine off for a month owes one report, not 30.
LOOK_BACK = dt.timedelta(days=8)


def cron_trigger(schedule: str, timezone: str = "") -> CronTrigger:
    """The trigger of a crontab line ("0 8 * * *": every day at 08:00), in `timezone` (an IANA
    name; "" for the machine's local time). Raises ValueError for a line it cannot read."""
    local = dt.datetime.now().astimezone().tzinfo
    return CronTrigger.from_crontab(schedule, timezone=timezone or local)


def latest_due(trigger: CronTrigger, now: dt.datetime) -> dt.datetime | None:
    """The last due time at or before `now` (within LOOK_BACK), or None."""
    due, fire = None, trigger.get_next_fire_time(None, now - LOOK_BACK)
    while fire is not None and fire <= now:
        due = fire
        fire = trigger.get_next_fire_time(fire, fire + dt.timedelta(seconds=1))
    return due


def owed(
    trigger: CronTrigger, now: dt.datetime, last_due: dt.datetime | None
) -> dt.datetime | None:
    """The due time a report must be written for now, or None: the latest due time, when no
    report was written for it yet. Missed earlier ones are not written one by one."""
    due = latest_due(trigger, now)
    if due is None or (last_due is not None and due <= last_due):
        return None
    return due
