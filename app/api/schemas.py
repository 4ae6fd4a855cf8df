"""Request and response models of the v2 HTTP API (named by role: ``...Create``, ``...Read``).

The step list of a job is a discriminated union on ``type`` over the models generated from
``app/steps/schemas/*.json``, so the OpenAPI document shows every step type's fields, defaults
and required/anyOf rules. Request models are strict (``"3"`` is not an integer, ``1`` is not a
boolean) and forbid unknown fields, so the server accepts exactly what the contract says.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from app.api.job_rules import job_problems, with_domain_problems
from app.api.notifications_schemas import NotificationRuleCreate, OverdueJobRead
from app.domain.enums import JobStatus, StepStatus, Trigger
from app.domain.generated.schedule_config import ScheduleConfig
from app.domain.timeutil import is_valid_timezone
from app.steps.generated import powershell as _powershell
from app.steps.generated import shell as _shell
from app.steps.generated import sql as _sql

_STRICT = ConfigDict(strict=True)


# The generated models, made strict. They keep their names (the OpenAPI component names and
# the anyOf rules restored by StepConfigBase are looked up by them) and their docstrings.
class SqlStepConfig(_sql.SqlStepConfig):
    __doc__ = _sql.SqlStepConfig.__doc__
    model_config = _STRICT


class PowerShellStepConfig(_powershell.PowerShellStepConfig):
    __doc__ = _powershell.PowerShellStepConfig.__doc__
    model_config = _STRICT


class ShellStepConfig(_shell.ShellStepConfig):
    __doc__ = _shell.ShellStepConfig.__doc__
    model_config = _STRICT


StepCreate = Annotated[
    SqlStepConfig | PowerShellStepConfig | ShellStepConfig,
    Field(discriminator="type"),
]

#: The names of the step types the HTTP API accepts (the discriminator values).
API_STEP_TYPES = ("sql", "powershell", "shell")

#: A job that succeeds on any machine with /bin/sh (Swagger UI's "Try it out" runs it).
EXAMPLE_JOB: dict[str, Any] = {
    "job_id": "hello-world",
    "job_name": "Hello world",
    "description": "Prints a greeting with the shell step.",
    "timezone": "Europe/Berlin",
    "steps": [
        {
            "step_id": "greet",
            "step_name": "Say hello",
            "type": "shell",
            "script": 'echo "hello from $WHO"',
            "parameters": {"WHO": "job scheduler v2"},
            "timeout": 30,
        }
    ],
    "max_retries": 0,
    "timeout_seconds": 60,
}

EXAMPLE_FAILING_JOB: dict[str, Any] = {
    "job_id": "nightly-export",
    "job_name": "Nightly export",
    "timezone": "UTC",
    "steps": [
        {"step_id": "prepare", "type": "shell", "script": "echo preparing"},
        {
            "step_id": "export",
            "type": "shell",
            "script": "echo 'disk full' >&2; exit 3",
            "continue_on_failure": False,
        },
        {"step_id": "notify", "type": "shell", "script": "echo done"},
    ],
}


def _local_iso(value: datetime) -> str:
    return value.isoformat()


#: A wall-clock time with the offset it has in its zone: ``+00:00`` in a UK winter, never
#: pydantic's ``Z`` (which says UTC, not London).
LocalDateTime = Annotated[
    datetime,
    PlainSerializer(_local_iso, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


def _check_timezone(value: str) -> str:
    try:
        valid = is_valid_timezone(value)
    except OSError:  # e.g. "America" names a directory of the tz database
        valid = False
    if not valid:
        raise ValueError(f"unknown IANA timezone {value!r}")
    return value


class NamedScheduleCreate(BaseModel):
    """One of a job's named schedules."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "nightly",
                    "enabled": True,
                    "schedule_config": {"type": "cron", "expression": "30 2 * * *"},
                }
            ]
        },
    )

    name: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$",
        description="Unique within the job; each fire records it as `schedule_name`.",
    )
    enabled: bool = Field(True, description="A disabled schedule does not fire.")
    schedule_config: ScheduleConfig


