"""Business calendars: named holiday lists, and schedules that skip or move around them.

A calendar is a list of dates, or a country (and subdivision) whose public holidays the
``holidays`` package computes offline, or both. A **business day** is Monday to Friday and
not a date of the calendar.

A schedule with ``"exclude": {"calendar": ..., "on_excluded": ...}`` treats a fire on a day
that is not a business day (in the job's timezone) as follows:

* ``skip``: the fire does not run; it is returned flagged ``excluded_by`` so the scheduler
  records it in the history ("excluded by calendar <name>") and previews show it;
* ``next_business_day`` / ``previous_business_day``: it fires at the same wall-clock time on
  the nearest business day after / before (flagged ``moved_by_calendar``). A moved fire that
  coincides with one the schedule has on that day fires once. Wall-clock times are resolved
  as fixed-time cron jobs are (a gap moves to its end, a repeated time is its first copy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from functools import cached_property
from typing import Any

import holidays

from app.domain.errors import ExecutionEngineError, FieldError
from app.domain.schedules import (
    FireTime,
    Schedule,
    local_instants,
    make_fire,
    offset_changes_on,
)
from app.domain.timeutil import gap_end, get_zone

ON_EXCLUDED = ("skip", "next_business_day", "previous_business_day")
CALENDAR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
MAX_DATES = 10_000
#: A calendar that excludes this many days in a row ends the schedule (it never fires).
_MAX_RUN = 3660
_EPSILON = timedelta(microseconds=1)


class CalendarNotFoundError(ExecutionEngineError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"calendar {name!r} not found")


class CalendarExistsError(ExecutionEngineError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a calendar named {name!r} already exists")


class CalendarInUseError(ExecutionEngineError):
    """A calendar that stored jobs' schedules exclude cannot be deleted."""

    def __init__(self, name: str, job_ids: list[str]) -> None:
        self.name = name
        self.job_ids = job_ids
        shown = ", ".join(job_ids[:10]) + (" ..." if len(job_ids) > 10 else "")
        super().__init__(f"calendar {name!r} is used by the schedules of job(s) {shown}")


@dataclass(frozen=True)
class BusinessCalendar:
    """A named set of non-business dates (besides Saturdays and Sundays)."""

    name: str
    dates: frozenset[date] = frozenset()
    country: str | None = None
    subdivision: str | None = None
    description: str = ""

    @cached_property
    def _holidays(self) -> holidays.HolidayBase | None:
        if self.country is None:
            return None
        return holidays.country_holidays(self.country, subdiv=self.subdivision)

    def is_holiday(self, day: date) -> bool:
        """Whether ``day`` is one of the calendar's dates (listed or a public holiday)."""
        if day in self.dates:
            return True
        return self._holidays is not None and day in self._holidays

    def is_business_day(self, day: date) -> bool:
        return day.weekday() < 5 and not self.is_holiday(day)

    def holidays_between(self, first: date, last: date) -> list[date]:
        """The calendar's dates from ``first`` to ``last`` (inclusive), in order."""
        found = {d for d in self.dates if first <= d <= last}
        if self._holidays is not None:
            for year in range(first.year, last.year + 1):
                found.update(d for d in self._holidays_of(year) if first <= d <= last)
        return sorted(found)

    def _holidays_of(self, year: int) -> list[date]:
        assert self.country is not None
        return list(holidays.country_holidays(self.country, subdiv=self.subdivision, years=year))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "dates": sorted(d.isoformat() for d in self.dates),
            "country": self.country,
            "subdivision": self.subdivision,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BusinessCalendar:
        """From a validated definition (``calendar_problems`` is empty)."""
        return cls(
            name=data["name"],
            dates=frozenset(date.fromisoformat(d) for d in data.get("dates") or []),
            country=data.get("country"),
            subdivision=data.get("subdivision"),
            description=data.get("description") or "",
        )


def calendar_problems(data: dict[str, Any]) -> list[FieldError]:
    """Every problem of a calendar definition, each naming its field."""
    errors: list[FieldError] = []
    name = data.get("name")
    if not isinstance(name, str) or not CALENDAR_NAME.match(name):
        errors.append(
            FieldError(
                "name",
                "must be 1-100 letters, digits, '_', '.' or '-', starting with a letter or digit",
            )
        )
    dates = data.get("dates") or []
    if len(dates) > MAX_DATES:
        errors.append(FieldError("dates", f"at most {MAX_DATES} dates"))
    else:
        for index, text in enumerate(dates):
            try:
                date.fromisoformat(text)
            except (TypeError, ValueError):
                errors.append(FieldError(f"dates[{index}]", f"{text!r} is not a YYYY-MM-DD date"))
    country, subdivision = data.get("country"), data.get("subdivision")
    supported = holidays.list_supported_countries()
    if country is not None and country not in supported:
        errors.append(
            FieldError("country", f"{country!r} is not a country code the holidays package knows")
        )
    elif country is not None and subdivision is not None:
        if subdivision not in supported[country]:
            known = ", ".join(supported[country][:20]) or "none"
            errors.append(
                FieldError(
                    "subdivision",
                    f"{subdivision!r} is not a subdivision of {country} (known: {known})",
                )
            )
    elif country is None and subdivision is not None:
        errors.append(FieldError("subdivision", "needs a country"))
    if country is None and not dates:
        errors.append(FieldError("dates", "give dates, a country, or both"))
    return errors


