"""InMemoryExecutionStore: the ExecutionStore and JobStore ports kept in process memory
(tests, embedding).

It forgets everything on restart; the service uses the database store from
``app.persistence``. It follows the same contract as the database store (the contract
suites in ``tests/integration/test_store_contract.py`` and ``test_job_store_contract.py``
run against both): text sanitised and output capped the same way, the same keyset cursors,
the same unique recurring fire, job definitions given back through their JSON form.
"""

from __future__ import annotations

import copy
import heapq
import json
from collections.abc import Sequence
from datetime import UTC, datetime

from app.domain.attempts import assemble, step_run
from app.domain.enums import JobStatus, StepStatus
from app.domain.jobs import (
    JobExistsError,
    JobNotFoundError,
    JobPage,
    JobQuery,
    JobsExistError,
    JobsWritten,
    JobWrite,
    OnConflict,
    StoredJob,
    VersionConflictError,
    decode_job_cursor,
    encode_job_cursor,
)
from app.domain.models import JobDefinition, JobExecutionResult, StepExecutionResult
from app.domain.records import (
    CANCELLED_BEFORE_START,
    DEFAULT_MAX_OUTPUT_CHARS,
    DuplicateScheduledRunError,
    check_limit,
    decode_cursor,
    encode_cursor,
    pending_metadata,
    storable_job,
    storable_step,
)
from app.domain.timeutil import parse_iso, utc_now
from app.engine.calendars import InMemoryCalendarStoreMixin
from app.engine.memory_outbox import MemoryOutboxMixin
from app.engine.ports import ExecutionPage, ExecutionQuery, ScheduledRun


