"""Importing SQL Server Agent jobs from an msdb export: the request and answer models and
``SqlAgentImportService``, which the ``POST /api/v2/import/sql-agent`` route calls.

The mapping itself is ``app.domain.sql_agent`` (pure, unit-tested). Here every mapped job is
checked as ``POST /api/v2/jobs`` checks one (``JobParser``: schema, limits, connections the
server has and the key may use), every problem of the whole import in one 400, and then
all jobs are stored in one transaction (``JobService.create_many``): all land or none do.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.api.errors import InvalidRequestError, PermissionDeniedError, prefixed
from app.api.job_input import JobParser
from app.api.schemas import JobCreate
from app.domain.errors import ConfigurationError, EngineNotRunningError, FieldError
from app.domain.jobs import JobsExistError, JobsWritten, OnConflict
from app.domain.models import JobDefinition
from app.domain.sql_agent.export import SqlAgentExport
from app.domain.sql_agent.mapping import (
    ImportOptions,
    ImportPlan,
    Outcome,
    PlannedJob,
    plan_import,
)
from app.domain.timeutil import is_valid_timezone
from app.engine.engine import NewExecutionEngine
from app.engine.jobs import JobService

EXAMPLE_IMPORT: dict[str, Any] = {
    "export": {
        "sysjobs": [
            {
                "job_id": "6F9619FF-8B86-D011-B42D-00C04FC964FF",
                "name": "Nightly load",
                "enabled": 1,
                "start_step_id": 1,
                "description": "Loads the warehouse",
            }
        ],
        "sysjobsteps": [
            {
                "job_id": "6F9619FF-8B86-D011-B42D-00C04FC964FF",
                "step_id": 1,
                "step_name": "Load",
                "subsystem": "TSQL",
                "command": "EXEC dbo.load_day N'$(ESCAPE_SQUOTE(JOBNAME))'",
                "database_name": "DW",
                "on_success_action": 1,
                "on_success_step_id": 0,
                "on_fail_action": 2,
                "on_fail_step_id": 0,
                "retry_attempts": 2,
                "retry_interval": 5,
            }
        ],
        "sysschedules": [
            {
                "schedule_id": 9,
                "name": "Mon Wed Fri 01:30, every other week",
                "enabled": 1,
                "freq_type": 8,
                "freq_interval": 42,
                "freq_subday_type": 1,
                "freq_subday_interval": 0,
                "freq_relative_interval": 0,
                "freq_recurrence_factor": 2,
                "active_start_date": 20260105,
                "active_end_date": 99991231,
                "active_start_time": 13000,
                "active_end_time": 235959,
            }
        ],
        "sysjobschedules": [{"job_id": "6F9619FF-8B86-D011-B42D-00C04FC964FF", "schedule_id": 9}],
    },
    "options": {
        "timezone": "Europe/London",
        "connection_map": {"DW": "warehouse"},
        "job_id_prefix": "agent-",
        "on_conflict": "fail",
        "dry_run": True,
    },
}


class SqlAgentImportOptions(BaseModel):
    """How the export is mapped and stored."""

    model_config = ConfigDict(extra="forbid", strict=True)

    timezone: str = Field(
        min_length=1,
        max_length=50,
        description="The IANA timezone SQL Server Agent's server-local times are in; the "
        "jobs' timezone.",
        examples=["Europe/London"],
    )
    connection_map: dict[str, str] = Field(
        default_factory=dict,
        max_length=1000,
        description='`{database_name or "server/database": connection_name}`: the '
        "connection (V2_CONNECTIONS) each T-SQL step's database is reached by; the "
        '"server/database" key wins, keys match case-insensitively, a step without '
        "database_name is in master.",
        examples=[{"DW": "warehouse", "SQLPROD01/Sales": "sales"}],
    )
    job_id_prefix: str = Field(
        "",
        max_length=50,
        pattern=r"^[^/]*$",
        description="Put before every job_id (the job's name made URL-friendly).",
    )
    on_conflict: Literal["fail", "skip", "replace"] = Field(
        "fail",
        description="A job_id already stored: fail (409, nothing stored), skip (leave it), "
        "replace (replace its definition).",
    )
    dry_run: bool = Field(False, description="Answer what would be stored; store nothing.")

    @field_validator("timezone")
    @classmethod
    def _timezone_is_known(cls, value: str) -> str:
        try:
            valid = is_valid_timezone(value)
        except OSError:  # "America" names a directory of the tz database
            valid = False
        if not valid:
            raise ValueError(f"unknown IANA timezone {value!r}")
        return value


class SqlAgentImportCreate(BaseModel):
    """An msdb export (the README's `FOR JSON PATH` query writes it) and the options."""

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [EXAMPLE_IMPORT]}
    )

    export: SqlAgentExport
    options: SqlAgentImportOptions


