"""Translation between ORM rows and the domain's records (no queries here)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from app.domain.attempts import assemble, step_run
from app.domain.enums import JobStatus, StepStatus
from app.domain.jobs import StoredJob
from app.domain.models import (
    AttemptRecord,
    JobDefinition,
    JobExecutionResult,
    StepExecutionResult,
)
from app.domain.records import ScheduledRun, clean_text
from app.persistence.models import (
    JobDefinitionV2,
    JobExecutionV2,
    ScheduledRunV2,
    StepExecutionV2,
)

#: ``json.dumps(value, ensure_ascii=True, default=str, separators=(",", ":"))`` without
#: building an encoder per call (a third of its cost on the small objects of history rows).
_ENCODER = json.JSONEncoder(ensure_ascii=True, default=str, separators=(",", ":"))


def dump_json(value: Any) -> str:
    """JSON text safe for every backend: ASCII only (NUL and lone surrogates come out as
    ``\\u`` escapes), and values JSON cannot express are written as their ``str``."""
    return _ENCODER.encode(value)


def definition_from_json(text: str | None) -> JobDefinition:
    """A stored job definition (``ConfigurationError`` if it is not one)."""
    return JobDefinition.from_json(text or "{}")


def load_json_object(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {"value": value}


def job_from_row(
    row: JobExecutionV2, steps: list[StepExecutionV2] | None = None
) -> JobExecutionResult:
    """The execution of ``row`` with its attempts; ``steps`` are step rows of any of its
    attempts (the last attempt's become ``steps``)."""
    result = _job_only(row)
    result.attempts = [AttemptRecord.from_dict(a) for a in _load_list(row.attempts_json)]
    ordered = sorted(steps or [], key=lambda s: (s.attempt, s.start_order))
    return assemble(result, [(s.attempt, step_from_row(s)) for s in ordered])


def _load_list(text: str | None) -> list[dict[str, Any]]:
    if not text:
        return []
    value = json.loads(text)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _job_only(row: JobExecutionV2) -> JobExecutionResult:
    return JobExecutionResult(
        execution_id=row.execution_id,
        job_id=row.job_id,
        job_name=row.job_name,
        status=JobStatus(row.status),
        timezone=row.timezone,
        start_time=row.start_time,
        end_time=row.end_time,
        duration_seconds=row.duration_seconds,
        error_message=row.error_message,
        retry_count=row.retry_count,
        metadata=load_json_object(row.metadata_json),
    )


def step_from_row(row: StepExecutionV2) -> StepExecutionResult:
    return StepExecutionResult(
        step_id=row.step_id,
        step_name=row.step_name,
        step_type=row.step_type,
        status=StepStatus(row.status),
        start_time=row.start_time,
        end_time=row.end_time,
        duration_seconds=row.duration_seconds,
        output=row.output_text,
        error_message=row.error_message,
        metadata=load_json_object(row.metadata_json),
    )


def run_from_row(row: ScheduledRunV2) -> ScheduledRun:
    return ScheduledRun(
        execution_id=row.execution_id,
        job=definition_from_json(row.job_definition_json),
        scheduled_for=row.scheduled_for,
        trigger=row.trigger,
        attempt=row.attempt,
        requested_by=row.requested_by,
        metadata=load_json_object(row.metadata_json),
    )


def stored_job_from_row(row: JobDefinitionV2) -> StoredJob:
    """The stored job: its definition rebuilt from the JSON, with the row's timestamps."""
    job = definition_from_json(row.definition_json)
    job.created_at = row.created_at
    job.updated_at = row.updated_at
    return StoredJob(
        job=job,
        version=row.version,
        next_fire_at=row.next_fire_at,
        last_fire_at=row.last_fire_at,
    )


def job_columns(job: JobDefinition) -> dict[str, Any]:
    """The ``jobs_v2`` columns copied from a definition's fields (for filtering)."""
    return {
        "job_name": fit(job.job_name, 255),
        "timezone": job.timezone,
        "enabled": bool(job.enabled),
    }


def definition_json(job: JobDefinition, *, created_at: datetime, updated_at: datetime) -> str:
    """``job.to_dict()`` as stored, carrying the row's timestamps (``job`` is not changed)."""
    data = job.to_dict()
    data["created_at"] = created_at.isoformat()
    data["updated_at"] = updated_at.isoformat()
    return dump_json(data)


def fit(value: str, length: int) -> str:
    """``value`` cut to a String(length) column (names and ids are capped, not rejected)."""
    return value if len(value) <= length else value[:length]


def fit_text(value: str | None, length: int) -> str | None:
    """Free text for a String(length) column: sanitised and cut."""
    cleaned, _ = clean_text(value)
    return None if cleaned is None else fit(cleaned, length)


def job_values(result: JobExecutionResult) -> dict[str, Any]:
    """Column values of a job row taken from a (sanitised) result."""
    return {
        "execution_id": result.execution_id,
        "job_id": result.job_id,
        "job_name": fit(result.job_name, 255),
        "status": result.status.value,
        "timezone": result.timezone,
        "start_time": result.start_time,
        "end_time": result.end_time,
        "duration_seconds": float(result.duration_seconds or 0.0),
        "error_message": result.error_message,
        "retry_count": int(result.retry_count or 0),
        "metadata_json": dump_json(result.metadata),
        "attempts_json": dump_json([a.summary() for a in result.attempts])
        if result.attempts
        else None,
    }


def step_values(step: StepExecutionResult) -> dict[str, Any]:
    """Column values of a step row taken from a (sanitised, capped) step result."""
    return {
        "step_id": fit(step.step_id, 100),
        "step_name": fit(step.step_name, 255),
        "step_type": fit(step.step_type, 50),
        "status": step.status.value,
        "start_time": step.start_time,
        "end_time": step.end_time,
        "duration_seconds": float(step.duration_seconds or 0.0),
        "output_text": step.output,
        "error_message": step.error_message,
        "metadata_json": dump_json(step.metadata),
        "run": step_run(step),
    }
