"""StoredJobService: stored job definitions as the routes use them.

It checks each definition as it enters (``JobParser``, the key's connection access), lets
``app.engine.jobs.JobService`` store and schedule it, and answers response models.
"""

from __future__ import annotations

from datetime import datetime

from app.api.errors import InvalidRequestError, InvalidScheduleError, PermissionDeniedError
from app.api.job_input import JobInput, JobParser
from app.api.jobs_schemas import (
    BackfillCreate,
    BackfillRead,
    FireTimeRead,
    JobPageRead,
    JobPatch,
    JobRead,
    NextRunsRead,
    RunCreate,
    SchedulePreviewCreate,
    describe_schedules,
)
from app.api.keys import ApiKey
from app.api.responses import StatusUrl, execution_read
from app.api.schemas import ExecutionAcceptedRead, ExecutionRead, JobCreate
from app.domain.errors import ConfigurationError, EngineNotRunningError, FieldError
from app.domain.jobs import JobQuery, StoredJob
from app.domain.models import JobDefinition
from app.domain.timeutil import parse_instant
from app.engine.backfill import BackfillRequest, backfill
from app.engine.engine import NewExecutionEngine
from app.engine.jobs import JobService
from app.engine.manual import RunRequest
from app.engine.schedule_health import ScheduleHealth