class ImportReportEntryRead(BaseModel):
    """Something of the export that was not carried over as it was."""

    kind: str = Field(
        description="subsystem, unmapped_database, no_steps, schedule, proxy, output_file, "
        "database_user, notification, delete_level, token, cmdexec, retry_attempts, "
        "retry_interval."
    )
    outcome: Outcome = Field(
        description="job_not_imported (the job is not stored), schedule_not_imported, "
        "not_carried_over (the job is stored without it), translated (carried over "
        "differently), check (carried over; worth a look)."
    )
    message: str
    source: str = Field(description="Its row and column in the export.")
    job: str = Field(description="SQL Server Agent's job name.")
    job_id: str = Field(description="The job's job_id here.")
    step: int | None = Field(None, description="msdb step_id, for a step.")
    step_name: str | None = None
    schedule: str | None = Field(None, description="msdb schedule name, for a schedule.")


class ImportedJobRead(BaseModel):
    """A job the import stores (or, in a dry run, would store)."""

    job_id: str
    action: Literal["create", "replace", "skip"]
    sql_agent_job_id: str
    sql_agent_name: str
    version: int | None = Field(None, description="The stored version (none for skip).")
    next_fire_at: datetime | None = Field(
        None, description="When its schedules fire next (UTC); none when disabled or unscheduled."
    )
    definition: JobCreate = Field(description="The job as stored (`GET /api/v2/jobs/{job_id}`).")


class SqlAgentImportRead(BaseModel):
    """What the import stored (or would store), and the report of what was not carried
    over."""

    dry_run: bool
    created: int
    replaced: int
    skipped: int
    not_imported: int = Field(description="Jobs of the export not stored (see `report`).")
    jobs: list[ImportedJobRead]
    report: list[ImportReportEntryRead]


