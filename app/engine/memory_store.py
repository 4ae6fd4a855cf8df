"""InMemoryExecutionStore: the ExecutionStore port kept in process memory (tests, embedding).

It forgets everything on restart; the service uses the database store from
``app.persistence``.
"""

from __future__ import annotations

import copy
import heapq
from datetime import datetime

from app.domain.enums import JobStatus
from app.domain.models import JobDefinition, JobExecutionResult, StepExecutionResult
from app.domain.timeutil import utc_now
from app.engine.ports import ExecutionPage, ExecutionQuery, ScheduledRun


class InMemoryExecutionStore:
    def __init__(self) -> None:
        self._jobs: dict[str, JobExecutionResult] = {}
        self._created: dict[str, datetime] = {}
        self._steps: dict[str, dict[tuple[int, str], StepExecutionResult]] = {}
        self._runs: dict[str, ScheduledRun] = {}
        self._heap: list[tuple[datetime, str]] = []

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
    ) -> None:
        metadata: dict[str, object] = {"trigger": trigger}
        if scheduled_for is not None:
            metadata["scheduled_for"] = scheduled_for.isoformat()
        if requested_by is not None:
            metadata["requested_by"] = requested_by
        self._jobs[execution_id] = JobExecutionResult(
            execution_id=execution_id,
            job_id=job.job_id,
            job_name=job.job_name,
            status=JobStatus.PENDING,
            timezone=job.timezone,
            metadata=metadata,
        )
        self._created[execution_id] = utc_now()

    async def record_job(self, result: JobExecutionResult) -> None:
        stored = copy.deepcopy(result)
        stored.steps = []
        self._jobs[result.execution_id] = stored
        self._created.setdefault(result.execution_id, utc_now())

    async def record_step(self, execution_id: str, step: StepExecutionResult, attempt: int) -> None:
        self._steps.setdefault(execution_id, {})[(attempt, step.step_id)] = copy.deepcopy(step)

    async def get_execution(self, execution_id: str) -> JobExecutionResult | None:
        job = self._jobs.get(execution_id)
        if job is None:
            return None
        result = copy.deepcopy(job)
        steps = self._steps.get(execution_id, {})
        latest = max((attempt for attempt, _ in steps), default=None)
        result.steps = [copy.deepcopy(s) for (a, _), s in steps.items() if a == latest]
        return result

    async def list_executions(self, query: ExecutionQuery) -> ExecutionPage:
        rows = sorted(
            self._jobs.values(),
            key=lambda j: (self._created[j.execution_id], j.execution_id),
            reverse=True,
        )
        out = [
            r
            for r in rows
            if (query.job_id is None or r.job_id == query.job_id)
            and (query.status is None or r.status is query.status)
            and (query.timezone is None or r.timezone == query.timezone)
        ]
        if query.cursor is not None:
            ids = [r.execution_id for r in out]
            out = out[ids.index(query.cursor) + 1 :] if query.cursor in ids else []
        page = out[: query.limit]
        more = len(out) > query.limit
        items = [r for r in [await self.get_execution(p.execution_id) for p in page] if r]
        return ExecutionPage(items, page[-1].execution_id if more and page else None)

    async def add_scheduled_run(self, run: ScheduledRun) -> None:
        await self.record_pending(
            run.execution_id,
            run.job,
            trigger=run.trigger,
            scheduled_for=run.scheduled_for,
            requested_by=run.requested_by,
        )
        self._runs[run.execution_id] = copy.deepcopy(run)
        heapq.heappush(self._heap, (run.scheduled_for, run.execution_id))

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
        if self._runs.pop(execution_id, None) is None:
            return False
        self._drop_from_heap(execution_id)
        return True

    async def cancel_scheduled_run(self, execution_id: str) -> bool:
        if self._runs.pop(execution_id, None) is None:
            return False
        self._drop_from_heap(execution_id)
        job = self._jobs.get(execution_id)
        if job is not None:
            job.status = JobStatus.CANCELLED
            job.end_time = utc_now()
            job.error_message = "cancelled before it started"
        return True

    async def count_scheduled_runs(self) -> int:
        return len(self._runs)

    async def next_scheduled_time(self) -> datetime | None:
        while self._heap and self._heap[0][1] not in self._runs:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def _drop_from_heap(self, execution_id: str) -> None:
        self._heap = [item for item in self._heap if item[1] != execution_id]
        heapq.heapify(self._heap)