def _instant(day: date, clock: time, zone: Any) -> tuple[datetime, bool]:
    naive = datetime.combine(day, clock)
    instants, in_gap = local_instants(naive, zone)
    return (gap_end(naive, zone) if in_gap else instants[0]), in_gap


class ExcludingSchedule:
    """``base`` with the fires on non-business days skipped or moved (module docstring)."""

    def __init__(self, base: Schedule, calendar: BusinessCalendar, on_excluded: str) -> None:
        self.base = base
        self.calendar = calendar
        self.on_excluded = on_excluded
        self.timezone = base.timezone
        self.zone = get_zone(base.timezone)

    def _day(self, fire: FireTime) -> date:
        return fire.nominal_local.date()

    def next_fire(self, after: datetime) -> FireTime | None:
        if self.on_excluded == "skip":
            fire = self.base.next_fire(after)
            if fire is None or self.calendar.is_business_day(self._day(fire)):
                return fire
            return replace(fire, excluded_by=self.calendar.name)
        step = 1 if self.on_excluded == "next_business_day" else -1
        day = after.astimezone(self.zone).date() - timedelta(days=1)
        for _ in range(_MAX_RUN):
            if not self.calendar.is_business_day(day):
                day += timedelta(days=1)
                continue
            best = self._best_on(day, after, step)
            if best is not None:
                return best
            # Nothing on this business day: jump to the day the base fires next on (for
            # previous_business_day, the business day that fire would move to).
            end, _ = _instant(day + timedelta(days=1), time(0), self.zone)
            following = self.base.next_fire(max(after, end - _EPSILON))
            if following is None:
                return None
            target = self._day(following)
            while step < 0 and target > day and not self.calendar.is_business_day(target):
                target -= timedelta(days=1)
            day = max(day + timedelta(days=1), target)
        return None

    def _best_on(self, day: date, after: datetime, step: int) -> FireTime | None:
        """The earliest fire later than ``after`` that happens on business day ``day``: its
        own, or one moved to it from the non-business days before it (step 1) or after it
        (step -1)."""
        candidates = []
        own = self._first_on(day, after)
        if own is not None:
            candidates.append(own)
        other = day - timedelta(days=step)
        for _ in range(_MAX_RUN):
            if self.calendar.is_business_day(other):
                break
            moved = self._moved_from(other, day, after)
            if moved is not None:
                candidates.append(moved)
            other -= timedelta(days=step)
        if not candidates:
            return None
        return min(candidates, key=lambda f: (f.at, f.moved_by_calendar))

    def _first_on(self, day: date, after: datetime) -> FireTime | None:
        start, _ = _instant(day, time(0), self.zone)
        fire = self.base.next_fire(max(after, start - _EPSILON))
        return fire if fire is not None and self._day(fire) == day else None

    def _moved_from(self, source: date, target: date, after: datetime) -> FireTime | None:
        """The first fire of non-business day ``source`` whose time on ``target`` is later
        than ``after``, moved there."""
        clock = time(0)
        after_local = after.astimezone(self.zone).replace(tzinfo=None)
        if after_local.date() == target:
            # Only times of day from after's on can land later than it on ``target`` (from
            # the widest DST shift before it when ``target`` changes its UTC offset). Every
            # such time happens on ``source`` at or after its first instant there.
            shifts = offset_changes_on(target, self.zone)
            earliest = after_local - (timedelta(hours=3) if shifts else _EPSILON)
            clock = earliest.time() if earliest.date() == target else time(0)
        start, _ = _instant(source, clock, self.zone)
        cursor = start - _EPSILON
        while True:
            fire = self.base.next_fire(cursor)
            if fire is None or self._day(fire) != source:
                return None
            at, in_gap = _instant(target, fire.nominal_local.time(), self.zone)
            if at > after:
                moved = make_fire(at, self.zone, fire.nominal_local, in_gap=in_gap)
                return replace(moved, moved_by_calendar=True)
            cursor = fire.at