class InMemoryExecutionStore(InMemoryCalendarStoreMixin, MemoryOutboxMixin):
    def __init__(self, *, max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS) -> None:
        self.max_output_chars = max_output_chars
        self._jobs: dict[str, JobExecutionResult] = {}
        self._created: dict[str, datetime] = {}
        self._steps: dict[str, dict[tuple[int, str, int], StepExecutionResult]] = {}
        self._runs: dict[str, ScheduledRun] = {}
        self._fires: set[tuple[str, datetime]] = set()
        self._heap: list[tuple[datetime, str]] = []
        self._definitions: dict[str, JobDefinition] = {}
        self._stored_jobs: dict[str, StoredJob] = {}
        self._claimed: dict[str, ScheduledRun] = {}  # claimed runs not started yet

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def record_pending(
        self,
        execution_id: str,
        job: JobDefinition,
        *,
        trigger: str,
        scheduled_for: datetime | None = None,
        requested_by: str | None = None,
        durable: bool = True,
    ) -> None:
        if execution_id in self._jobs:
            return
        self._definitions[execution_id] = copy.deepcopy(job)
        self._jobs[execution_id] = storable_job(
            JobExecutionResult(
                execution_id=execution_id,
                job_id=job.job_id,
                job_name=job.job_name,
                status=JobStatus.PENDING,
                timezone=job.timezone,
                metadata=pending_metadata(trigger, scheduled_for, requested_by),
            )
        )
        self._created[execution_id] = utc_now()

    async def record_job(self, result: JobExecutionResult, *, durable: bool = True) -> None:
        await self._finished_outbox(result)
        self._jobs[result.execution_id] = storable_job(result)
        self._created.setdefault(result.execution_id, utc_now())
        if result.status is not JobStatus.PENDING:
            self._claimed.pop(result.execution_id, None)
        if result.status is not JobStatus.PENDING and result.execution_id in self._runs:
            # It started (or ended) some other way: its scheduled run must not fire.
            del self._runs[result.execution_id]
            self._drop_from_heap(result.execution_id)

    async def record_step(
        self, execution_id: str, step: StepExecutionResult, attempt: int, *, durable: bool = True
    ) -> None:
        stored = storable_step(step, self.max_output_chars)
        key = (attempt, stored.step_id, step_run(stored))
        self._steps.setdefault(execution_id, {})[key] = stored

    async def get_execution(self, execution_id: str) -> JobExecutionResult | None:
        job = self._jobs.get(execution_id)
        if job is None:
            return None
        result = copy.deepcopy(job)
        steps = self._steps.get(execution_id, {})
        return assemble(result, [(a, copy.deepcopy(s)) for (a, _, _), s in steps.items()])

    async def list_executions(self, query: ExecutionQuery) -> ExecutionPage:
        check_limit(query.limit)
        after = decode_cursor(query.cursor) if query.cursor else None
        keyed = sorted((self._order_key(j.execution_id), j) for j in self._jobs.values())
        keyed.reverse()
        out = [
            (key, r)
            for key, r in keyed
            if (query.job_id is None or r.job_id == query.job_id)
            and (query.status is None or r.status is query.status)
            and (query.timezone is None or r.timezone == query.timezone)
            and _started_within(r.start_time, query.started_after, query.started_before)
            and (after is None or key < after)
        ]
        page = out[: query.limit]
        more = len(out) > query.limit
        items = [r for r in [await self.get_execution(p.execution_id) for _, p in page] if r]
        cursor = encode_cursor(*page[-1][0]) if more and page else None
        return ExecutionPage(items, cursor)

    async def latest_executions(self, job_ids: Sequence[str]) -> dict[str, JobExecutionResult]:
        wanted = set(job_ids)
        newest: dict[str, tuple[tuple[datetime, str], JobExecutionResult]] = {}
        for execution_id, job in self._jobs.items():
            if job.job_id not in wanted:
                continue
            key = self._order_key(execution_id)
            current = newest.get(job.job_id)
            if current is None or key > current[0]:
                newest[job.job_id] = (key, job)
        out: dict[str, JobExecutionResult] = {}
        for job_id, (_, job) in newest.items():
            result = copy.deepcopy(job)
            result.steps = []
            out[job_id] = result
        return out

    def _order_key(self, execution_id: str) -> tuple[datetime, str]:
        """Listing order (``list_executions`` gives the highest first): created_at, then
        execution_id, as the database store's keyset."""
        return (self._created[execution_id], execution_id)

    async def add_scheduled_runs(self, runs: Sequence[ScheduledRun]) -> None:
        keyed = [run.execution_id for run in runs if run.fire_key is not None]
        if keyed:  # as the database store: nothing written
            raise ValueError(f"runs keyed by their fire go through add_scheduled_run: {keyed}")
        for run in runs:  # one-off runs: nothing here can fail half-way
            await self.add_scheduled_run(run)

    async def add_scheduled_run(
        self, run: ScheduledRun, *, settled: tuple[JobStatus, str] | None = None
    ) -> None:
        stored = copy.deepcopy(run)
        stored.scheduled_for = run.scheduled_for.astimezone(UTC)
        fire = (run.job.job_id, stored.scheduled_for)
        if run.fire_key is not None:
            if fire in self._fires:
                raise DuplicateScheduledRunError(run.job.job_id, run.scheduled_for)
            self._fires.add(fire)
        await self.record_pending(
            run.execution_id,
            run.job,
            trigger=run.trigger,
            scheduled_for=run.scheduled_for,
            requested_by=run.requested_by,
        )
        pending = self._jobs.get(run.execution_id)
        if pending is not None and run.metadata:
            pending.metadata = {**run.metadata, **pending.metadata}
        if settled is not None:  # a fire that will not run: never claimable
            self._settle(run.execution_id, *settled)
            return
        self._runs[run.execution_id] = stored
        heapq.heappush(self._heap, (stored.scheduled_for, run.execution_id))

    async def fires_with_runs(self, job_id: str, start: datetime, end: datetime) -> set[datetime]:
        out: set[datetime] = set()
        for job in self._jobs.values():
            at = job.metadata.get("scheduled_for") if job.job_id == job_id else None
            ran = job.start_time is not None or not job.status.is_terminal
            if isinstance(at, str) and ran and start <= (when := parse_iso(at)) < end:
                out.add(when.astimezone(UTC))
        return out

    async def due_scheduled_runs(self, until: datetime, limit: int) -> list[ScheduledRun]:
        out: list[ScheduledRun] = []
        for when, execution_id in sorted(self._heap):
            if when > until or len(out) >= limit:
                break
            run = self._runs.get(execution_id)
            if run is not None:
                out.append(copy.deepcopy(run))
        return out

    async def claim_scheduled_run(self, execution_id: str, owner: str) -> bool:
        run = self._runs.pop(execution_id, None)
        if run is None:
            return False
        self._claimed[execution_id] = run
        self._drop_from_heap(execution_id)
        return True

    async def mark_run_dispatched(self, execution_id: str) -> None:
        self._claimed.pop(execution_id, None)
        if self._runs.pop(execution_id, None) is not None:
            self._drop_from_heap(execution_id)

    async def cancel_scheduled_run(
        self,
        execution_id: str,
        *,
        cancelled_by: str | None = None,
        claimed_by: str | None = None,
    ) -> bool:
        if self._runs.pop(execution_id, None) is None:
            return False
        self._drop_from_heap(execution_id)
        job = self._jobs.get(execution_id)
        if job is not None:
            job.status = JobStatus.CANCELLED
            job.end_time = utc_now()
            job.error_message = CANCELLED_BEFORE_START
            if cancelled_by is not None:
                job.metadata["cancelled_by"] = cancelled_by
        return True

    async def count_scheduled_runs(self, limit: int | None = None) -> int:
        return len(self._runs) if limit is None else min(len(self._runs), limit)

    async def next_scheduled_time(self) -> datetime | None:
        while self._heap and self._heap[0][1] not in self._runs:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    async def claim_due_runs(
        self, until: datetime, limit: int, owner: str | None = None
    ) -> list[ScheduledRun]:
        runs = await self.due_scheduled_runs(until, limit)
        claimed = []
        for run in runs:
            if await self.claim_scheduled_run(run.execution_id, owner or "memory"):
                run.attempt += 1
                claimed.append(run)
        return claimed

    async def mark_missed(
        self, execution_id: str, reason: str, status: JobStatus = JobStatus.FAILED
    ) -> bool:
        run = self._runs.pop(execution_id, None)
        if run is None:
            return False
        self._drop_from_heap(execution_id)
        self._settle(execution_id, status, reason)
        await self._missed_outbox(run.job, execution_id, run.scheduled_for, reason, status)
        return True

    async def requeue_claimed_runs(
        self,
        *,
        owner: str | None = None,
        expired_only: bool = True,
        execution_ids: Sequence[str] | None = None,
    ) -> int:
        # Claims live only as long as this process, like everything here: nothing expires.
        if execution_ids is None and expired_only:
            return 0
        wanted = list(self._claimed) if execution_ids is None else execution_ids
        count = 0
        for execution_id in wanted:
            job = self._jobs.get(execution_id)
            if job is None or job.status is not JobStatus.PENDING:
                continue
            run = self._claimed.pop(execution_id, None)
            if run is not None:
                self._runs[execution_id] = run
                heapq.heappush(self._heap, (run.scheduled_for, execution_id))
                count += 1
        return count

    async def find_running(
        self, *, owner: str | None = None, include_queued: bool = False
    ) -> list[JobExecutionResult]:
        wanted = {JobStatus.RUNNING, JobStatus.RETRYING}
        if include_queued:
            wanted.add(JobStatus.PENDING)
        out = []
        for execution_id, job in self._jobs.items():
            if job.status in wanted and execution_id not in self._runs:
                found = await self.get_execution(execution_id)
                if found is not None:
                    out.append(found)
        return out

    async def mark_interrupted(
        self,
        execution_id: str,
        reason: str = "interrupted",
        *,
        status: JobStatus = JobStatus.FAILED,
        owner: str | None = None,
    ) -> bool:
        job = self._jobs.get(execution_id)
        if job is None or job.status.is_terminal:
            return False
        notices = await self._interrupted_outbox(execution_id, reason, status)
        self._settle(execution_id, status, reason)
        await self.add_outbox_messages(notices)
        return True

    async def get_job_definition(self, execution_id: str) -> JobDefinition | None:
        found = self._definitions.get(execution_id)
        return copy.deepcopy(found) if found is not None else None

    async def purge_history(self, older_than: datetime, *, batch_size: int = 500) -> int:
        doomed = [
            execution_id
            for execution_id, job in self._jobs.items()
            if job.status.is_terminal and job.end_time is not None and job.end_time < older_than
        ]
        for execution_id in doomed:
            for table in (self._jobs, self._created, self._steps, self._definitions):
                table.pop(execution_id, None)
        return len(doomed)

    def _settle(self, execution_id: str, status: JobStatus, reason: str) -> None:
        job = self._jobs.get(execution_id)
        if job is None:
            return
        now = utc_now()
        job.status = status
        job.error_message = reason
        job.end_time = now
        for step in self._steps.get(execution_id, {}).values():
            if step.status in (StepStatus.RUNNING, StepStatus.PENDING):
                step.error_message = reason
                step.finish(StepStatus.FAILED, now)

    def _drop_from_heap(self, execution_id: str) -> None:
        self._heap = [item for item in self._heap if item[1] != execution_id]
        heapq.heapify(self._heap)

    # -- stored job definitions (the JobStore port) -----------------------------------------
    async def create_job(self, job: JobDefinition, *, next_fire_at: datetime | None) -> StoredJob:
        if job.job_id in self._stored_jobs:
            raise JobExistsError(job.job_id)
        now = utc_now()
        stored = StoredJob(
            job=_as_stored(job, now, now), version=1, next_fire_at=_aware_utc(next_fire_at)
        )
        self._stored_jobs[job.job_id] = stored
        return stored.copy()

    async def get_job(self, job_id: str) -> StoredJob | None:
        found = self._stored_jobs.get(job_id)
        return found.copy() if found is not None else None

    async def write_jobs(
        self, writes: Sequence[JobWrite], *, on_conflict: OnConflict
    ) -> JobsWritten:
        ids = [w.job.job_id for w in writes]
        if len(set(ids)) != len(ids):
            raise ValueError("write_jobs takes distinct job_ids")
        taken = [job_id for job_id in ids if job_id in self._stored_jobs]
        if taken and on_conflict is OnConflict.FAIL:
            raise JobsExistError(taken)
        # Everything is built first and put in place without an await: all or none.
        now = utc_now()
        staged: dict[str, StoredJob] = {}
        written = JobsWritten()
        for write in writes:
            current = self._stored_jobs.get(write.job.job_id)
            next_fire_at = _aware_utc(write.next_fire_at)
            if current is None:
                stored = StoredJob(
                    job=_as_stored(write.job, now, now), version=1, next_fire_at=next_fire_at
                )
                written.created.append(stored.copy())
            elif on_conflict is OnConflict.SKIP:
                written.skipped.append(write.job.job_id)
                continue
            else:
                stored = StoredJob(
                    job=_as_stored(write.job, current.job.created_at or now, now),
                    version=current.version + 1,
                    next_fire_at=next_fire_at,
                    last_fire_at=current.last_fire_at,
                )
                written.replaced.append(stored.copy())
            staged[write.job.job_id] = stored
        self._stored_jobs.update(staged)
        return written

    async def list_jobs(self, query: JobQuery) -> JobPage:
        check_limit(query.limit)
        after = decode_job_cursor(query.cursor) if query.cursor else None
        matching = [
            stored
            for job_id, stored in sorted(self._stored_jobs.items())
            if (query.enabled is None or stored.job.enabled == query.enabled)
            and (query.timezone is None or stored.job.timezone == query.timezone)
            and (after is None or job_id > after)
        ]
        page = [s.copy() for s in matching[: query.limit]]
        more = len(matching) > query.limit
        return JobPage(page, encode_job_cursor(page[-1].job_id) if more else None)

    async def update_job(
        self, job: JobDefinition, *, expected_version: int | None, next_fire_at: datetime | None
    ) -> StoredJob:
        current = self._stored_jobs.get(job.job_id)
        if current is None:
            raise JobNotFoundError(job.job_id)
        if expected_version is not None and current.version != expected_version:
            raise VersionConflictError(job.job_id, expected_version, current.version)
        now = utc_now()
        current.job = _as_stored(job, current.job.created_at or now, now)
        current.version += 1
        current.next_fire_at = _aware_utc(next_fire_at)
        return current.copy()

    async def delete_job(self, job_id: str, *, expected_version: int | None = None) -> bool:
        current = self._stored_jobs.get(job_id)
        if current is None:
            return False
        if expected_version is not None and current.version != expected_version:
            raise VersionConflictError(job_id, expected_version, current.version)
        del self._stored_jobs[job_id]
        return True

    async def due_jobs(self, until: datetime, limit: int) -> list[StoredJob]:
        due = sorted(
            (
                (stored.next_fire_at, job_id)
                for job_id, stored in self._stored_jobs.items()
                if stored.job.enabled
                and stored.next_fire_at is not None
                and stored.next_fire_at <= until
            ),
        )
        return [self._stored_jobs[job_id].copy() for _, job_id in due[: max(limit, 0)]]

    async def advance_job(
        self,
        job_id: str,
        *,
        expected_next_fire_at: datetime,
        next_fire_at: datetime | None,
        last_fire_at: datetime,
    ) -> bool:
        current = self._stored_jobs.get(job_id)
        if current is None or current.next_fire_at != _aware_utc(expected_next_fire_at):
            return False
        current.next_fire_at = _aware_utc(next_fire_at)
        current.last_fire_at = _aware_utc(last_fire_at)
        return True

    async def next_job_fire_time(self) -> datetime | None:
        return min(
            (
                s.next_fire_at
                for s in self._stored_jobs.values()
                if s.job.enabled and s.next_fire_at is not None
            ),
            default=None,
        )


def _aware_utc(value: datetime | None) -> datetime | None:
    """As the database store: aware values only, kept in UTC."""
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()} cannot be stored; use aware UTC")
    return value.astimezone(UTC)


def _as_stored(job: JobDefinition, created_at: datetime, updated_at: datetime) -> JobDefinition:
    """``job`` as the database store gives it back: through its JSON form (tuples become
    lists, values JSON cannot express their ``str``), with the row's timestamps."""
    data = json.loads(json.dumps(job.to_dict(), default=str))
    stored = JobDefinition.from_dict(data)
    stored.created_at = created_at
    stored.updated_at = updated_at
    return stored


def _started_within(
    start: datetime | None, after: datetime | None, before: datetime | None
) -> bool:
    if after is None and before is None:
        return True
    if start is None:
        return False
    return (after is None or start >= after) and (before is None or start < before)
