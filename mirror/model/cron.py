"""Cron schedules (the five fields of crontab(5)), for ``mirror sync serve``.

``minute hour day-of-month month day-of-week``; each field ``*``, a number,
a range ``a-b``, a step ``*/n`` or ``a-b/n``, or a comma list of those. Days
of the week are 0-7 (0 and 7 are Sunday). As in cron, when both day fields
are restricted a day matching either one is taken.

A schedule translates exactly into systemd ``OnCalendar=`` expressions
(systemd.time(7)), and an interval that divides an hour or a day into a
cron schedule, for the units ``mirror sync print-systemd`` and
``print-cronjob`` write.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
SEARCH_DAYS = 366 * 9  # a time parse accepts is at most 8 years away: Feb 29 (2096, then 2104)
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # the most each month has
_SYSTEMD_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # ISO order: 1 = Monday


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
        """ValueError naming the field at fault when ``text`` is not a five-field schedule, or saying
        that it never fires (``0 0 30 2 *``: February has no 30th)."""
        parts = str(text).split()
        if len(parts) != 5:
            raise ValueError(f"schedule {text!r}: expected five fields (minute hour day month weekday), "
                             "e.g. '15 2 * * *'")
        values = [_field(part, name, low, high) for part, (name, low, high) in zip(parts, _FIELDS)]
        weekdays = frozenset(0 if day == 7 else day for day in values[4])
        if parts[4] == "*" and not any(day <= _MONTH_DAYS[month - 1] for day in values[2] for month in values[3]):
            # cron takes it and never runs it; a timer made of it never fires, and nothing says so
            raise ValueError(f"schedule {text!r} never fires: no month it names ({parts[3]}) has a day it "
                             f"names ({parts[2]})")
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

    def on_calendar(self) -> list[str]:
        """systemd ``OnCalendar=`` expressions that fire at exactly the schedule's times.

        systemd wants the weekday and the date to match; cron, when both day
        fields are restricted, takes a day matching either. That case gives
        two expressions (a timer fires at each of its ``OnCalendar=`` times).
        """
        time = f"{_systemd_field(self.hours, 0, 23)}:{_systemd_field(self.minutes, 0, 59)}:00"
        months = _systemd_field(self.months, 1, 12)
        days = _systemd_field(self.days, 1, 31)
        weekdays = _systemd_weekdays(self.weekdays)
        if self.any_day or self.any_weekday:
            named = "" if self.any_weekday else f"{weekdays} "
            return [f"{named}*-{months}-{'*' if self.any_day else days} {time}"]
        return [f"*-{months}-{days} {time}", f"{weekdays} *-{months}-* {time}"]

    def kubernetes_text(self) -> str:
        """The schedule as a Kubernetes CronJob must be given it: its days of the week go 0-6 only.

        A 7 (Sunday here, as in cron) is refused by the API server, and ``N/S``
        there stops at 6: a weekday field that reaches 7 is written out as the
        list of its days, Sunday as 0. The day fields stay restricted, so which
        of them counts is unchanged.
        """
        fields = self.text.split()
        if self.any_weekday or 7 not in _field(fields[4], "day of week", 0, 7):
            return self.text
        fields[4] = ",".join(str(day) for day in sorted(self.weekdays))
        return " ".join(fields)

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
                first = int(span)
                last = high if step_text else first  # N/S: from N to the field's end, every S (as Vixie cron)
        except ValueError:
            raise ValueError(f"schedule field {name} {text!r}: expected *, N, A-B, */N or a list of them") from None
        if step < 1 or not low <= first <= last <= high:
            raise ValueError(f"schedule field {name} {text!r}: values go from {low} to {high}")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def interval_cron(seconds: float) -> str | None:
    """The cron schedule running every ``seconds`` when that divides an hour or a day (None otherwise).

    ``15m`` -> ``*/15 * * * *``, ``6h`` -> ``0 */6 * * *``, ``1d`` -> ``0 0 * * *``; ``90m``,
    ``2d`` or ``30s`` have none. Its runs fall on the hour or at midnight, where an interval
    counts from its first run.
    """
    whole = int(seconds)
    if whole != seconds or whole % 60:
        return None
    minutes = whole // 60
    if minutes < 60 and 60 % minutes == 0:
        return f"{_every(minutes)} * * * *"
    if minutes % 60 == 0 and 24 % (minutes // 60) == 0:
        return f"0 {_every(minutes // 60) if minutes < 1440 else 0} * * *"
    return None


def _every(step: int) -> str:
    return "*" if step == 1 else f"*/{step}"


def _systemd_field(values: frozenset[int], low: int, high: int) -> str:
    """``*``, or the values as systemd lists them: ``A..B`` runs, ``A..B/STEP`` or ``A/STEP`` steps, single ones."""
    if values == frozenset(range(low, high + 1)):
        return "*"
    ordered, parts, i = sorted(values), [], 0
    while i < len(ordered):
        start, end = ordered[i], i
        step = ordered[i + 1] - start if i + 1 < len(ordered) else 0
        while end + 1 < len(ordered) and ordered[end + 1] - ordered[end] == step:
            end += 1
        if end - i >= 2 or (end - i == 1 and step == 1):  # a run worth writing as one
            last = ordered[end]
            parts.append(f"{start:02d}..{last:02d}" if step == 1 else f"{start:02d}/{step}" if last + step > high
                         else f"{start:02d}..{last:02d}/{step}")
            i = end + 1
        else:
            parts.append(f"{start:02d}")
            i += 1
    return ",".join(parts)


def _systemd_weekdays(days: frozenset[int]) -> str:
    """Cron's weekdays (0 = Sunday) as systemd names them, Monday first: ``Mon..Fri``, ``Sat,Sun``."""
    iso = sorted(7 if day == 0 else day for day in days)
    runs: list[list[int]] = []
    for day in iso:
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    names = [_SYSTEMD_WEEKDAYS[run[0] - 1] + ("" if len(run) == 1 else "," if len(run) == 2 else "..")
             + ("" if len(run) == 1 else _SYSTEMD_WEEKDAYS[run[-1] - 1]) for run in runs]
    return ",".join(names)
