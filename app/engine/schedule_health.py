"""Schedule health: is a stored job's schedule doing its work?

* ``disabled``: the job is disabled.
* ``overdue``: its ``next_fire_at`` is in the past beyond the misfire grace while the engine
  runs: the schedule silently stopped firing (its loop is stuck, or it cannot reach the
  database). An overdue schedule raises a ``missed`` notification once per stuck instant.
* ``failing``: its last ``failing_after`` runs (``V2_FAILING_AFTER``) all failed (failed,
  partial_success, timeout).
* ``ok``: anything else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.domain.jobs import StoredJob
from app.domain.models import JobExecutionResult
from app.domain.notifications import OutboxMessage
from app.domain.records import ExecutionQuery
from app.engine.notifications import FAILING, Notifier
from app.engine.ports import ExecutionStore, JobStore

HEALTH_OK = "ok"
HEALTH_FAILING = "failing"
HEALTH_OVERDUE = "overdue"
HEALTH_DISABLED = "disabled"
HEALTH_VALUES = (HEALTH_OK, HEALTH_FAILING, HEALTH_OVERDUE, HEALTH_DISABLED)


@dataclass(frozen=True)
class OverdueJob:
    job_id: str
    next_fire_at: datetime
    late_seconds: float


class ScheduleHealth:
    def __init__(
        self,
        store: ExecutionStore,
        jobs: JobStore,
        *,
        failing_after: int,
        misfire_grace: timedelta,
        clock: Callable[[], datetime],
        engine_running: Callable[[], bool],
    ) -> None:
        self._store = store
        self._jobs = jobs
        self.failing_after = failing_after
        self._grace = misfire_grace
        self._clock = clock
        self._running = engine_running

    def is_overdue(self, stored: StoredJob) -> bool:
        return (
            self._running()
            and stored.job.enabled
            and stored.next_fire_at is not None
            and stored.next_fire_at < self._clock() - self._grace
        )

    async def health(self, stored: StoredJob) -> str:
        if not stored.job.enabled:
            return HEALTH_DISABLED
        if self.is_overdue(stored):
            return HEALTH_OVERDUE
        if await self.is_failing(stored.job_id):
            return HEALTH_FAILING
        return HEALTH_OK

    async def health_of(
        self, jobs: Sequence[StoredJob], latest: Mapping[str, JobExecutionResult] | None = None
    ) -> dict[str, str]:
        """Health of each job. Only jobs whose last run failed need their history read
        (``latest``: the last execution of each, looked up when not given)."""
        if latest is None:
            latest = await self._jobs.latest_executions([s.job_id for s in jobs])
        out = {}
        for stored in jobs:
            if not stored.job.enabled:
                out[stored.job_id] = HEALTH_DISABLED
            elif self.is_overdue(stored):
                out[stored.job_id] = HEALTH_OVERDUE
            elif (last := latest.get(stored.job_id)) is not None and last.status in FAILING:
                failing = await self.is_failing(stored.job_id)
                out[stored.job_id] = HEALTH_FAILING if failing else HEALTH_OK
            else:
                out[stored.job_id] = HEALTH_OK
        return out

    async def is_failing(self, job_id: str) -> bool:
        page = await self._store.list_executions(
            ExecutionQuery(job_id=job_id, limit=self.failing_after + 20)
        )
        ended = [e for e in page.items if e.status.is_terminal][: self.failing_after]
        return len(ended) == self.failing_after and all(e.status in FAILING for e in ended)

    async def overdue(self, limit: int = 100) -> list[OverdueJob]:
        """Enabled jobs whose schedule should have fired beyond the misfire grace ago."""
        if not self._running():
            return []
        now = self._clock()
        due = await self._jobs.due_jobs(now - self._grace, limit)
        return [
            OverdueJob(s.job_id, s.next_fire_at, (now - s.next_fire_at).total_seconds())
            for s in due
            if s.next_fire_at is not None
        ]

    async def missed_messages(self, notifier: Notifier, limit: int = 100) -> list[OutboxMessage]:
        """``missed`` messages of overdue schedules, one per job and stuck instant (the
        outbox ignores a repeat)."""
        if not self._running():
            return []
        now = self._clock()
        messages = []
        for stored in await self._jobs.due_jobs(now - self._grace, limit):
            if stored.next_fire_at is None or not stored.job.notifications:
                continue
            late = (now - stored.next_fire_at).total_seconds()
            reason = (
                f"overdue: the fire due at {stored.next_fire_at.isoformat()} has not happened "
                f"({late:.0f}s late, beyond the misfire grace of "
                f"{self._grace.total_seconds():.0f}s): the schedule stopped firing"
            )
            messages.extend(notifier.overdue(stored.job, stored.next_fire_at, reason))
        return messages