class JobCreate(BaseModel):
    """A job definition: an ordered list of steps bound to an IANA timezone."""

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [EXAMPLE_JOB]}
    )

    job_id: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[^/]+$",
        description="Identifier of the job (any text without `/`: it is part of URLs).",
    )
    job_name: str = Field(min_length=1, max_length=255, description="Human-readable name.")
    description: str = Field("", max_length=10_000)
    timezone: str = Field(
        "UTC",
        min_length=1,
        max_length=50,
        description="IANA timezone the job belongs to: its queue, and the zone naive "
        "scheduled times are read in.",
        examples=["Europe/Berlin"],
    )
    steps: list[StepCreate] = Field(
        min_length=1,
        description="Steps run in order, as each one's on_success / on_failure routes them "
        "(next, quit_success, quit_failure or a goto). By default a failed step stops the job "
        "(steps not reached are skipped) unless it sets continue_on_failure. The server limits "
        "the number of steps per job (V2_MAX_STEPS_PER_JOB).",
    )
    enabled: bool = Field(True, description="A disabled job cannot be scheduled.")
    max_retries: int = Field(
        0, ge=0, le=100, description="Re-runs of a failed or timed-out attempt."
    )
    timeout_seconds: int | None = Field(
        None,
        ge=1,
        description="Timeout of one attempt in seconds; absent: the server default "
        "(V2_DEFAULT_TIMEOUT).",
    )
    max_step_runs: int = Field(
        100,
        ge=1,
        le=100_000,
        description="Step runs allowed in one attempt: a goto loop that runs longer fails the "
        "job with a message naming the loop.",
    )
    retry_delay_seconds: float = Field(0.0, ge=0, le=3600, description="Wait before a retry.")
    retry_exponential_backoff: bool = Field(
        False, description="Double the retry delay after each attempt."
    )
    schedule_config: ScheduleConfig | None = Field(
        None,
        description="Recurring schedule (one of cron, interval, once, calendar), unnamed. "
        "A job may have it, `schedules`, or both.",
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Free-form data kept with the job."
    )
    schedules: list[NamedScheduleCreate] | None = Field(
        None,
        max_length=20,
        description="Named schedules beside `schedule_config`; all enabled ones fire, merged "
        "(two that fire at the same instant fire once). misfire_policy and overlap_policy "
        "apply to the whole job: schedules that set them must agree.",
    )
    notifications: list[NotificationRuleCreate] = Field(
        default_factory=list,
        max_length=20,
        description="Who is told of which events (webhook or e-mail); see README "
        "'Notifications and metrics'.",
    )

    @field_validator("timezone")
    @classmethod
    def _timezone_is_known(cls, value: str) -> str:
        return _check_timezone(value)

    @model_validator(mode="wrap")
    @classmethod
    def _every_problem(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return with_domain_problems(data, handler, job_problems)


class ScheduleCreate(BaseModel):
    """A job and the time to run it."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"job": EXAMPLE_JOB, "scheduled_time": "2035-01-15T09:30:00"}]
        },
    )

    job: JobCreate
    scheduled_time: str = Field(
        min_length=1,
        max_length=64,
        description="ISO 8601 date-time. With an offset (`2035-01-15T08:30:00Z`, "
        "`...+01:00`) it is an instant. Without one it is wall-clock time in the job's "
        "timezone: a time that does not exist there (skipped by a DST change) is refused, "
        "an ambiguous one (repeated hour) means its first occurrence.",
        examples=["2035-01-15T09:30:00", "2035-01-15T08:30:00Z"],
    )


# -- responses ------------------------------------------------------------------------------
class StepExecutionRead(BaseModel):
    """One step of an execution."""

    step_id: str
    step_name: str
    step_type: str
    status: StepStatus
    success: bool
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration_seconds: float = 0.0
    output: str | list[dict[str, Any]] | None = Field(
        None,
        description="What the step produced. Shell and PowerShell steps: their stdout, as "
        "text. SQL steps: the rows the statement returned, as JSON objects keyed by column "
        '(`[{"id": 1}]`; capped, see `metadata.truncated`), or null for a statement that '
        "returns no rows or with `fetch_results: false`.",
    )
    error_message: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _sql_rows_as_json(cls, data: Any) -> Any:
        """A SQL step's rows are kept as JSON text (the spec's ``output: str``); a client
        gets them as JSON, not as a string it has to parse again."""
        if isinstance(data, dict) and data.get("step_type") == "sql":
            text = data.get("output")
            if isinstance(text, str):
                try:
                    rows = json.loads(text)
                except ValueError:
                    return data
                if isinstance(rows, list):
                    data = {**data, "output": rows}
        return data


class AttemptRead(BaseModel):
    """One attempt of an execution (max_retries makes more), with every step run in it."""

    attempt: int = Field(description="0 for the first attempt.")
    status: JobStatus
    start_time: datetime | None = None
    end_time: datetime | None = None
    error_message: str | None = None
    path: list[str] = Field(
        default_factory=list, description="Step ids in the order they ran (routing, loops)."
    )
    steps: list[StepExecutionRead] = Field(
        default_factory=list,
        description="Every step run of the attempt in order: a retried or looping step "
        "appears once per run (metadata.run, metadata.step_attempt); then the skipped ones.",
    )


class ExecutionRead(BaseModel):
    """An execution of a job: its status and every step of its latest attempt."""

    execution_id: str
    job_id: str
    job_name: str
    status: JobStatus
    success: bool = Field(description="True only when the status is `success`.")
    timezone: str
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration_seconds: float = 0.0
    steps: list[StepExecutionRead] = Field(default_factory=list)
    error_message: str | None = None
    retry_count: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)
    trigger: Trigger | None = Field(
        None,
        description="How it started: `now` (run at once and awaited: execute, a stored "
        "job's run), `queued` (queued at once in its timezone), `scheduled` (a one-off run "
        "at a set time, or the retry of an execution a dead node left), `schedule` (a fire "
        "of a stored job's recurring schedule) or `backfill` (a past fire run on request).",
    )
    current_step: str | None = Field(None, description="The step running now, if any.")
    scheduled_for: datetime | None = Field(None, description="When a scheduled run was due.")
    requested_by: str | None = Field(
        None,
        description="Id of the API key that started it (`schedule` for a recurring fire; "
        "null without keys). Never the key itself.",
    )
    cancelled_by: str | None = Field(
        None, description="Id of the API key that cancelled it, if one did."
    )
    attempts: list[AttemptRead] = Field(
        default_factory=list,
        description="Every attempt, oldest first; the fields above are those of the last one.",
    )


class ExecutionAcceptedRead(BaseModel):
    """An execution that was started and is not awaited (`?wait=false`)."""

    execution_id: str
    status: JobStatus
    status_url: str = Field(description="URL of the execution (also in the Location header).")


class ScheduleRead(BaseModel):
    """A scheduled execution."""

    execution_id: str
    job_id: str
    status: JobStatus
    scheduled_time_utc: datetime
    scheduled_time_local: LocalDateTime = Field(
        description="The same instant in the job's timezone, with its UTC offset."
    )
    timezone: str
    status_url: str = Field(description="URL of the execution.")


class QueueStatusRead(BaseModel):
    """One timezone queue."""

    timezone: str
    running: bool
    max_concurrent: int
    depth: int = Field(description="Jobs waiting for a slot.")
    active: int = Field(description="Queued jobs running now.")
    active_immediate: int = Field(description="Jobs executed now (execute endpoint) running.")
    peak_active: int
    completed: int
    failed: int
    cancelled: int


class EngineHealthRead(BaseModel):
    """Health of the execution engine."""

    status: str = Field(description="`running`, `stopping`, `stopped` or `failed`.")
    healthy: bool
    failure: str | None = None
    store_reachable: bool
    started_at: datetime | None = None
    uptime_seconds: float
    max_workers: int
    active_workers: int
    peak_workers: int
    queued: int
    scheduled_pending: int = Field(
        description="Scheduled runs waiting for their time, counted up to 10,000 (see "
        "`scheduled_pending_capped`); -1 when the store did not answer."
    )
    scheduled_pending_capped: bool = Field(
        False, description="True when more runs wait than `scheduled_pending` says."
    )
    default_timeout: int
    queue_max_concurrent: int
    step_caching: bool
    timezones: list[str]
    node_id: str | None = Field(None, description="This node's id (see `/api/v2/cluster`).")
    node: dict[str, Any] | None = Field(
        None, description="This node's lease: last heartbeat age, whether it is valid."
    )


class EngineStatusRead(BaseModel):
    """Engine health, every timezone queue and the executions running now."""

    engine: EngineHealthRead
    queues: dict[str, QueueStatusRead] = Field(
        description="This node's timezone queues (their limits hold per node)."
    )
    cluster_waiting_by_timezone: dict[str, int] = Field(
        default_factory=dict,
        description="Runs due and not yet started per timezone on every node of the cluster.",
    )
    active_executions: list[ExecutionRead]
    overdue_jobs: list[OverdueJobRead] = Field(
        default_factory=list,
        description="Stored jobs whose schedule should have fired beyond the misfire grace "
        "ago while the engine runs: their schedule stopped firing.",
    )


class StepTypeRead(BaseModel):
    """A step type and the JSON schema of its configuration."""

    type: str
    title: str | None = None
    description: str | None = None
    config_schema: dict[str, Any] = Field(description="JSON schema of the step's configuration.")


class StepTypeListRead(BaseModel):
    step_types: list[StepTypeRead]


class HealthRead(BaseModel):
    status: Literal["ok"] = "ok"


class ReadinessRead(BaseModel):
    status: Literal["ready"] = "ready"
    engine_running: bool
    store_reachable: bool
    warnings: list[str] = Field(
        default_factory=list,
        description="What works only in part on this server (e.g. PowerShell not installed).",
    )


class ProblemFieldError(BaseModel):
    """One problem with one request field."""

    field: str = Field(
        description="Path of the field: `steps[0].query`, `job.timezone`, `scheduled_time`; "
        "`body` for the request body as a whole."
    )
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details: the body of every 4xx and 5xx answer."""

    type: str = Field("about:blank", description="URI identifying the kind of problem.")
    title: str = Field(description="Short summary of the kind of problem.")
    status: int = Field(description="The HTTP status code.")
    detail: str | None = Field(None, description="What went wrong this time.")
    instance: str | None = Field(None, description="The request path.")
    errors: list[ProblemFieldError] = Field(
        default_factory=list, description="Field errors (validation problems)."
    )


