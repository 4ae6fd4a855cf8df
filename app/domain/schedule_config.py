"""Shape checks for ``JobDefinition.schedule_config`` (cron, interval, once)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from croniter import CroniterBadDateError, croniter

from app.domain.errors import FieldError
from app.domain.timeutil import parse_iso

SCHEDULE_TYPES = ("cron", "interval", "once")
_POLICY_KEYS = {"misfire_policy", "overlap_policy"}
_ALLOWED_KEYS: dict[str, set[str]] = {
    "cron": {"type", "expression", "start_at", "end_at", *_POLICY_KEYS},
    "interval": {"type", "every_seconds", "start_at", "end_at", *_POLICY_KEYS},
    "once": {"type", "at", *_POLICY_KEYS},
}
_POLICIES = {
    "misfire_policy": ("run_once", "skip", "run_all"),
    "overlap_policy": ("skip", "allow", "queue", "replace"),
}


def validate_schedule_config(config: Any, prefix: str = "schedule_config") -> list[FieldError]:
    """Every problem with a schedule_config, each naming its field."""
    if config is None:
        return []
    if not isinstance(config, dict):
        return [FieldError(prefix, "must be an object or null")]
    kind = config.get("type")
    if kind not in SCHEDULE_TYPES:
        return [FieldError(f"{prefix}.type", f"must be one of {', '.join(SCHEDULE_TYPES)}")]
    errors = [
        FieldError(f"{prefix}.{key}", f"unknown field for a {kind} schedule")
        for key in sorted(set(config) - _ALLOWED_KEYS[kind])
    ]
    if kind == "cron":
        expr = config.get("expression")
        if not isinstance(expr, str) or not expr.strip():
            errors.append(FieldError(f"{prefix}.expression", "is required (5-field cron)"))
        elif len(expr.split()) != 5:
            errors.append(
                FieldError(f"{prefix}.expression", "must have exactly 5 fields: m h dom mon dow")
            )
        elif not croniter.is_valid(expr):
            errors.append(FieldError(f"{prefix}.expression", f"invalid cron expression {expr!r}"))
        elif not _ever_fires(expr):
            errors.append(FieldError(f"{prefix}.expression", f"{expr!r} never matches a real date"))
    elif kind == "interval":
        every = config.get("every_seconds")
        if isinstance(every, bool) or not isinstance(every, int) or every <= 0:
            errors.append(FieldError(f"{prefix}.every_seconds", "must be a positive integer"))
    else:
        errors.extend(_check_time(config, "at", prefix, required=True))
    for key in ("start_at", "end_at"):
        errors.extend(_check_time(config, key, prefix, required=False))
    for key, allowed in _POLICIES.items():
        if key in config and config[key] not in allowed:
            errors.append(FieldError(f"{prefix}.{key}", f"must be one of {', '.join(allowed)}"))
    start, end = config.get("start_at"), config.get("end_at")
    if isinstance(start, str) and isinstance(end, str) and not errors:
        try:
            if parse_iso(end).replace(tzinfo=None) <= parse_iso(start).replace(tzinfo=None):
                errors.append(FieldError(f"{prefix}.end_at", "must be after start_at"))
        except ValueError:
            pass
    return errors


def _ever_fires(expr: str) -> bool:
    try:
        croniter(expr, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        return False
    return True


def _check_time(
    config: dict[str, Any], key: str, prefix: str, *, required: bool
) -> list[FieldError]:
    value = config.get(key)
    if value is None:
        return [FieldError(f"{prefix}.{key}", "is required")] if required else []
    if not isinstance(value, str):
        return [FieldError(f"{prefix}.{key}", "must be an ISO 8601 date-time string")]
    try:
        parse_iso(value)
    except ValueError:
        return [FieldError(f"{prefix}.{key}", f"{value!r} is not an ISO 8601 date-time")]
    return []
