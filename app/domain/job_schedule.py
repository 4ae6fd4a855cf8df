"""A job's schedules as one: ``schedule_config`` (unnamed) and ``schedules: [...]`` (named),
merged into one ``JobSchedule`` whose ``next_fire(after)`` is the earliest fire of any
enabled schedule, with its source.

Two schedules that fire at the same instant fire once (the (job_id, scheduled_for) key of
the store holds); the fire names the first of them in the job's order (``schedule_config``
first, then ``schedules`` in their order). A fire that runs wins over one a business
calendar excludes at the same instant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from app.domain.business_calendars import BusinessCalendar, ExcludingSchedule
from app.domain.calendar_schedule import CalendarRule, CalendarSchedule, calendar_start_date
from app.domain.errors import ConfigurationError, FieldError
from app.domain.jobs import StoredJob
from app.domain.schedule_config import calendars_used
from app.domain.schedules import (
    CronSchedule,
    FireTime,
    IntervalSchedule,
    OnceSchedule,
    Schedule,
    safe_next,
    to_instant,
)

_EPSILON = timedelta(microseconds=1)
#: Key of the job snapshot's and the execution's metadata naming the schedule that fired it.
SCHEDULE_NAME_KEY = "schedule_name"


def fired_by(stored: StoredJob, source: str | None) -> StoredJob:
    """``stored`` as the run a named schedule fires records it: its job snapshot's metadata
    names the schedule (the execution's metadata shows it as ``schedule_name``)."""
    if source is None:
        return stored
    job = replace(stored.job, metadata={**stored.job.metadata, SCHEDULE_NAME_KEY: source})
    return replace(stored, job=job)


def build_schedule(
    config: dict[str, Any],
    timezone: str,
    *,
    created_at: datetime | None = None,
    calendars: Mapping[str, BusinessCalendar] | None = None,
    prefix: str = "schedule_config",
) -> Schedule:
    """The Schedule of one validated ``schedule_config`` (with its ``exclude`` applied)."""
    kind = config["type"]
    start = config.get("start_at")
    end = config.get("end_at")
    start_at = to_instant(start, timezone, f"{prefix}.start_at") if start else None
    end_at = to_instant(end, timezone, f"{prefix}.end_at") if end else None
    schedule: Schedule
    if kind == "cron":
        schedule = CronSchedule(config["expression"], timezone, start_at=start_at, end_at=end_at)
    elif kind == "interval":
        anchor = start_at or created_at
        if anchor is None:
            raise ConfigurationError(
                [FieldError(f"{prefix}.start_at", "an interval needs start_at or a created_at")]
            )
        schedule = IntervalSchedule(int(config["every_seconds"]), timezone, anchor, end_at=end_at)
    elif kind == "once":
        schedule = OnceSchedule(to_instant(config["at"], timezone, f"{prefix}.at"), timezone)
    elif kind == "calendar":
        if created_at is None and not config.get("start_date"):
            raise ConfigurationError(
                [FieldError(f"{prefix}.start_date", "a calendar needs start_date or a created_at")]
            )
        first_day = calendar_start_date(config, timezone, created_at or datetime.min)
        schedule = CalendarSchedule(CalendarRule.of(config, first_day), timezone)
    else:
        raise ConfigurationError([FieldError(f"{prefix}.type", f"unknown type {kind!r}")])
    exclude = config.get("exclude")
    if exclude:
        name = exclude["calendar"]
        found = (calendars or {}).get(name)
        if found is None:
            raise ConfigurationError(
                [FieldError(f"{prefix}.exclude.calendar", f"no calendar named {name!r}")]
            )
        schedule = ExcludingSchedule(schedule, found, exclude.get("on_excluded", "skip"))
    return schedule


@dataclass(frozen=True)
class NamedSchedule:
    """One of a job's schedules: ``name`` None for the job's ``schedule_config``."""

    name: str | None
    enabled: bool
    config: dict[str, Any]


def job_schedules(
    schedule_config: dict[str, Any] | None, schedules: list[dict[str, Any]] | None
) -> list[NamedSchedule]:
    """A job's schedules in order: the unnamed ``schedule_config``, then ``schedules``."""
    out = [NamedSchedule(None, True, schedule_config)] if schedule_config else []
    out += [
        NamedSchedule(s["name"], bool(s.get("enabled", True)), s["schedule_config"])
        for s in schedules or []
    ]
    return out


class JobSchedule:
    """The enabled schedules of a job, merged (module docstring)."""

    def __init__(self, parts: list[tuple[str | None, Schedule]], timezone: str) -> None:
        self.parts = parts
        self.timezone = timezone

    def next_fire(self, after: datetime) -> FireTime | None:
        best: FireTime | None = None
        for name, schedule in self.parts:
            fire = safe_next(schedule, after)
            if fire is None:
                continue
            if (
                best is None
                or fire.at < best.at
                or (fire.at == best.at and best.excluded_by and not fire.excluded_by)
            ):
                best = replace(fire, source=name)
        return best

    def fire_at(self, at: datetime) -> FireTime | None:
        """The fire at instant ``at`` (None when the schedules no longer fire then)."""
        fire = self.next_fire(at - _EPSILON)
        return fire if fire is not None and fire.at == at else None


def build_job_schedule(
    timezone: str,
    schedule_config: dict[str, Any] | None,
    schedules: list[dict[str, Any]] | None,
    *,
    created_at: datetime | None = None,
    calendars: Mapping[str, BusinessCalendar] | None = None,
) -> JobSchedule:
    """The merged schedule of a job's enabled schedules."""
    parts: list[tuple[str | None, Schedule]] = []
    errors: list[FieldError] = []
    for index, entry in enumerate(job_schedules(schedule_config, schedules)):
        if not entry.enabled:
            continue
        prefix = (
            "schedule_config"
            if entry.name is None
            else f"schedules[{index - bool(schedule_config)}].schedule_config"
        )
        try:
            parts.append(
                (
                    entry.name,
                    build_schedule(
                        entry.config,
                        timezone,
                        created_at=created_at,
                        calendars=calendars,
                        prefix=prefix,
                    ),
                )
            )
        except ConfigurationError as exc:
            errors.extend(exc.errors)
    if errors:
        raise ConfigurationError(errors)
    return JobSchedule(parts, timezone)


def required_calendars(
    schedule_config: dict[str, Any] | None, schedules: list[dict[str, Any]] | None
) -> set[str]:
    """Names of the business calendars a job's schedules exclude."""
    return {name for _, name in calendars_used(schedule_config, schedules)}
