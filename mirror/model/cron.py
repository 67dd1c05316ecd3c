"""Cron schedules (the five fields of crontab(5)), for ``mirror sync serve``.

``minute hour day-of-month month day-of-week``; each field ``*``, a number,
a range ``a-b``, a step ``*/n`` or ``a-b/n``, or a comma list of those. Days
of the week are 0-7 (0 and 7 are Sunday). As in cron, when both day fields
are restricted a day matching either one is taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
SEARCH_DAYS = 366 * 5  # Feb 29 on a Monday can be years away; past that a schedule never fires


@dataclass(frozen=True)
class CronSchedule:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month is *
    any_weekday: bool  # day of week is *

    @classmethod
    def parse(cls, text: str) -> "CronSchedule":
        """ValueError naming the field at fault when ``text`` is not a five-field schedule."""
        parts = str(text).split()
        if len(parts) != 5:
            raise ValueError(f"schedule {text!r}: expected five fields (minute hour day month weekday), "
                             "e.g. '15 2 * * *'")
        values = [_field(part, name, low, high) for part, (name, low, high) in zip(parts, _FIELDS)]
        weekdays = frozenset(0 if day == 7 else day for day in values[4])
        return cls(text, values[0], values[1], values[2], values[3], weekdays, parts[2] == "*", parts[4] == "*")

    def next_after(self, moment: datetime) -> datetime:
        """The first whole minute after ``moment`` that the schedule names."""
        candidate = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
        end = candidate + timedelta(days=SEARCH_DAYS)
        while candidate < end:
            if candidate.month in self.months and self._day_matches(candidate):
                for hour in sorted(h for h in self.hours if h >= candidate.hour):
                    start = candidate.minute if hour == candidate.hour else 0
                    minute = next((m for m in sorted(self.minutes) if m >= start), None)
                    if minute is not None:
                        return candidate.replace(hour=hour, minute=minute)
            candidate = (candidate + timedelta(days=1)).replace(hour=0, minute=0)
        raise ValueError(f"schedule {self.text!r} names no time in the next {SEARCH_DAYS // 366} years")

    def _day_matches(self, day: datetime) -> bool:
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        span, _, step_text = item.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if span == "*":
                first, last = low, high
            elif "-" in span:
                first, last = (int(bound) for bound in span.split("-", 1))
            else:
                first = last = int(span)
        except ValueError:
            raise ValueError(f"schedule field {name} {text!r}: expected *, N, A-B, */N or a list of them") from None
        if step < 1 or not low <= first <= last <= high:
            raise ValueError(f"schedule field {name} {text!r}: values go from {low} to {high}")
        values.update(range(first, last + 1, step))
    return frozenset(values)
