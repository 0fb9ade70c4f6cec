"""When reports are due: the cron schedule, a missed one owed once, none twice."""

from __future__ import annotations

import datetime as dt

import pytest

from tunewatch.plugins.report.schedule import cron_trigger, latest_due, owed

UTC = dt.UTC


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 12, day, hour, minute, tzinfo=UTC)


def test_the_latest_due_time_is_the_last_firing_at_or_before_now() -> None:
    trigger = cron_trigger("0 8 * * *", "UTC")
    assert latest_due(trigger, at(3, 7, 59)) == at(2, 8)
    assert latest_due(trigger, at(3, 8)) == at(3, 8)
    assert latest_due(trigger, at(3, 23)) == at(3, 8)


def test_a_report_is_owed_once_per_due_time() -> None:
    trigger = cron_trigger("0 8 * * *", "UTC")
    assert owed(trigger, at(3, 8, 1), last_due=at(2, 8)) == at(3, 8)
    assert owed(trigger, at(3, 9), last_due=at(3, 8)) is None  # written already
    assert owed(trigger, at(3, 7), last_due=at(2, 8)) is None  # not due yet


def test_days_asleep_owe_one_report_for_the_latest_due_time() -> None:
    trigger = cron_trigger("0 8 * * *", "UTC")
    # Asleep from the 1st at 22:00 to the 5th at 10:00: one report, the 5th's, not four.
    assert owed(trigger, at(5, 10), last_due=at(1, 8)) == at(5, 8)


def test_the_schedule_is_in_its_time_zone() -> None:
    trigger = cron_trigger("0 8 * * *", "Asia/Tokyo")
    due = latest_due(trigger, at(3, 0))  # 09:00 in Tokyo on the 3rd
    assert due is not None and due.astimezone(UTC) == at(2, 23)


def test_a_schedule_line_that_cannot_be_read_is_an_error() -> None:
    with pytest.raises(ValueError):
        cron_trigger("every morning", "")
