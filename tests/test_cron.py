"""Cron schedules for `mirror sync serve`: the next run time, as cron would pick it."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from mirror.model.cron import CronSchedule


@pytest.mark.parametrize("schedule, now, expected", [
    ("15 2 * * *", "2026-11-29 23:59", "2026-11-30 02:15"),       # nightly
    ("15 2 * * *", "2026-11-30 02:15", "2026-12-01 02:15"),       # strictly after
    ("*/20 * * * *", "2026-11-30 10:41", "2026-11-30 11:00"),
    ("5/15 * * * *", "2026-11-30 10:21", "2026-11-30 10:35"),    # N/S: from N on, every S
    ("0 9-17/4 * * 1-5", "2026-11-28 18:00", "2026-11-30 09:00"),  # Saturday -> Monday 09:00
    ("30 6 1 * *", "2026-11-29 07:00", "2026-12-01 06:30"),
    ("0 0 13 * 5", "2026-11-29 00:00", "2026-12-04 00:00"),       # day 13 OR a Friday, as cron does
    ("0 0 * * 7", "2026-11-29 00:00", "2026-12-06 00:00"),        # 7 is Sunday too
    ("0 0 29 2 *", "2026-03-01 00:00", "2028-02-29 00:00"),
])
def test_next_run_is_the_first_minute_the_schedule_names(schedule, now, expected):
    moment = datetime.strptime(now, "%Y-%m-%d %H:%M")
    assert CronSchedule.parse(schedule).next_after(moment) == datetime.strptime(expected, "%Y-%m-%d %H:%M")


@pytest.mark.parametrize("schedule, message", [
    ("15 2 * *", "five fields"),
    ("61 * * * *", "minute '61': values go from 0 to 59"),
    ("* * * jan *", "month 'jan'"),
    ("*/0 * * * *", "values go from"),
])
def test_a_bad_schedule_names_the_field(schedule, message):
    with pytest.raises(ValueError, match=message):
        CronSchedule.parse(schedule)


@pytest.mark.parametrize("schedule", ["0 0 30 2 *", "0 0 31 2,4,6,9,11 *", "15 3 30,31 2 *"])
def test_a_schedule_that_never_fires_is_refused_when_read(schedule):
    with pytest.raises(ValueError, match=re.escape(f"schedule '{schedule}' never fires: no month it names")):
        CronSchedule.parse(schedule)


@pytest.mark.parametrize("schedule, now, expected", [
    ("0 0 30 2 1", "2026-11-29 00:00", "2027-02-01 00:00"),  # February 30th or a Monday: February's Mondays
    ("0 0 29-31 2 *", "2097-03-01 00:00", "2104-02-29 00:00"),  # 2100 is no leap year
])
def test_a_schedule_that_fires_rarely_is_taken(schedule, now, expected):
    moment = datetime.strptime(now, "%Y-%m-%d %H:%M")
    assert CronSchedule.parse(schedule).next_after(moment) == datetime.strptime(expected, "%Y-%m-%d %H:%M")