class StoredJobService:
    """Create, read, change, delete, run and preview stored jobs."""

    def __init__(
        self, engine: NewExecutionEngine, parser: JobParser, health: ScheduleHealth | None = None
    ) -> None:
        self._engine = engine
        self._parser = parser
        self._health = health

    @property
    def _jobs(self) -> JobService:
        if self._engine.jobs is None:
            raise EngineNotRunningError("this store keeps no job definitions")
        return self._engine.jobs

    def _admit(self, job_data: JobInput, requested_by: str | None) -> JobDefinition:
        job = self._parser.parse(job_data)
        self._parser.check_connection_access(job, requested_by)
        return job

    async def _read(self, stored: StoredJob) -> JobRead:
        health = await self._health.health(stored) if self._health is not None else "ok"
        last = await self._jobs.last_execution(stored.job_id)
        return JobRead.of(stored, last, health, self._parser.warnings(stored.job))

    async def create(self, job: JobCreate, *, requested_by: str | None) -> JobRead:
        return await self._read(await self._jobs.create(self._admit(job, requested_by)))

    async def get(self, job_id: str) -> JobRead:
        return await self._read(await self._jobs.get(job_id))

    async def list_jobs(self, query: JobQuery) -> JobPageRead:
        try:
            page = await self._jobs.list_jobs(query)
        except ConfigurationError as exc:  # a cursor that is not one of ours
            raise InvalidRequestError(exc.errors) from None
        last = await self._jobs.last_executions([s.job_id for s in page.items])
        health = await self._health.health_of(page.items, last) if self._health is not None else {}
        items = [
            JobRead.of(
                s, last.get(s.job_id), health.get(s.job_id, "ok"), self._parser.warnings(s.job)
            )
            for s in page.items
        ]
        return JobPageRead(items=items, next_cursor=page.next_cursor)

    async def replace(
        self,
        job_id: str,
        job: JobCreate,
        *,
        requested_by: str | None,
        expected_version: int | None,
    ) -> JobRead:
        if job.job_id != job_id:
            raise ConfigurationError([FieldError("job_id", "must match the job_id in the path")])
        definition = self._admit(job, requested_by)
        return await self._read(
            await self._jobs.replace(definition, expected_version=expected_version)
        )

    async def patch(
        self,
        job_id: str,
        changes: JobPatch,
        *,
        requested_by: str | None,
        expected_version: int | None,
    ) -> JobRead:
        stored = await self._jobs.patch(
            job_id,
            changes.model_dump(mode="json", exclude_unset=True),
            expected_version=expected_version,
            build=lambda data: self._admit(data, requested_by),
        )
        return await self._read(stored)

    async def set_enabled(
        self, job_id: str, enabled: bool, *, expected_version: int | None
    ) -> JobRead:
        stored = await self._jobs.set_enabled(job_id, enabled, expected_version=expected_version)
        return await self._read(stored)

    async def delete(self, job_id: str, *, expected_version: int | None) -> None:
        await self._jobs.delete(job_id, expected_version=expected_version)

    async def run(
        self,
        job_id: str,
        body: RunCreate | None,
        *,
        key: ApiKey | None,
        wait: bool,
        status_url: StatusUrl,
    ) -> ExecutionRead | ExecutionAcceptedRead:
        """Run the stored job now, steered by ``body``: its result, or (``wait=False``) the
        started execution."""
        requested_by = key.id if key is not None else None
        body = body or RunCreate()
        if body.overlap is not None and key is not None and not key.allows("admin"):
            raise PermissionDeniedError(
                f"overlap {body.overlap!r} needs a key with the 'admin' scope "
                f"(the API key {key.id!r} has: {', '.join(sorted(key.scopes))})",
                [FieldError("overlap", "needs the admin scope")],
            )
        self._parser.check_connection_access((await self._jobs.get(job_id)).job, requested_by)
        request = RunRequest(
            parameters=body.parameters,
            start_step_id=body.start_step_id,
            logical_date=body.logical_date,
            overlap=body.overlap,
        )
        execution = await self._jobs.run_now(job_id, requested_by=requested_by, request=request)
        wait = wait if body.wait is None else body.wait
        if not wait:
            return ExecutionAcceptedRead(
                execution_id=execution.execution_id,
                status=execution.result.status,
                status_url=status_url(execution.execution_id),
            )
        result = await self._engine.wait_for(execution.execution_id)
        assert result is not None
        return execution_read(result.to_dict())

    async def set_schedule_enabled(
        self, job_id: str, name: str, enabled: bool, *, expected_version: int | None
    ) -> JobRead:
        stored = await self._jobs.set_schedule_enabled(
            job_id, name, enabled, expected_version=expected_version
        )
        return await self._read(stored)

    async def backfill(
        self, job_id: str, body: BackfillCreate, *, requested_by: str | None
    ) -> BackfillRead:
        """Run the job for each fire of its schedule in a range (``app.engine.backfill``)."""
        stored = await self._jobs.get(job_id)
        self._parser.check_connection_access(stored.job, requested_by)
        request = BackfillRequest(
            start=body.start,
            end=body.end,
            max_runs=body.max_runs,
            only_missing=body.only_missing,
            dry_run=body.dry_run,
        )
        plan = await backfill(self._engine, stored, request, requested_by=requested_by)
        return BackfillRead.of(plan)

    async def next_runs(
        self, job_id: str, count: int, *, after: datetime | None = None
    ) -> NextRunsRead:
        job = (await self._jobs.get(job_id)).job
        fires = await self._jobs.next_runs(job_id, count, after=after)
        return NextRunsRead(
            job_id=job_id,
            timezone=job.timezone,
            runs=[FireTimeRead.of(f) for f in fires],
            schedules=describe_schedules(job.schedule_config, job.schedules, job.timezone),
        )

    async def preview(self, preview: SchedulePreviewCreate) -> NextRunsRead:
        """The next fires of a schedule; ``InvalidScheduleError`` listing every problem."""
        after: datetime | None = None
        errors: list[FieldError] = []
        if preview.after is not None:
            try:
                after = parse_instant(preview.after)
            except ValueError as exc:
                errors.append(FieldError("after", str(exc)))
        body = preview.model_dump(mode="json", exclude_unset=True)
        config, schedules = body.get("schedule_config"), body.get("schedules")
        try:
            fires = await self._jobs.preview(
                config, preview.timezone, after=after, count=preview.count, schedules=schedules
            )
        except ConfigurationError as exc:
            errors = exc.errors + errors
        if errors:
            raise InvalidScheduleError(errors)
        return NextRunsRead(
            timezone=preview.timezone,
            runs=[FireTimeRead.of(f) for f in fires],
            schedules=describe_schedules(config, schedules, preview.timezone),
        )
