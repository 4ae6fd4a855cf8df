"""JobService: stored job definitions with schedules, as callers (API, Python) use them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from app.domain.errors import ConfigurationError, FieldError
from app.domain.job_schedule import JobSchedule, build_job_schedule, required_calendars
from app.domain.jobs import (
    JobNotFoundError,
    JobPage,
    JobQuery,
    JobsExistError,
    JobsWritten,
    JobWrite,
    OnConflict,
    ScheduleNotFoundError,
    StoredJob,
)
from app.domain.models import JobDefinition, JobExecutionResult
from app.domain.schedule_config import (
    calendars_used,
    validate_schedule_config,
    validate_schedules,
)
from app.domain.schedules import FireTime, safe_next, upcoming
from app.domain.timeutil import is_valid_timezone, to_local, utc_now
from app.engine.calendars import CalendarService
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
        self.calendars = CalendarService(store, store)

    # -- definitions ----------------------------------------------------------------------
    async def create(self, job: JobDefinition) -> StoredJob:
        job.validate()
        await self._check_calendars(job)
        now = self._clock()
        job.created_at = job.updated_at = now
        _anchor_interval(job, now)
        stored = await self._store.create_job(job, next_fire_at=await self._next_fire(job, now))
        self._engine.wake_recurring()
        return stored

    async def create_many(
        self,
        jobs: Sequence[JobDefinition],
        *,
        on_conflict: OnConflict,
        dry_run: bool = False,
        where: Sequence[str] | None = None,
    ) -> JobsWritten:
        """Store ``jobs`` (distinct job_ids) in one transaction, all or none, each prepared
        as ``create`` prepares one; ``on_conflict`` says what a taken job_id does (see
        ``JobStore.write_jobs``). ``dry_run``: check everything and say what would be
        written (the stored jobs it would create or replace, with their next fires), but
        write nothing. One ``ConfigurationError`` lists every job's problems, each under
        that job's ``where`` (default ``jobs[<index>]``)."""
        places = list(where) if where is not None else [f"jobs[{i}]" for i in range(len(jobs))]
        errors: list[FieldError] = []
        now = self._clock()
        writes = []
        for job, place in zip(jobs, places, strict=True):
            try:
                job.validate()
                await self._check_calendars(job)
                job.created_at = job.updated_at = now
                _anchor_interval(job, now)
                writes.append(JobWrite(job, await self._next_fire(job, now)))
            except ConfigurationError as exc:
                errors.extend(FieldError(f"{place}.{e.field}", e.message) for e in exc.errors)
        if errors:
            raise ConfigurationError(errors)
        if not dry_run:
            written = await self._store.write_jobs(writes, on_conflict=on_conflict)
            self._engine.wake_recurring()
            return written
        written = JobsWritten()
        current = {w.job.job_id: await self._store.get_job(w.job.job_id) for w in writes}
        taken = [job_id for job_id, stored in current.items() if stored is not None]
        if taken and on_conflict is OnConflict.FAIL:
            raise JobsExistError(taken)
        for write in writes:
            stored = current[write.job.job_id]
            if stored is not None and on_conflict is OnConflict.SKIP:
                written.skipped.append(write.job.job_id)
                continue
            preview = StoredJob(
                write.job, (stored.version + 1) if stored else 1, write.next_fire_at
            )
            (written.replaced if stored else written.created).append(preview)
        return written

    async def get(self, job_id: str) -> StoredJob:
        stored = await self._store.get_job(job_id)
        if stored is None:
            raise JobNotFoundError(job_id)
        return stored

    async def list_jobs(self, query: JobQuery) -> JobPage:
        return await self._store.list_jobs(query)

    async def replace(self, job: JobDefinition, *, expected_version: int | None) -> StoredJob:
        job.validate()
        await self._check_calendars(job)
        current = await self.get(job.job_id)
        job.created_at = current.job.created_at
        _anchor_interval(job, self._clock())
        stored = await self._store.update_job(
            job,
            expected_version=expected_version,
            next_fire_at=await self._next_fire(job, self._clock()),
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
        """Enable or disable the job; when it already is, nothing changes (not its version)
        unless ``expected_version`` names another version (412)."""
        current = await self.get(job_id)
        if current.job.enabled == enabled and expected_version in (None, current.version):
            return current
        return await self.patch(job_id, {"enabled": enabled}, expected_version=expected_version)

    async def set_schedule_enabled(
        self, job_id: str, name: str, enabled: bool, *, expected_version: int | None = None
    ) -> StoredJob:
        """Enable or disable one named schedule of a job (the others keep firing)."""
        current = await self.get(job_id)
        schedules = [dict(s) for s in current.job.schedules or []]
        found = [s for s in schedules if s.get("name") == name]
        if not found:
            raise ScheduleNotFoundError(job_id, name)
        if found[0].get("enabled", True) == enabled:
            return current
        found[0]["enabled"] = enabled
        return await self.patch(job_id, {"schedules": schedules}, expected_version=expected_version)

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

    async def next_runs(
        self, job_id: str, count: int, *, after: datetime | None = None
    ) -> list[FireTime]:
        """The job's next ``count`` fires after ``after`` (default: now)."""
        stored = await self.get(job_id)
        job = stored.job
        if not (job.schedule_config or job.schedules) or not job.enabled:
            return []
        return await self.preview(
            job.schedule_config,
            job.timezone,
            after=after or self._clock(),
            count=count,
            created_at=job.created_at,
            schedules=job.schedules,
        )

    async def preview(
        self,
        schedule_config: dict[str, Any] | None,
        timezone: str,
        *,
        after: datetime | None = None,
        count: int = 10,
        created_at: datetime | None = None,
        schedules: list[dict[str, Any]] | None = None,
    ) -> list[FireTime]:
        """The next ``count`` fires of the schedules, merged and named by source; fires a
        business calendar excludes are included, flagged (they do not run)."""
        errors = validate_schedule_config(schedule_config) + validate_schedules(
            schedules, schedule_config
        )
        if schedule_config is None and not schedules:
            errors.append(FieldError("schedule_config", "give schedule_config or schedules"))
        if not is_valid_timezone(timezone):
            errors.append(FieldError("timezone", f"unknown IANA timezone {timezone!r}"))
        if not 1 <= count <= MAX_PREVIEW:
            errors.append(FieldError("count", f"must be between 1 and {MAX_PREVIEW}"))
        if after is not None and after.tzinfo is None:
            errors.append(FieldError("after", "must carry a UTC offset"))
        if errors:
            raise ConfigurationError(errors)
        start = after or self._clock()
        calendars = await self._resolve_calendars(schedule_config, schedules)
        schedule = build_job_schedule(
            timezone,
            schedule_config,
            schedules,
            created_at=created_at or start,
            calendars=calendars,
        )
        return upcoming(schedule, start, count)

    async def schedule_of(self, job: JobDefinition) -> JobSchedule:
        """The merged schedule of a stored job, with the calendars it excludes as they are
        now."""
        calendars = await self._resolve_calendars(job.schedule_config, job.schedules)
        return build_job_schedule(
            job.timezone,
            job.schedule_config,
            job.schedules,
            created_at=job.created_at,
            calendars=calendars,
        )

    async def _resolve_calendars(
        self, schedule_config: dict[str, Any] | None, schedules: list[dict[str, Any]] | None
    ) -> dict[str, Any]:
        names = required_calendars(schedule_config, schedules)
        return await self.calendars.resolve(names) if names else {}

    async def _check_calendars(self, job: JobDefinition) -> None:
        used = calendars_used(job.schedule_config, job.schedules)
        if not used:
            return
        known = await self.calendars.resolve(name for _, name in used)
        errors = [
            FieldError(where, f"no calendar named {name!r} (see /api/v2/calendars)")
            for where, name in used
            if name not in known
        ]
        if errors:
            raise ConfigurationError(errors)

    async def _next_fire(self, job: JobDefinition, now: datetime) -> datetime | None:
        if not job.enabled or not (job.schedule_config or job.schedules):
            return None
        fire = safe_next(await self.schedule_of(job), now)
        return fire.at if fire is not None else None


def _anchor_interval(job: JobDefinition, now: datetime) -> None:
    """An interval without ``start_at`` is anchored at the moment it is stored, a calendar
    schedule without ``start_date`` at that day (in the job's timezone); the anchor is
    written into the schedule so every later evaluation (and the user) sees the same one."""
    job.schedule_config = _anchored(job.schedule_config, job.timezone, now)
    if job.schedules:
        job.schedules = [
            {**s, "schedule_config": _anchored(s.get("schedule_config"), job.timezone, now)}
            for s in job.schedules
        ]


def _anchored(config: dict[str, Any] | None, timezone: str, now: datetime) -> dict[str, Any] | None:
    if not config:
        return config
    if config.get("type") == "interval" and not config.get("start_at"):
        return {**config, "start_at": now.isoformat()}
    if config.get("type") == "calendar" and not config.get("start_date"):
        return {**config, "start_date": to_local(now, timezone).date().isoformat()}
    return config
