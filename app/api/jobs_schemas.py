"""Request and response models of stored jobs, schedule previews and the history list."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.api.schemas import EXAMPLE_JOB, ExecutionRead, JobCreate, StepCreate, _check_timezone
from app.domain.jobs import StoredJob, schedule_policies
from app.domain.models import JobExecutionResult
from app.domain.schedules import FireTime
from app.domain.timeutil import to_local

EXAMPLE_RECURRING_JOB: dict[str, Any] = {
    **EXAMPLE_JOB,
    "job_id": "nightly-report",
    "job_name": "Nightly report",
    "schedule_config": {
        "type": "cron",
        "expression": "30 2 * * 1-5",
        "misfire_policy": "run_once",
        "overlap_policy": "skip",
    },
}


class JobPatch(BaseModel):
    """Fields to change in a stored job; absent fields keep their value."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"enabled": False},
                {"schedule_config": {"type": "interval", "every_seconds": 900}},
            ]
        },
    )

    job_name: str | None = Field(None, min_length=1, max_length=255)
    description: str | None = Field(None, max_length=10_000)
    timezone: str | None = Field(None, min_length=1, max_length=50)
    steps: list[StepCreate] | None = Field(None, min_length=1)
    enabled: bool | None = None
    max_retries: int | None = Field(None, ge=0, le=100)
    timeout_seconds: int | None = Field(None, ge=1)
    max_step_runs: int | None = Field(None, ge=1, le=100_000)
    retry_delay_seconds: float | None = Field(None, ge=0, le=3600)
    retry_exponential_backoff: bool | None = None
    schedule_config: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("timezone")
    @classmethod
    def _timezone_is_known(cls, value: str | None) -> str | None:
        return None if value is None else _check_timezone(value)


class FireTimeRead(BaseModel):
    """One upcoming fire of a schedule."""

    at_utc: datetime
    at_local: datetime = Field(description="The same instant in the job's timezone.")
    nominal_local: str = Field(
        description="The wall-clock time the schedule asked for, ISO 8601 without offset "
        "(differs from at_local only when a DST gap moved the fire).",
        examples=["2026-03-08T02:30:00"],
    )
    moved_by_dst_gap: bool = Field(
        description="The asked-for local time does not exist (spring-forward gap): the fire "
        "happens right after the gap."
    )

    @classmethod
    def of(cls, fire: FireTime) -> FireTimeRead:
        return cls(
            at_utc=fire.at,
            at_local=fire.local,
            nominal_local=fire.nominal_local.isoformat(),
            moved_by_dst_gap=fire.moved_by_dst_gap,
        )


class NextRunsRead(BaseModel):
    job_id: str | None = None
    timezone: str
    runs: list[FireTimeRead]


class SchedulePreviewCreate(BaseModel):
    """A schedule to preview, stateless."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "schedule_config": {"type": "cron", "expression": "30 2 * * *"},
                    "timezone": "America/New_York",
                    "after": "2026-03-07T00:00:00Z",
                    "count": 5,
                }
            ]
        },
    )

    schedule_config: dict[str, Any] = Field(description="As in a job's schedule_config.")
    timezone: str = Field("UTC", min_length=1, max_length=50)
    after: str | None = Field(
        None, max_length=64, description="ISO 8601 instant with an offset; default: now."
    )
    count: int = Field(10, ge=1, le=500)

    @field_validator("timezone")
    @classmethod
    def _timezone_is_known(cls, value: str) -> str:
        return _check_timezone(value)


class ExecutionSummaryRead(BaseModel):
    execution_id: str
    status: str
    start_time: datetime | None = None
    end_time: datetime | None = None
    error_message: str | None = None


class JobRead(JobCreate):
    """A stored job with its version and schedule state."""

    model_config = ConfigDict(extra="forbid", strict=False)

    version: int = Field(description="Goes up by one on every change; send it in If-Match.")
    created_at: datetime
    updated_at: datetime
    misfire_policy: str
    overlap_policy: str
    next_fire_at: datetime | None = Field(
        None, description="Next fire (UTC); null when disabled or without a schedule."
    )
    next_fire_at_local: datetime | None = None
    last_fire_at: datetime | None = None
    last_execution: ExecutionSummaryRead | None = None

    @classmethod
    def of(cls, stored: StoredJob, last: JobExecutionResult | None) -> JobRead:
        data = stored.job.to_dict()
        misfire, overlap = schedule_policies(stored.job.schedule_config)
        nxt = stored.next_fire_at
        return cls.model_validate(
            {
                **data,
                "version": stored.version,
                "misfire_policy": misfire,
                "overlap_policy": overlap,
                "next_fire_at": nxt,
                "next_fire_at_local": to_local(nxt, stored.job.timezone) if nxt else None,
                "last_fire_at": stored.last_fire_at,
                "last_execution": ExecutionSummaryRead(
                    execution_id=last.execution_id,
                    status=last.status.value,
                    start_time=last.start_time,
                    end_time=last.end_time,
                    error_message=last.error_message,
                )
                if last
                else None,
            }
        )


class JobPageRead(BaseModel):
    items: list[JobRead]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class ExecutionPageRead(BaseModel):
    items: list[ExecutionRead]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class RunCreate(BaseModel):
    """How to steer a manual run of a stored job (every field optional)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "parameters": {"load": {"day": "2026-11-30"}},
                    "start_step_id": "load",
                    "logical_date": "2026-11-30",
                    "wait": False,
                }
            ]
        },
    )

    parameters: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="step_id -> parameter name -> value: replaces those parameters of those "
        "steps for this run only. An unknown step or parameter is a 400.",
    )
    start_step_id: str | None = Field(
        None, min_length=1, max_length=100, description="Start at this step (earlier ones skipped)."
    )
    logical_date: str | None = Field(
        None,
        pattern=r"^\d{4}-\d{2}-\d{2}$",
        description="The run's `run.logical_date` token (default: today in the job's timezone).",
        examples=["2026-11-30"],
    )
    wait: bool | None = Field(
        None, description="Wait for the end (default: the `wait` query parameter, true)."
    )
    overlap: Literal["allow"] | None = Field(
        None,
        description="`allow`: run even while the job runs, whatever its overlap_policy "
        "(needs a key with the `admin` scope).",
    )
