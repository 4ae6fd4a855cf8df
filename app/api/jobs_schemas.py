"""Request and response models of stored jobs, schedule previews and the history list."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from app.api.job_rules import job_problems, schedule_problems, with_domain_problems
from app.api.notifications_schemas import NotificationRuleCreate
from app.api.schemas import (
    EXAMPLE_JOB,
    ExecutionRead,
    JobCreate,
    LocalDateTime,
    NamedScheduleCreate,
    ProblemFieldError,
    StepCreate,
    _check_timezone,
)
from app.domain.describe import describe_config
from app.domain.errors import FieldError
from app.domain.generated.schedule_config import ScheduleConfig
from app.domain.job_schedule import job_schedules
from app.domain.jobs import StoredJob, job_policies
from app.domain.models import JobExecutionResult
from app.domain.schedules import FireTime
from app.domain.timeutil import to_local
from app.engine.backfill import BackfillPlan, BackfillRun

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
    schedule_config: ScheduleConfig | None = None
    schedules: list[NamedScheduleCreate] | None = Field(None, max_length=20)
    metadata: dict[str, Any] | None = None
    notifications: list[NotificationRuleCreate] | None = Field(None, max_length=20)

    @field_validator("timezone")
    @classmethod
    def _timezone_is_known(cls, value: str | None) -> str | None:
        return None if value is None else _check_timezone(value)

    @model_validator(mode="wrap")
    @classmethod
    def _every_problem(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return with_domain_problems(data, handler, job_problems)


class FireTimeRead(BaseModel):
    """One upcoming fire of a schedule."""

    at_utc: datetime
    at_local: LocalDateTime = Field(description="The same instant in the job's timezone.")
    nominal_local: str = Field(
        description="The wall-clock time the schedule asked for, ISO 8601 without offset "
        "(differs from at_local only when a DST gap moved the fire).",
        examples=["2026-03-08T02:30:00"],
    )
    moved_by_dst_gap: bool = Field(
        description="The asked-for local time does not exist (spring-forward gap): the fire "
        "happens right after the gap."
    )
    repeated_hour: Literal["first", "second"] | None = Field(
        None,
        description="The fire's local time happens twice that day (fall-back): `first` or "
        "`second` of the two; null otherwise.",
    )
    source: str | None = Field(
        None, description="Name of the schedule that fires it; null for `schedule_config`."
    )
    excluded_by: str | None = Field(
        None,
        description="The business calendar that excludes this fire: it does not run and is "
        "recorded as excluded. Null for a fire that runs.",
    )
    moved_by_calendar: bool = Field(
        False,
        description="A business calendar moved it off an excluded day (nominal_local is the "
        "time it was moved from).",
    )
    note: str | None = Field(
        None,
        description="The flags in words, e.g. `first of two 01:30s`, `excluded by calendar uk`.",
        examples=["second of two 01:30s"],
    )

    @classmethod
    def of(cls, fire: FireTime) -> FireTimeRead:
        return cls(
            at_utc=fire.at,
            at_local=fire.local,
            nominal_local=fire.nominal_local.isoformat(),
            moved_by_dst_gap=fire.moved_by_dst_gap,
            repeated_hour=fire.repeated_hour,
            source=fire.source,
            excluded_by=fire.excluded_by,
            moved_by_calendar=fire.moved_by_calendar,
            note=_note(fire),
        )


def _note(fire: FireTime) -> str | None:
    notes = []
    clock = fire.local.strftime("%H:%M")
    if fire.repeated_hour:
        notes.append(f"{fire.repeated_hour} of two {clock}s")
    if fire.moved_by_dst_gap:
        notes.append(f"moved from {fire.nominal_local.strftime('%H:%M')} by a DST gap")
    if fire.excluded_by:
        notes.append(f"excluded by calendar {fire.excluded_by}")
    if fire.moved_by_calendar:
        notes.append(f"moved from {fire.nominal_local.date().isoformat()} by a business calendar")
    return "; ".join(notes) or None


class ScheduleDescriptionRead(BaseModel):
    name: str | None = Field(description="Null for the job's `schedule_config`.")
    enabled: bool = True
    schedule_description: str = Field(examples=["At 02:30 on Monday through Friday, UTC"])


class NextRunsRead(BaseModel):
    job_id: str | None = None
    timezone: str
    runs: list[FireTimeRead]
    schedules: list[ScheduleDescriptionRead] = Field(
        default_factory=list, description="Each schedule merged here, in plain English."
    )


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

    schedule_config: ScheduleConfig | None = Field(
        None, description="As in a job's schedule_config."
    )
    schedules: list[NamedScheduleCreate] | None = Field(
        None, max_length=20, description="As in a job's schedules (merged with schedule_config)."
    )
    timezone: str = Field("UTC", min_length=1, max_length=50)
    after: str | None = Field(
        None, max_length=64, description="ISO 8601 instant with an offset; default: now."
    )
    count: int = Field(10, ge=1, le=500)

    @field_validator("timezone")
    @classmethod
    def _timezone_is_known(cls, value: str) -> str:
        return _check_timezone(value)

    @model_validator(mode="wrap")
    @classmethod
    def _every_problem(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return with_domain_problems(data, handler, schedule_problems)


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
    schedule_description: str | None = Field(
        None, description="`schedule_config` in plain English."
    )
    schedule_descriptions: list[ScheduleDescriptionRead] = Field(
        default_factory=list,
        description="Every schedule of the job (schedule_config first), in plain English.",
    )
    next_fire_at: datetime | None = Field(
        None, description="Next fire (UTC); null when disabled or without a schedule."
    )
    next_fire_at_local: LocalDateTime | None = None
    last_fire_at: datetime | None = None
    last_execution: ExecutionSummaryRead | None = None
    health: Literal["ok", "failing", "overdue", "disabled"] = Field(
        "ok",
        description="ok; failing (its last V2_FAILING_AFTER runs failed); overdue (its "
        "next_fire_at is past beyond the misfire grace while the engine runs: the schedule "
        "stopped firing); disabled.",
    )
    warnings: list[ProblemFieldError] = Field(
        default_factory=list,
        description="Why the job, although stored, will fail on this server as it is now "
        "(PowerShell not installed, a connection removed since it was stored).",
    )

    @classmethod
    def of(
        cls,
        stored: StoredJob,
        last: JobExecutionResult | None,
        health: str = "ok",
        warnings: list[FieldError] | None = None,
    ) -> JobRead:
        data = stored.job.to_dict()
        misfire, overlap = job_policies(stored.job)
        nxt = stored.next_fire_at
        return cls.model_validate(
            {
                **data,
                "version": stored.version,
                "misfire_policy": misfire,
                "overlap_policy": overlap,
                "schedule_description": describe_config(
                    stored.job.schedule_config, stored.job.timezone
                )
                if stored.job.schedule_config
                else None,
                "schedule_descriptions": describe_schedules(
                    stored.job.schedule_config, stored.job.schedules, stored.job.timezone
                ),
                "next_fire_at": nxt,
                "next_fire_at_local": to_local(nxt, stored.job.timezone) if nxt else None,
                "last_fire_at": stored.last_fire_at,
                "health": health,
                "last_execution": ExecutionSummaryRead(
                    execution_id=last.execution_id,
                    status=last.status.value,
                    start_time=last.start_time,
                    end_time=last.end_time,
                    error_message=last.error_message,
                )
                if last
                else None,
                "warnings": [
                    ProblemFieldError(field=w.field, message=w.message) for w in warnings or ()
                ],
            }
        )


def describe_schedules(
    schedule_config: dict[str, Any] | None,
    schedules: list[dict[str, Any]] | None,
    timezone: str,
) -> list[ScheduleDescriptionRead]:
    """Each schedule of a job (or a preview) in plain English, in the job's order."""
    return [
        ScheduleDescriptionRead(
            name=entry.name,
            enabled=entry.enabled,
            schedule_description=describe_config(entry.config, timezone),
        )
        for entry in job_schedules(schedule_config, schedules)
    ]


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


