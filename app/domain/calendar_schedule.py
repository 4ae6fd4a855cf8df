"""SQL Server Agent's schedule model (``{"type": "calendar", ...}``) in a job's timezone.

Which days: ``daily`` every ``interval`` days from ``start_date``; ``weekly`` on ``weekdays``
every ``interval`` weeks, weeks starting on Monday and counted from the week of
``start_date``; ``monthly`` on ``day_of_month`` (the month's last day when the month is
shorter, as SQL Server Agent does) every ``interval`` months from the month of
``start_date``; ``monthly_relative`` on "the first/second/third/fourth/last
<weekday|day|weekday|weekend_day>" every ``interval`` months. Never before ``start_date`` nor
after ``end_date``.

Which times of those days: once at ``at`` (default 00:00:00), or every ``repeat.every``
seconds/minutes/hours from ``repeat.from`` until ``repeat.until``, both inclusive.

DST (ARCHITECTURE.md "Time semantics"): ``at`` behaves as a fixed-time cron job (in a gap it
fires once when the gap ends, in a repeated hour once, at the first occurrence); ``repeat``
slots behave as a minute-step cron job (slots in a gap do not exist, slots in a repeated
hour fire in both copies).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from app.domain.schedules import FireTime, local_instants, make_fire
from app.domain.timeutil import gap_end, get_zone

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
WEEKS = ("first", "second", "third", "fourth", "last")
_UNIT_SECONDS = {"seconds": 1, "minutes": 60, "hours": 3600}
_LAST_DATE = date(9999, 12, 30)  # the day after must still have instants in every zone
_SHIFT = timedelta(hours=3)


def parse_clock(text: str) -> time:
    """``HH:MM`` or ``HH:MM:SS`` as a time (the pattern is checked by the model)."""
    return time.fromisoformat(text if text.count(":") == 2 else f"{text}:00")


def relative_day(year: int, month: int, week: str, day: str) -> int:
    """The day of the month of SQL Server Agent's "the <week> <day>" (``week`` first..fourth
    or last; ``day`` a weekday name, ``day``, ``weekday`` or ``weekend_day``)."""
    last = calendar.monthrange(year, month)[1]
    if day == "day":
        wanted = set(range(7))
    elif day == "weekday":
        wanted = set(range(5))
    elif day == "weekend_day":
        wanted = {5, 6}
    else:
        wanted = {WEEKDAYS.index(day)}
    matches = [d for d in range(1, last + 1) if date(year, month, d).weekday() in wanted]
    return matches[-1] if week == "last" else matches[WEEKS.index(week)]


def _months(d: date) -> int:
    return d.year * 12 + d.month - 1


def _monday(d: date) -> date:
    return d - timedelta(days=d.weekday())


@dataclass(frozen=True)
class CalendarRule:
    """A validated calendar ``schedule_config`` as plain values."""

    frequency: str
    interval: int
    start_date: date
    end_date: date | None
    weekdays: frozenset[int]
    day_of_month: int
    relative: tuple[str, str] | None
    at: time | None
    repeat_every: timedelta | None
    repeat_from: time
    repeat_until: time

    @classmethod
    def of(cls, config: dict[str, Any], start_date: date) -> CalendarRule:
        repeat = config.get("repeat")
        relative = config.get("relative")
        weekdays = config.get("weekdays") or [WEEKDAYS[start_date.weekday()]]
        return cls(
            frequency=config["frequency"],
            interval=int(config.get("interval", 1)),
            start_date=start_date,
            end_date=date.fromisoformat(config["end_date"]) if config.get("end_date") else None,
            weekdays=frozenset(WEEKDAYS.index(w) for w in weekdays),
            day_of_month=int(config.get("day_of_month") or start_date.day),
            relative=(relative["week"], relative["day"]) if relative else None,
            at=None if repeat else parse_clock(config.get("at") or "00:00:00"),
            repeat_every=(
                timedelta(seconds=int(repeat["every"]) * _UNIT_SECONDS[repeat["unit"]])
                if repeat
                else None
            ),
            repeat_from=parse_clock(repeat.get("from", "00:00:00")) if repeat else time(0),
            repeat_until=parse_clock(repeat.get("until", "23:59:59")) if repeat else time(0),
        )

    def runs_on(self, d: date) -> bool:
        """Whether ``d`` is one of the schedule's days."""
        if d < self.start_date or (self.end_date is not None and d > self.end_date):
            return False
        if self.frequency == "daily":
            return (d - self.start_date).days % self.interval == 0
        if self.frequency == "weekly":
            weeks = (_monday(d) - _monday(self.start_date)).days // 7
            return d.weekday() in self.weekdays and weeks % self.interval == 0
        if (_months(d) - _months(self.start_date)) % self.interval:
            return False
        if self.frequency == "monthly":
            last = calendar.monthrange(d.year, d.month)[1]
            return d.day == min(self.day_of_month, last)
        assert self.relative is not None
        return d.day == relative_day(d.year, d.month, *self.relative)

    def days_from(self, first: date) -> Iterator[date]:
        """The schedule's days from ``first`` on, in order (jumping over months and
        intervals that cannot match)."""
        d = max(first, self.start_date)
        while d <= _LAST_DATE and (self.end_date is None or d <= self.end_date):
            if self.frequency in ("monthly", "monthly_relative"):
                behind = (_months(d) - _months(self.start_date)) % self.interval
                if behind:
                    months = _months(d) + self.interval - behind
                    d = date(months // 12, months % 12 + 1, 1)
                    continue
            elif self.frequency == "daily":
                behind = (d - self.start_date).days % self.interval
                if behind:
                    d += timedelta(days=self.interval - behind)
                    continue
            if self.runs_on(d):
                yield d
            d += timedelta(days=1)


class CalendarSchedule:
    """Fires of a ``calendar`` schedule (see the module docstring for the rules)."""

    def __init__(self, rule: CalendarRule, timezone: str) -> None:
        self.rule = rule
        self.timezone = timezone
        self.zone = get_zone(timezone)

    def _first_fire(self, d: date, after: datetime) -> FireTime | None:
        """The earliest fire of day ``d`` later than ``after``."""
        rule = self.rule
        if rule.at is not None:
            naive = datetime.combine(d, rule.at)
            instants, in_gap = local_instants(naive, self.zone)
            at = gap_end(naive, self.zone) if in_gap else instants[0]
            return make_fire(at, self.zone, naive, in_gap=in_gap) if at > after else None
        assert rule.repeat_every is not None
        start = datetime.combine(d, rule.repeat_from)
        last = (datetime.combine(d, rule.repeat_until) - start) // rule.repeat_every
        # The slots that exist, mapped to their first (fold 0) or second (fold 1) instant,
        # are in order: binary-search each mapping for its first slot later than ``after``.
        best: FireTime | None = None
        for fold in (0, 1):
            lo, hi = 0, last + 1
            while lo < hi:
                mid = (lo + hi) // 2
                if self._slot_instant(start + mid * rule.repeat_every, fold) > after:
                    hi = mid
                else:
                    lo = mid + 1
            for k in range(lo, last + 1):
                naive = start + k * rule.repeat_every
                instants, in_gap = local_instants(naive, self.zone)
                if in_gap:
                    continue  # a slot in a gap does not exist
                at = instants[min(fold, len(instants) - 1)]
                if at > after:
                    if best is None or at < best.at:
                        best = make_fire(at, self.zone, naive)
                    break
        return best

    def _slot_instant(self, naive: datetime, fold: int) -> datetime:
        instants, in_gap = local_instants(naive, self.zone)
        if in_gap:
            return gap_end(naive, self.zone)
        return instants[min(fold, len(instants) - 1)]

    def next_fire(self, after: datetime) -> FireTime | None:
        local_day = after.astimezone(self.zone).date()
        first = local_day - timedelta(days=1) if local_day > date.min else local_day
        best: FireTime | None = None
        for d in self.rule.days_from(first):
            if best is not None and datetime.combine(d, time(0)) > (best.nominal_local + _SHIFT):
                break
            fire = self._first_fire(d, after)
            if fire is not None and (best is None or fire.at < best.at):
                best = fire
        return best


def calendar_start_date(config: dict[str, Any], timezone: str, anchor: datetime) -> date:
    """``start_date`` of a calendar config, else the local date of ``anchor``."""
    text = config.get("start_date")
    if text:
        return date.fromisoformat(text)
    return anchor.astimezone(get_zone(timezone)).date()
