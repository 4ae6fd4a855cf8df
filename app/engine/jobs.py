"""JobService: stored job definitions with schedules, as callers (API, Python) use them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from app.domain.errors import ConfigurationError, FieldError
from app.domain.jobs import JobNotFoundError, JobPage, JobQuery, StoredJob
from app.domain.models import JobDefinition, JobExecutionResult
from app.domain.schedule_config import validate_schedule_config
from app.domain.schedules import FireTime, build_schedule, upcoming
from app.domain.timeutil import is_valid_timezone, utc_now
from app.engine.manual import RunRequest, admit, steer
from app.engine.ports import JobStore
from app.engine.runner import Execution

if TYPE_CHECKING:
    from app.engine.engine import NewExecutionEngine

MAX_PREVIEW = 500


class JobService:
    def __init__(
        self,
        engine: NewExecutionEngine,
        store: JobStore,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._engine = engine
        self._store = store
        self._clock = clock

    # -- definitions ----------------------------------------------------------------------
    async def create(self, job: JobDefinition) -> StoredJob:
        job.validate()
        now = self._clock()
        job.created_at = job.updated_at = now
        _anchor_interval(job, now)
        stored = await self._store.create_job(job, next_fire_at=self._next_fire(job, now))
        self._engine.wake_recurring()
        return stored

    async def get(self, job_id: str) -> StoredJob:
        stored = await self._store.get_job(job_id)
        if stored is None:
            raise JobNotFoundError(job_id)
        return stored

    async def list_jobs(self, query: JobQuery) -> JobPage:
        return await self._store.list_jobs(query)

    async def replace(self, job: JobDefinition, *, expected_version: int | None) -> StoredJob:
        job.validate()
        current = await self.get(job.job_id)
        job.created_at = current.job.created_at
        _anchor_interval(job, self._clock())
        stored = await self._store.update_job(
            job,
            expected_version=expected_version,
            next_fire_at=self._next_fire(job, self._clock()),
        )
        self._engine.wake_recurring()
        return stored

    async def patch(
        self,
        job_id: str,
        changes: dict[str, Any],
        *,
        expected_version: int | None,
        build: Callable[[dict[str, Any]], JobDefinition] = JobDefinition.from_dict,
    ) -> StoredJob:
        """Change the fields in ``changes``; ``build`` turns the merged definition into the
        job to store (the API passes its parser, which checks it against the server)."""
        if "job_id" in changes and changes["job_id"] != job_id:
            raise ConfigurationError([FieldError("job_id", "cannot be changed")])
        current = await self.get(job_id)
        data = current.job.to_dict()
        data.update(changes)
        for key in ("created_at", "updated_at"):
            data.pop(key, None)
        job = build(data)
        return await self.replace(
            job,
            expected_version=expected_version if expected_version is not None else current.version,
        )

    async def set_enabled(
        self, job_id: str, enabled: bool, *, expected_version: int | None = None
    ) -> StoredJob:
        return await self.patch(job_id, {"enabled": enabled}, expected_version=expected_version)

    async def delete(self, job_id: str, *, expected_version: int | None = None) -> None:
        if not await self._store.delete_job(job_id, expected_version=expected_version):
            raise JobNotFoundError(job_id)

    # -- running and previews -------------------------------------------------------------
    async def run_now(
        self, job_id: str, *, requested_by: str | None = None, request: RunRequest | None = None
    ) -> Execution:
        """Run the stored job now, steered by ``request`` (overrides, start step, logical
        date) and subject to its overlap policy (``app.engine.manual``)."""
        stored = await self.get(job_id)
        request = request or RunRequest()
        job = steer(stored.job, request)
        options = await admit(self._engine, job, request, requested_by)
        return await self._engine.submit_now(job, requested_by=requested_by, options=options)

    async def last_execution(self, job_id: str) -> JobExecutionResult | None:
        """The job's newest execution (without its steps), or None."""
        return (await self.last_executions([job_id])).get(job_id)

    async def last_executions(self, job_ids: Sequence[str]) -> dict[str, JobExecutionResult]:
        """The newest execution (without its steps) of each job that has one, keyed by
        job_id, in a fixed number of store queries whatever the number of jobs."""
        return await self._store.latest_executions(job_ids)

    async def next_runs(self, job_id: str, count: int) -> list[FireTime]:
        stored = await self.get(job_id)
        job = stored.job
        if not job.schedule_config or not job.enabled:
            return []
        return self.preview(
            job.schedule_config,
            job.timezone,
            after=self._clock(),
            count=count,
            created_at=job.created_at,
        )

    def preview(
        self,
        schedule_config: dict[str, Any],
        timezone: str,
        *,
        after: datetime | None = None,
        count: int = 10,
        created_at: datetime | None = None,
    ) -> list[FireTime]:
        errors = validate_schedule_config(schedule_config)
        if not is_valid_timezone(timezone):
            errors.append(FieldError("timezone", f"unknown IANA timezone {timezone!r}"))
        if not 1 <= count <= MAX_PREVIEW:
            errors.append(FieldError("count", f"must be between 1 and {MAX_PREVIEW}"))
        if after is not None and after.tzinfo is None:
            errors.append(FieldError("after", "must carry a UTC offset"))
        if errors:
            raise ConfigurationError(errors)
        start = after or self._clock()
        schedule = build_schedule(schedule_config, timezone, created_at=created_at or start)
        return upcoming(schedule, start, count)

    def _next_fire(self, job: JobDefinition, now: datetime) -> datetime | None:
        if not job.enabled or not job.schedule_config:
            return None
        schedule = build_schedule(job.schedule_config, job.timezone, created_at=job.created_at)
        fire = schedule.next_fire(now)
        return fire.at if fire is not None else None


def _anchor_interval(job: JobDefinition, now: datetime) -> None:
    """An interval without ``start_at`` is anchored at the moment it is stored; the anchor is
    written into the schedule so every later evaluation (and the user) sees the same one."""
    config = job.schedule_config
    if config and config.get("type") == "interval" and not config.get("start_at"):
        job.schedule_config = {**config, "start_at": now.isoformat()}
