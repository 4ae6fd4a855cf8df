"""Checks for a job's ``schedule_config`` and ``schedules`` (every problem, each naming its
field).

The shape (fields, types, enums, defaults) comes from the models generated from
``schemas/schedule_config.json``, the single source of the contract; what a JSON schema
cannot say is checked here: a cron expression field by field, dates and times that exist,
``end`` after ``start``, which calendar fields go with which frequency.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from pydantic import BaseModel, ValidationError

from app.domain.cron import cron_problems
from app.domain.errors import FieldError
from app.domain.field_paths import field_errors_from_pydantic
from app.domain.generated.schedule_config import (
    CalendarScheduleConfig,
    CronScheduleConfig,
    IntervalScheduleConfig,
    OnceScheduleConfig,
)
from app.domain.timeutil import parse_iso

#: Schedule type -> the generated model of its schedule_config.
CONFIG_MODELS: dict[str, type[BaseModel]] = {
    "cron": CronScheduleConfig,
    "interval": IntervalScheduleConfig,
    "once": OnceScheduleConfig,
    "calendar": CalendarScheduleConfig,
}
SCHEDULE_TYPES = tuple(CONFIG_MODELS)
SCHEDULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
MAX_SCHEDULES = 20
_MAX_DAY_SECONDS = 86_400
_UNIT_SECONDS = {"seconds": 1, "minutes": 60, "hours": 3600}
#: The frequencies of a calendar schedule (a bad one is reported once, by the model).
FREQUENCIES = ("daily", "weekly", "monthly", "monthly_relative")


def _shape_errors(model: type[BaseModel], config: dict[str, Any], prefix: str) -> list[FieldError]:
    try:
        model.model_validate(config)
    except ValidationError as exc:
        return field_errors_from_pydantic(
            exc.errors(include_url=False, include_input=False), prefix, whole=prefix
        )
    return []


def validate_schedule_config(config: Any, prefix: str = "schedule_config") -> list[FieldError]:
    """Every problem with a schedule_config, each naming its field."""
    if config is None:
        return []
    if not isinstance(config, dict):
        return [FieldError(prefix, "must be an object or null")]
    kind = config.get("type")
    if kind not in CONFIG_MODELS:
        return [FieldError(f"{prefix}.type", f"must be one of {', '.join(SCHEDULE_TYPES)}")]
    errors = _shape_errors(CONFIG_MODELS[kind], config, prefix)
    bad = {e.field for e in errors}
    if kind == "cron" and f"{prefix}.expression" not in bad:
        errors += [
            FieldError(f"{prefix}.expression", p) for p in cron_problems(config["expression"])
        ]
    for key in ("start_at", "end_at", "at") if kind != "calendar" else ():
        value = config.get(key)
        if isinstance(value, str) and f"{prefix}.{key}" not in bad:
            errors.extend(_check_time(value, f"{prefix}.{key}"))
    if kind == "calendar":
        errors.extend(_calendar_errors(config, prefix, bad))
    start, end = config.get("start_at"), config.get("end_at")
    if (
        isinstance(start, str)
        and isinstance(end, str)
        and not errors
        and parse_iso(end).replace(tzinfo=None) <= parse_iso(start).replace(tzinfo=None)
    ):
        errors.append(FieldError(f"{prefix}.end_at", "must be after start_at"))
    return errors


def _check_time(value: str, field: str) -> list[FieldError]:
    try:
        moment = parse_iso(value)
    except ValueError:
        return [FieldError(field, f"{value!r} is not an ISO 8601 date-time")]
    offset = moment.utcoffset()
    if offset is not None and abs(offset.total_seconds()) > 14 * 3600:
        return [FieldError(field, "the UTC offset must be within ±14:00")]
    return []


def _real_date(value: Any) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _calendar_errors(config: dict[str, Any], prefix: str, bad: set[str]) -> list[FieldError]:
    errors: list[FieldError] = []
    frequency = config.get("frequency")
    only = {
        "weekdays": "weekly",
        "day_of_month": "monthly",
        "relative": "monthly_relative",
    }
    for key, wanted in only.items():
        if config.get(key) is not None and frequency in FREQUENCIES and frequency != wanted:
            errors.append(FieldError(f"{prefix}.{key}", f"goes only with frequency {wanted}"))
    if frequency == "monthly_relative" and config.get("relative") is None:
        errors.append(
            FieldError(f"{prefix}.relative", "is required for frequency monthly_relative")
        )
    weekdays = config.get("weekdays")
    if isinstance(weekdays, list) and len(set(map(str, weekdays))) != len(weekdays):
        errors.append(FieldError(f"{prefix}.weekdays", "must not name a day twice"))
    if config.get("at") is not None and config.get("repeat") is not None:
        errors.append(FieldError(f"{prefix}.repeat", "at and repeat are exclusive: give one"))
    for key in ("start_date", "end_date"):
        value = config.get(key)
        if isinstance(value, str) and f"{prefix}.{key}" not in bad and _real_date(value) is None:
            errors.append(FieldError(f"{prefix}.{key}", f"{value!r} is not a real date"))
    start, end = _real_date(config.get("start_date")), _real_date(config.get("end_date"))
    if start is not None and end is not None and end < start:
        errors.append(FieldError(f"{prefix}.end_date", "must not be before start_date"))
    repeat = config.get("repeat")
    if isinstance(repeat, dict) and f"{prefix}.repeat" not in {e.field for e in errors}:
        errors.extend(_repeat_errors(repeat, f"{prefix}.repeat"))
    return errors


def _repeat_errors(repeat: dict[str, Any], prefix: str) -> list[FieldError]:
    every, unit = repeat.get("every"), repeat.get("unit")
    errors: list[FieldError] = []
    if (
        isinstance(every, int)
        and unit in _UNIT_SECONDS
        and every * _UNIT_SECONDS[unit] > _MAX_DAY_SECONDS
    ):
        errors.append(FieldError(f"{prefix}.every", "must be at most one day"))
    start, end = repeat.get("from", "00:00:00"), repeat.get("until", "23:59:59")
    if isinstance(start, str) and isinstance(end, str) and _clock(end) < _clock(start):
        errors.append(FieldError(f"{prefix}.until", "must not be before from (same day)"))
    return errors


def _clock(text: str) -> str:
    return text if text.count(":") == 2 else f"{text}:00"


def validate_schedules(schedules: Any, schedule_config: Any) -> list[FieldError]:
    """Every problem with a job's ``schedules`` list (named schedules beside the unnamed
    ``schedule_config``): names unique, each config valid, one misfire/overlap policy per job."""
    if schedules is None:
        return []
    if not isinstance(schedules, list):
        return [FieldError("schedules", "must be a list of named schedules or null")]
    if len(schedules) > MAX_SCHEDULES:
        return [FieldError("schedules", f"at most {MAX_SCHEDULES} schedules per job")]
    errors: list[FieldError] = []
    seen: dict[str, int] = {}
    configs = [schedule_config] if isinstance(schedule_config, dict) else []
    for index, entry in enumerate(schedules):
        where = f"schedules[{index}]"
        if not isinstance(entry, dict):
            errors.append(FieldError(where, "must be an object"))
            continue
        for key in sorted(set(entry) - {"name", "enabled", "schedule_config"}):
            errors.append(FieldError(f"{where}.{key}", "unknown field"))
        name = entry.get("name")
        if not isinstance(name, str) or not SCHEDULE_NAME.match(name):
            errors.append(
                FieldError(
                    f"{where}.name",
                    "is required: 1-100 letters, digits, '_', '.', ':' "
                    "or '-', starting with a letter or digit",
                )
            )
        elif name in seen:
            errors.append(
                FieldError(
                    f"{where}.name",
                    f"duplicate schedule name {name!r} (also schedules[{seen[name]}])",
                )
            )
        else:
            seen[name] = index
        if not isinstance(entry.get("enabled", True), bool):
            errors.append(FieldError(f"{where}.enabled", "must be a boolean"))
        config = entry.get("schedule_config")
        if config is None:
            errors.append(FieldError(f"{where}.schedule_config", "is required"))
        else:
            found = validate_schedule_config(config, f"{where}.schedule_config")
            errors.extend(found)
            if not found:
                configs.append(config)
    errors.extend(_policy_errors(configs, schedules, schedule_config))
    return errors


def _policy_errors(
    configs: list[dict[str, Any]], schedules: list[Any], schedule_config: Any
) -> list[FieldError]:
    """misfire_policy and overlap_policy belong to the job: schedules that set them agree."""
    errors: list[FieldError] = []
    for key in ("misfire_policy", "overlap_policy"):
        values = {c[key] for c in configs if key in c}
        if len(values) > 1:
            where = [
                f"schedules[{i}].schedule_config.{key}"
                for i, s in enumerate(schedules)
                if isinstance(s, dict)
                and isinstance(s.get("schedule_config"), dict)
                and key in s["schedule_config"]
            ]
            errors.append(
                FieldError(
                    where[-1] if where else f"schedule_config.{key}",
                    f"the schedules of a job set different {key}s "
                    f"({', '.join(sorted(values))}): it applies to the whole job, so "
                    "set it once or to the same value",
                )
            )
    return errors


def calendars_used(schedule_config: Any, schedules: Any) -> list[tuple[str, str]]:
    """(field path, calendar name) of every ``exclude.calendar`` of a job's schedules."""
    out: list[tuple[str, str]] = []
    entries: list[tuple[str, Any]] = [("schedule_config", schedule_config)]
    if isinstance(schedules, list):
        entries += [
            (f"schedules[{i}].schedule_config", s.get("schedule_config"))
            for i, s in enumerate(schedules)
            if isinstance(s, dict)
        ]
    for where, config in entries:
        if isinstance(config, dict) and isinstance(config.get("exclude"), dict):
            name = config["exclude"].get("calendar")
            if isinstance(name, str):
                out.append((f"{where}.exclude.calendar", name))
    return out
