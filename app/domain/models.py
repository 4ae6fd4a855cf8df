"""The spec's core data structures: JobDefinition, JobExecutionResult, StepExecutionResult."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from app.domain.enums import JobStatus, StepStatus
from app.domain.errors import ConfigurationError, FieldError
from app.domain.flow import DEFAULT_MAX_STEP_RUNS, routing_errors
from app.domain.notifications import validate_notifications
from app.domain.schedule_config import validate_schedule_config, validate_schedules
from app.domain.timeutil import is_valid_timezone, iso, parse_iso

# The steps layer registers the real per-type validator at import time (domain must not
# import steps). It returns every problem of one step config, fields prefixed by ``prefix``.
StepValidator = Callable[[Any, str], list[FieldError]]
_step_validator: StepValidator | None = None

MAX_ID_LENGTH = 100
MAX_NAME_LENGTH = 255
MAX_TIMEZONE_LENGTH = 50


def set_step_validator(validator: StepValidator | None) -> None:
    """Install the function ``JobDefinition.validate`` uses to check each step."""
    global _step_validator
    _step_validator = validator


def _basic_step_check(step: Any, prefix: str) -> list[FieldError]:
    if not isinstance(step, dict):
        return [FieldError(prefix, "must be an object")]
    errors = []
    if not isinstance(step.get("type"), str) or not step.get("type"):
        errors.append(FieldError(f"{prefix}.type", "is required"))
    return errors


def _same(value: Any) -> Any:
    return value


def _parse_dt(value: Any, name: str) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return parse_iso(value)
        except ValueError:
            pass
    raise ConfigurationError([FieldError(name, f"{value!r} is not an ISO 8601 date-time")])


@dataclass
class JobDefinition:
    """Complete job definition with metadata and steps"""

    job_id: str
    job_name: str
    description: str = ""
    timezone: str = "UTC"
    steps: list[dict[str, Any]] = field(default_factory=list)
    enabled: bool = True
    max_retries: int = 0
    timeout_seconds: int = 3600
    schedule_config: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    retry_delay_seconds: float = 0.0
    retry_exponential_backoff: bool = False
    #: Step runs allowed in one attempt (a ``goto`` loop that goes on longer fails the job).
    max_step_runs: int = DEFAULT_MAX_STEP_RUNS
    #: Named schedules beside ``schedule_config``: ``{"name", "enabled", "schedule_config"}``.
    schedules: list[dict[str, Any]] | None = None
    #: Notification rules (``app.domain.notifications``); not in the spec.
    notifications: list[dict[str, Any]] = field(default_factory=list)

    def validate(self) -> bool:
        """Validate job definition completeness and correctness.

        Returns True when valid; raises ``ConfigurationError`` listing every problem.
        """
        errors = self.validation_errors()
        if errors:
            raise ConfigurationError(errors)
        return True

    def validation_errors(self) -> list[FieldError]:
        errors: list[FieldError] = []
        for name, limit in (("job_id", MAX_ID_LENGTH), ("job_name", MAX_NAME_LENGTH)):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                errors.append(FieldError(name, "must be a non-empty string"))
            elif len(value) > limit:
                errors.append(FieldError(name, f"must be at most {limit} characters"))
            elif "\x00" in value:
                errors.append(FieldError(name, "must not contain NUL characters"))
            elif name == "job_id" and "/" in value:
                errors.append(FieldError(name, "must not contain '/' (job ids are part of URLs)"))
        if not isinstance(self.description, str):
            errors.append(FieldError("description", "must be a string"))
        if not isinstance(self.timezone, str) or len(self.timezone) > MAX_TIMEZONE_LENGTH:
            errors.append(FieldError("timezone", "must be an IANA timezone name"))
        elif not is_valid_timezone(self.timezone):
            errors.append(FieldError("timezone", f"unknown IANA timezone {self.timezone!r}"))
        errors.extend(self._step_errors())
        errors.extend(routing_errors(self.steps, self.max_step_runs))
        if not isinstance(self.enabled, bool):
            errors.append(FieldError("enabled", "must be a boolean"))
        if not _is_int(self.max_retries) or self.max_retries < 0:
            errors.append(FieldError("max_retries", "must be an integer >= 0"))
        if not _is_int(self.timeout_seconds) or self.timeout_seconds <= 0:
            errors.append(FieldError("timeout_seconds", "must be an integer > 0"))
        if not _is_number(self.retry_delay_seconds) or self.retry_delay_seconds < 0:
            errors.append(FieldError("retry_delay_seconds", "must be a number >= 0"))
        if not isinstance(self.retry_exponential_backoff, bool):
            errors.append(FieldError("retry_exponential_backoff", "must be a boolean"))
        errors.extend(validate_schedule_config(self.schedule_config))
        errors.extend(validate_schedules(self.schedules, self.schedule_config))
        errors.extend(validate_notifications(self.notifications))
        if not isinstance(self.metadata, dict):
            errors.append(FieldError("metadata", "must be an object"))
        return errors

    def _step_errors(self) -> list[FieldError]:
        if not isinstance(self.steps, list):
            return [FieldError("steps", "must be a list of step objects")]
        if not self.steps:
            return [FieldError("steps", "must contain at least one step")]
        errors: list[FieldError] = []
        check = _step_validator or _basic_step_check
        seen: dict[str, int] = {}
        for index, step in enumerate(self.steps):
            prefix = f"steps[{index}]"
            errors.extend(check(step, prefix))
            step_id = step.get("step_id") if isinstance(step, dict) else None
            if isinstance(step_id, str) and step_id:
                if step_id in seen:
                    errors.append(
                        FieldError(
                            f"{prefix}.step_id",
                            f"duplicate step_id {step_id!r} (also steps[{seen[step_id]}])",
                        )
                    )
                seen.setdefault(step_id, index)
        return errors

    def to_dict(self) -> dict[str, Any]:
        """Convert to dictionary for serialization"""
        return self._as_dict(copy.deepcopy)

    def shared_dict(self) -> dict[str, Any]:
        """``to_dict`` without copying the values: for writing out at once (the store
        serialises every execution's definition), never to keep or change."""
        return self._as_dict(_same)

    def _as_dict(self, copy_value: Callable[[Any], Any]) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "schedules" and value is None:
                continue  # absent, as in definitions stored before named schedules existed
            if f.name == "notifications" and not value:
                continue  # not in the spec: only present when a job has rules
            if isinstance(value, datetime):
                data[f.name] = iso(value)
            else:
                data[f.name] = copy_value(value)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobDefinition:
        """Create from dictionary (API requests, database)"""
        cls._check_fields(data)
        return cls._build({k: copy.deepcopy(v) for k, v in data.items()})

    @classmethod
    def from_json(cls, text: str) -> JobDefinition:
        """Create from the JSON text of ``to_dict`` (a stored definition), as ``from_dict``
        but without copying: what ``json.loads`` returns belongs to nobody else."""
        data = json.loads(text)
        cls._check_fields(data)
        return cls._build(data)

    @classmethod
    def _check_fields(cls, data: Any) -> None:
        if not isinstance(data, dict):
            raise ConfigurationError([FieldError("", "a job definition must be a JSON object")])
        if data.keys() <= _JOB_FIELDS and "job_id" in data and "job_name" in data:
            return
        known = {f.name for f in fields(cls)}
        errors = [FieldError(key, "unknown field") for key in sorted(set(data) - known, key=str)]
        errors.extend(
            FieldError(key, "is required") for key in ("job_id", "job_name") if key not in data
        )
        if errors:
            raise ConfigurationError(errors)

    @classmethod
    def _build(cls, kwargs: dict[str, Any]) -> JobDefinition:
        for key in ("created_at", "updated_at"):
            if key in kwargs:
                kwargs[key] = _parse_dt(kwargs[key], key)
        for key in ("steps", "metadata", "notifications"):
            if key in kwargs and kwargs[key] is None:
                kwargs[key] = {} if key == "metadata" else []
        return cls(**kwargs)


_JOB_FIELDS = frozenset(f.name for f in fields(JobDefinition))


@dataclass
class StepExecutionResult:
    """Result of individual step execution"""

    step_id: str
    step_name: str
    step_type: str
    status: StepStatus
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration_seconds: float = 0.0
    output: str | None = None
    error_message: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        """Check if step execution was successful"""
        return self.status is StepStatus.SUCCESS

    def finish(self, status: StepStatus, end_time: datetime) -> None:
        self.status = status
        self.end_time = end_time
        if self.start_time is not None:
            self.duration_seconds = max(0.0, (end_time - self.start_time).total_seconds())

    def to_dict(self) -> dict[str, Any]:
        data = self.state_dict()
        data["output"] = self.output
        data["metadata"] = copy.deepcopy(self.metadata)
        return data

    def state_dict(self) -> dict[str, Any]:
        """``to_dict`` without the output and the metadata (what a live event carries)."""
        return {
            "step_id": self.step_id,
            "step_name": self.step_name,
            "step_type": self.step_type,
            "status": self.status.value,
            "success": self.success,
            "start_time": iso(self.start_time),
            "end_time": iso(self.end_time),
            "duration_seconds": self.duration_seconds,
            "error_message": self.error_message,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepExecutionResult:
        return cls(
            step_id=data["step_id"],
            step_name=data["step_name"],
            step_type=data["step_type"],
            status=StepStatus(data["status"]),
            start_time=_parse_dt(data.get("start_time"), "start_time"),
            end_time=_parse_dt(data.get("end_time"), "end_time"),
            duration_seconds=float(data.get("duration_seconds") or 0.0),
            output=data.get("output"),
            error_message=data.get("error_message"),
            metadata=dict(data.get("metadata") or {}),
        )


@dataclass
class AttemptRecord:
    """One attempt of an execution (the job-level ``max_retries`` re-runs make more):
    its outcome, the path of step ids it took, and every step run in it, in order (a step
    retried or run again by a ``goto`` loop appears once per run)."""

    attempt: int
    status: JobStatus
    start_time: datetime | None = None
    end_time: datetime | None = None
    error_message: str | None = None
    path: list[str] = field(default_factory=list)
    steps: list[StepExecutionResult] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """What is stored with the job row (the steps have rows of their own)."""
        return {
            "attempt": self.attempt,
            "status": self.status.value,
            "start_time": iso(self.start_time),
            "end_time": iso(self.end_time),
            "error_message": self.error_message,
            "path": list(self.path),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "steps": [s.to_dict() for s in self.steps]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttemptRecord:
        return cls(
            attempt=int(data["attempt"]),
            status=JobStatus(data["status"]),
            start_time=_parse_dt(data.get("start_time"), "start_time"),
            end_time=_parse_dt(data.get("end_time"), "end_time"),
            error_message=data.get("error_message"),
            path=[str(p) for p in data.get("path") or []],
            steps=[StepExecutionResult.from_dict(s) for s in data.get("steps") or []],
        )


@dataclass
class JobExecutionResult:
    """Result of job execution with step details"""

    execution_id: str
    job_id: str
    job_name: str
    status: JobStatus
    timezone: str
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration_seconds: float = 0.0
    steps: list[StepExecutionResult] = field(default_factory=list)
    error_message: str | None = None
    retry_count: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Every attempt, oldest first; the fields above are those of the last one.
    attempts: list[AttemptRecord] = field(default_factory=list)

    @property
    def success(self) -> bool:
        """Check if execution was successful (only SUCCESS counts)"""
        return self.status is JobStatus.SUCCESS

    def add_step_result(self, step_result: StepExecutionResult) -> None:
        """Add step execution result"""
        self.steps.append(step_result)

    def get_failed_steps(self) -> list[StepExecutionResult]:
        """Get list of failed step results (failed, timed out or cancelled)"""
        return [s for s in self.steps if s.status.is_failure]

    @property
    def current_step(self) -> str | None:
        """The step running now: the last one of the attempt on record as running (None
        once the execution ended), the same whether it is read live or from the store."""
        if self.status.is_terminal:
            return None
        running = [s.step_id for s in self.steps if s.status is StepStatus.RUNNING]
        return running[-1] if running else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "execution_id": self.execution_id,
            "job_id": self.job_id,
            "job_name": self.job_name,
            "status": self.status.value,
            "success": self.success,
            "timezone": self.timezone,
            "start_time": iso(self.start_time),
            "end_time": iso(self.end_time),
            "duration_seconds": self.duration_seconds,
            "steps": [s.to_dict() for s in self.steps],
            "error_message": self.error_message,
            "retry_count": self.retry_count,
            "metadata": copy.deepcopy(self.metadata),
            "attempts": [a.to_dict() for a in self.attempts],
            "current_step": self.current_step,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobExecutionResult:
        return cls(
            execution_id=data["execution_id"],
            job_id=data["job_id"],
            job_name=data["job_name"],
            status=JobStatus(data["status"]),
            timezone=data["timezone"],
            start_time=_parse_dt(data.get("start_time"), "start_time"),
            end_time=_parse_dt(data.get("end_time"), "end_time"),
            duration_seconds=float(data.get("duration_seconds") or 0.0),
            steps=[StepExecutionResult.from_dict(s) for s in data.get("steps") or []],
            error_message=data.get("error_message"),
            retry_count=int(data.get("retry_count") or 0),
            metadata=dict(data.get("metadata") or {}),
            attempts=[AttemptRecord.from_dict(a) for a in data.get("attempts") or []],
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