class SqlAgentImportService:
    """Maps an export, checks every job against this server, stores them all or none."""

    def __init__(self, engine: NewExecutionEngine, parser: JobParser) -> None:
        self._engine = engine
        self._parser = parser

    @property
    def _jobs(self) -> JobService:
        if self._engine.jobs is None:
            raise EngineNotRunningError("this store keeps no job definitions")
        return self._engine.jobs

    async def run(
        self, body: SqlAgentImportCreate, *, requested_by: str | None
    ) -> SqlAgentImportRead:
        """Map, check and store (or, ``dry_run``, only say what would be stored)."""
        plan = self._plan(body)
        jobs = self._admit(plan.jobs, requested_by)
        written = await self._store(jobs, body.options)
        stored = {s.job_id: ("create", s) for s in written.created}
        stored |= {s.job_id: ("replace", s) for s in written.replaced}
        listed = []
        for planned, job in jobs:
            action, found = stored.get(job.job_id, ("skip", None))
            listed.append(
                ImportedJobRead(
                    job_id=job.job_id,
                    action=action,
                    sql_agent_job_id=planned.agent_job_id,
                    sql_agent_name=planned.name,
                    version=found.version if found is not None else None,
                    next_fire_at=found.next_fire_at if found is not None else None,
                    definition=JobCreate.model_validate(planned.definition),
                )
            )
        return SqlAgentImportRead(
            dry_run=body.options.dry_run,
            created=len(written.created),
            replaced=len(written.replaced),
            skipped=len(written.skipped),
            not_imported=len(body.export.sysjobs) - len(jobs),
            jobs=listed,
            report=[
                ImportReportEntryRead.model_validate(e, from_attributes=True) for e in plan.report
            ],
        )

    def _plan(self, body: SqlAgentImportCreate) -> ImportPlan:
        """The mapped jobs and the report; 400 naming every bad row and option."""
        options = body.options
        errors = self._connection_map_errors(options.connection_map)
        try:
            plan = plan_import(
                body.export,
                ImportOptions(
                    timezone=options.timezone,
                    connection_map=options.connection_map,
                    job_id_prefix=options.job_id_prefix,
                    timeout_seconds=self._parser.max_timeout_seconds,
                    batch_commit=self._batch_commit(options.connection_map.values()),
                ),
            )
        except ConfigurationError as exc:
            raise InvalidRequestError(exc.errors + errors) from None
        if errors:
            raise InvalidRequestError(errors)
        return plan

    async def _store(
        self, jobs: list[tuple[PlannedJob, JobDefinition]], options: SqlAgentImportOptions
    ) -> JobsWritten:
        """All the jobs in one transaction (``JobService.create_many``); problems named
        under their export rows."""
        try:
            return await self._jobs.create_many(
                [job for _, job in jobs],
                on_conflict=OnConflict(options.on_conflict),
                dry_run=options.dry_run,
                where=[f"export.sysjobs[{planned.row}]" for planned, _ in jobs],
            )
        except ConfigurationError as exc:  # what storing checks beyond the parser
            raise InvalidRequestError(exc.errors) from None
        except JobsExistError as exc:
            rows = {job.job_id: planned.row for planned, job in jobs}
            raise JobsExistError(
                exc.job_ids,
                [
                    FieldError(
                        f"export.sysjobs[{rows[job_id]}].name",
                        f"job_id {job_id!r} is taken (on_conflict is fail: nothing was "
                        "stored; use skip or replace)",
                    )
                    for job_id in exc.job_ids
                    if job_id in rows
                ],
            ) from None

    def _batch_commit(self, names: Iterable[str]) -> frozenset[str]:
        """The mapped connections that are SQL Server and not read_only."""
        registry = self._parser.resources.connections
        known = set(registry.names())
        return frozenset(
            name
            for name in names
            if name in known
            and registry.config(name).family == "mssql"
            and not registry.config(name).read_only
        )

    def _connection_map_errors(self, connection_map: dict[str, str]) -> list[FieldError]:
        known = self._parser.resources.connections.names()
        listed = ", ".join(repr(n) for n in known) or "none configured"
        return [
            FieldError(
                f"options.connection_map.{key}",
                f"unknown connection {name!r} on this server (known: {listed}; V2_CONNECTIONS)",
            )
            for key, name in connection_map.items()
            if name not in known
        ]

    def _admit(
        self, planned: list[PlannedJob], requested_by: str | None
    ) -> list[tuple[PlannedJob, JobDefinition]]:
        """Each planned job parsed and checked as ``POST /api/v2/jobs`` checks one: one 400
        naming every problem under its row, else one 403 for connections the key may not
        use."""
        admitted: list[tuple[PlannedJob, JobDefinition]] = []
        errors: list[FieldError] = []
        denied: list[FieldError] = []
        for job in planned:
            prefix = f"export.sysjobs[{job.row}]"
            try:
                definition = self._parser.parse(job.definition)
            except ConfigurationError as exc:
                errors.extend(prefixed(exc, prefix).errors)
                continue
            try:
                self._parser.check_connection_access(definition, requested_by, prefix=prefix)
            except PermissionDeniedError as exc:
                denied.extend(exc.errors)
            admitted.append((job, definition))
        if errors:
            raise InvalidRequestError(errors)
        if denied:
            raise PermissionDeniedError("; ".join(map(str, denied)), denied)
        return admitted
