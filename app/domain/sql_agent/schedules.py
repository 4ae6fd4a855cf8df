"""``msdb.dbo.sysschedules`` rows as ``schedule_config`` objects.

* 1 once: ``{"type": "once", "at": active_start_date + active_start_time}``;
* 4 daily: ``calendar`` ``daily``, ``interval`` = freq_interval;
* 8 weekly: ``calendar`` ``weekly``, ``weekdays`` from the freq_interval bitmask,
  ``interval`` = freq_recurrence_factor;
* 16 monthly: ``calendar`` ``monthly``, ``day_of_month`` = freq_interval;
* 32 monthly relative: ``calendar`` ``monthly_relative``, ``relative`` from
  freq_relative_interval and freq_interval;
* 64, 128: not mapped (reported): when SQL Server Agent starts / the computer is idle.

Sub-day (freq_subday_type): 1 once at active_start_time (``at``); 2, 4, 8 every
freq_subday_interval seconds, minutes, hours from active_start_time until active_end_time
(``repeat``, both inclusive as in SQL Server Agent). active_start_date is ``start_date`` (the
day intervals count from, as in SQL Server Agent), active_end_date ``end_date`` (99991231: no
end). Every schedule gets ``misfire_policy: skip`` and ``overlap_policy: skip``: SQL Server Agent
runs no fire it missed while it was stopped, and does not start a job that is still running.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from app.domain.errors import FieldError
from app.domain.schedules import local_instants
from app.domain.sql_agent.rows import SysScheduleRow
from app.domain.timeutil import gap_end, get_zone

#: freq_type values that cannot be mapped (reported, the job is imported without them).
UNMAPPED_FREQ_TYPES = {
    64: "runs when SQL Server Agent starts",
    128: "runs when the computer is idle",
}
MAPPED_FREQ_TYPES = (1, 4, 8, 16, 32)
#: weekly freq_interval bits, Sunday = 1 ... Saturday = 64.
WEEKDAY_BITS = (
    (2, "monday"),
    (4, "tuesday"),
    (8, "wednesday"),
    (16, "thursday"),
    (32, "friday"),
    (64, "saturday"),
    (1, "sunday"),
)
RELATIVE_WEEKS = {1: "first", 2: "second", 4: "third", 8: "fourth", 16: "last"}
RELATIVE_DAYS = {
    1: "sunday",
    2: "monday",
    3: "tuesday",
    4: "wednesday",
    5: "thursday",
    6: "friday",
    7: "saturday",
    8: "day",
    9: "weekday",
    10: "weekend_day",
}
SUBDAY_UNITS = {2: "seconds", 4: "minutes", 8: "hours"}
NO_END_DATE = 99991231
POLICIES = {"misfire_policy": "skip", "overlap_policy": "skip"}


@dataclass
class MappedSchedule:
    """A schedule as mapped: ``config`` (None when it cannot be mapped, then ``reason``)
    and the warnings worth a look."""

    config: dict[str, Any] | None
    reason: str = ""
    warnings: tuple[str, ...] = ()


def agent_date(value: int) -> date:
    """A yyyymmdd int as a date; ValueError when it is not one."""
    try:
        if not 10000101 <= value <= NO_END_DATE:
            raise ValueError
        return date(value // 10000, value // 100 % 100, value % 100)
    except ValueError:
        raise ValueError(f"{value} is not a date yyyymmdd") from None


def agent_time(value: int) -> str:
    """An hhmmss int as ``HH:MM:SS``; ValueError when it is not a time of day."""
    if not 0 <= value <= 235959:
        raise ValueError(f"{value} is not a time hhmmss")
    hours, minutes, seconds = value // 10000, value // 100 % 100, value % 100
    if minutes > 59 or seconds > 59:
        raise ValueError(f"{value} is not a time hhmmss")
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}"


def schedule_errors(row: SysScheduleRow, where: str) -> list[FieldError]:
    """Every problem of a schedule row that makes the export invalid (``where`` is the
    row's path, e.g. ``export.sysschedules[3]``)."""
    errors: list[FieldError] = []

    def bad(column: str, message: str) -> None:
        errors.append(FieldError(f"{where}.{column}", message))

    if row.freq_type not in MAPPED_FREQ_TYPES and row.freq_type not in UNMAPPED_FREQ_TYPES:
        bad("freq_type", f"unknown freq_type {row.freq_type} (1, 4, 8, 16, 32, 64 or 128)")
        return errors
    if row.freq_type in UNMAPPED_FREQ_TYPES:
        return errors
    for column in ("active_start_date",) + (
        ("active_end_date",) if row.active_end_date != NO_END_DATE else ()
    ):
        try:
            agent_date(getattr(row, column))
        except ValueError as exc:
            bad(column, str(exc))
    if (
        not errors
        and row.active_end_date != NO_END_DATE
        and agent_date(row.active_end_date) < agent_date(row.active_start_date)
    ):
        bad("active_end_date", "is before active_start_date")
    for column in ("active_start_time", "active_end_time"):
        try:
            agent_time(getattr(row, column))
        except ValueError as exc:
            bad(column, str(exc))
    kind = row.freq_type
    if kind == 4 and not 1 <= row.freq_interval <= 1000:
        bad("freq_interval", "daily: every N days, N from 1 to 1000")
    if kind == 8 and not 1 <= row.freq_interval <= 127:
        bad("freq_interval", "weekly: a bitmask of days, 1 (Sunday) to 64 (Saturday), not 0")
    if kind == 16 and not 1 <= row.freq_interval <= 31:
        bad("freq_interval", "monthly: the day of the month, 1 to 31")
    if kind == 32:
        if row.freq_interval not in RELATIVE_DAYS:
            bad(
                "freq_interval",
                "monthly relative: 1-7 (Sunday-Saturday), 8 day, 9 weekday, 10 weekend day",
            )
        if row.freq_relative_interval not in RELATIVE_WEEKS:
            bad("freq_relative_interval", "1 first, 2 second, 4 third, 8 fourth or 16 last")
    if kind in (8, 16, 32) and not 0 <= row.freq_recurrence_factor <= 1000:
        bad("freq_recurrence_factor", "every N weeks or months, N from 0 (once) to 1000")
    if kind != 1:
        if row.freq_subday_type not in (1, *SUBDAY_UNITS):
            bad("freq_subday_type", "1 (at a time), 2 (seconds), 4 (minutes) or 8 (hours)")
        elif row.freq_subday_type != 1:
            unit = SUBDAY_UNITS[row.freq_subday_type]
            limit = {"seconds": 86400, "minutes": 1440, "hours": 24}[unit]
            if not 1 <= row.freq_subday_interval <= limit:
                bad("freq_subday_interval", f"every N {unit}, N from 1 to {limit}")
    return errors


def map_schedule(row: SysScheduleRow, timezone: str) -> MappedSchedule:
    """The ``schedule_config`` of a valid row (``schedule_errors`` is empty) in the job's
    ``timezone``."""
    if row.freq_type in UNMAPPED_FREQ_TYPES:
        return MappedSchedule(
            None,
            f"freq_type {row.freq_type} ({UNMAPPED_FREQ_TYPES[row.freq_type]}) has no "
            "counterpart here: the schedule is not carried over",
        )
    start = agent_date(row.active_start_date)
    if row.freq_type == 1:
        return _once(start, agent_time(row.active_start_time), timezone)
    config: dict[str, Any] = {"type": "calendar", "start_date": start.isoformat()}
    warnings: list[str] = []
    every = max(row.freq_recurrence_factor, 1)
    if row.freq_type == 4:
        config.update(frequency="daily", interval=row.freq_interval)
    elif row.freq_type == 8:
        days = [name for bit, name in WEEKDAY_BITS if row.freq_interval & bit]
        config.update(frequency="weekly", interval=every, weekdays=days)
        if every > 1 and "sunday" in days and len(days) > 1:
            warnings.append(
                "every N weeks with Sunday among other days: weeks here start on Monday, "
                "so check which Sunday runs against msdb's next_run_date"
            )
    elif row.freq_type == 16:
        config.update(frequency="monthly", interval=every, day_of_month=row.freq_interval)
    else:
        config.update(
            frequency="monthly_relative",
            interval=every,
            relative={
                "week": RELATIVE_WEEKS[row.freq_relative_interval],
                "day": RELATIVE_DAYS[row.freq_interval],
            },
        )
    if row.active_end_date != NO_END_DATE:
        config["end_date"] = agent_date(row.active_end_date).isoformat()
    first = agent_time(row.active_start_time)
    if row.freq_subday_type == 1:
        config["at"] = first
    else:
        last = agent_time(row.active_end_time)
        if last < first:
            return MappedSchedule(
                None,
                f"its window {first}-{last} crosses midnight, which a repeat here cannot: "
                "the schedule is not carried over (split it in two)",
            )
        config["repeat"] = {
            "every": row.freq_subday_interval,
            "unit": SUBDAY_UNITS[row.freq_subday_type],
            "from": first,
            "until": last,
        }
    config.update(POLICIES)
    return MappedSchedule(config, warnings=tuple(warnings))


def _once(day: date, at: str, timezone: str) -> MappedSchedule:
    """A one-time schedule; a time in a DST gap fires when the gap ends, as a fixed-time
    schedule does here (a ``once`` schedule in a gap is refused, so the time is moved)."""
    naive = datetime.combine(day, time.fromisoformat(at))
    zone = get_zone(timezone)
    _, in_gap = local_instants(naive, zone)
    if not in_gap:
        return MappedSchedule({"type": "once", "at": naive.isoformat(), **POLICIES})
    moved = gap_end(naive, zone).astimezone(zone).replace(tzinfo=None)
    return MappedSchedule(
        {"type": "once", "at": moved.isoformat(), **POLICIES},
        warnings=(
            f"{naive.isoformat()} does not exist in {timezone} (DST gap): it fires at "
            f"{moved.isoformat()}, when the gap ends",
        ),
    )
