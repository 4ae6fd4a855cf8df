"""Every problem of a request at once: when a body fails its schema, the domain's own rules
are run on what was sent too, and their problems join the schema's in one answer.

Without this a request with a missing ``step_id`` would not say that the step's script is
missing too, and an unknown field would hide a bad cron expression. The models call
``with_domain_problems`` from a wrap validator; only problems about fields the schema did not
already report are added.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any, TypeVar

from app.domain.errors import ConfigurationError, FieldError
from app.domain.field_paths import with_extra_problems
from app.domain.models import JobDefinition
from app.domain.schedule_config import validate_schedule_config
from app.domain.timeutil import is_valid_timezone
from app.steps.factory import StepFactory

T = TypeVar("T")
_JOB_FIELDS = frozenset(f.name for f in fields(JobDefinition)) - {"created_at", "updated_at"}
_TOP = re.compile(r"[^.\[\]]+")


def job_problems(data: Any) -> list[FieldError]:
    """The domain's problems with the job fields present in ``data`` (a job or a patch)."""
    if not isinstance(data, Mapping):
        return []
    given = {k: v for k, v in data.items() if k in _JOB_FIELDS}
    complete = {"job_id": "-", "job_name": "-", "steps": [], **given}
    try:
        errors = JobDefinition.from_dict(complete).validation_errors()
    except (ConfigurationError, TypeError, ValueError, AttributeError):
        return []
    return [e for e in errors if _top(e.field) in given]


def with_domain_problems(
    data: Any, handler: Callable[[Any], T], problems: Callable[[Any], list[FieldError]]
) -> T:
    """``handler(data)``; when it fails, its ValidationError with ``problems(data)`` added
    (those on fields it does not cover)."""
    return with_extra_problems(
        data, handler, problems, union_tags=StepFactory.get_available_step_types()
    )


def schedule_problems(data: Any) -> list[FieldError]:
    """The problems of a schedule preview's ``schedule_config`` and ``timezone``."""
    if not isinstance(data, Mapping):
        return []
    errors = validate_schedule_config(data.get("schedule_config"))
    timezone = data.get("timezone")
    if isinstance(timezone, str) and not _known_zone(timezone):
        errors.append(FieldError("timezone", f"unknown IANA timezone {timezone!r}"))
    return errors


def _top(path: str) -> str:
    match = _TOP.match(path)
    return match.group(0) if match else path


def _known_zone(name: str) -> bool:
    try:
        return is_valid_timezone(name)
    except OSError:
        return False