class BackfillCreate(BaseModel):
    """The range of fires of a stored job's schedule to run."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {"from": "2026-11-23", "to": "2026-11-29", "max_runs": 100, "only_missing": True},
                {"from": "2026-11-23T00:00:00Z", "to": "2026-11-29T23:59:59Z", "dry_run": True},
            ]
        },
    )

    start: str = Field(
        alias="from",
        min_length=1,
        max_length=64,
        description="First instant of the range (ISO 8601 with an offset), or a date "
        "YYYY-MM-DD in the job's timezone (from its midnight).",
    )
    end: str = Field(
        alias="to",
        min_length=1,
        max_length=64,
        description="Last instant of the range (inclusive), or a date in the job's timezone "
        "(the whole day). Before `from`: a 400.",
    )
    max_runs: int = Field(
        100, ge=1, le=10_000, description="More runs to make than this is a 400 (nothing made)."
    )
    only_missing: bool = Field(
        True,
        description="Skip fires that already have a run (one that ran or is still to run); "
        "false runs every fire again.",
    )
    dry_run: bool = Field(False, description="Answer what would run, creating nothing.")


class BackfillRunRead(BaseModel):
    """One fire of a backfill."""

    scheduled_for: datetime = Field(description="The fire's instant (UTC).")
    scheduled_for_local: datetime = Field(description="The same in the job's timezone.")
    logical_date: str = Field(description="The fire's date in the job's timezone.")
    execution_id: str | None = Field(None, description="The run made for it (null: dry run).")


class BackfillRead(BaseModel):
    """What a backfill runs (or, dry, would run)."""

    job_id: str
    timezone: str
    dry_run: bool
    start: datetime = Field(description="The range's first instant.")
    end: datetime = Field(description="The range's end (exclusive).")
    runs: list[BackfillRunRead] = Field(description="The runs made (or to make), in fire order.")
    already_ran: list[BackfillRunRead] = Field(
        description="Fires of the range left out because they have a run (only_missing)."
    )

    @classmethod
    def of(cls, plan: BackfillPlan) -> BackfillRead:
        def run(r: BackfillRun) -> BackfillRunRead:
            return BackfillRunRead(
                scheduled_for=r.fire.at,
                scheduled_for_local=r.fire.local,
                logical_date=r.logical_date,
                execution_id=r.execution_id,
            )

        return cls(
            job_id=plan.job_id,
            timezone=plan.timezone,
            dry_run=plan.dry_run,
            start=plan.start,
            end=plan.end,
            runs=[run(r) for r in plan.runs],
            already_ran=[run(r) for r in plan.already_ran],
        )