class NodeRead(BaseModel):
    """One engine node of the cluster."""

    node_id: str = Field(
        description="host:pid:random; the same id on claims, history rows (`owner`) and log lines."
    )
    host: str
    pid: int
    version: str
    state: str = Field(
        description="`running`, `stopping` or `dead` (no heartbeat within "
        "`V2_NODE_TIMEOUT_SECONDS`)."
    )
    alive: bool
    started_at: datetime | None = None
    heartbeat_at: datetime | None = Field(None, description="Last heartbeat (database clock).")
    running: list[str] = Field(description="Ids of the executions it runs now.")


class WorkerLimitsRead(BaseModel):
    max_workers: int
    queue_max_concurrent: int


class ClusterRead(BaseModel):
    """The nodes sharing one database and the cluster-wide queue depths."""

    node_id: str = Field(description="The node that answered.")
    nodes: list[NodeRead]
    cluster_waiting: int = Field(description="Runs due and not yet started, on every node.")
    cluster_waiting_by_timezone: dict[str, int]
    per_node: WorkerLimitsRead = Field(
        description="`V2_MAX_WORKERS` and `V2_QUEUE_MAX_CONCURRENT` hold per node."
    )
    cluster_totals: WorkerLimitsRead = Field(
        description="The per-node limits times the live nodes (nodes of one configuration)."
    )
