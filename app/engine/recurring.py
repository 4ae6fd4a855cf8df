"""RecurringScheduler: turns stored jobs' schedules into scheduled runs, exactly once each.

Each due fire of a job becomes a ``ScheduledRun`` with trigger ``schedule``; the store's unique
key on (job_id, scheduled_for) makes a fire happen once however often it is evaluated (after
a crash, or on several replicas), and ``advance_job`` moves the job's next fire with a
compare-and-set. The next fire is always computed from the schedule (never "+24 h").

Policies (``schedule_config.misfire_policy`` / ``overlap_policy``):

* misfire ``run_once`` (default): of the fires that came due at once (the service was down or
  busy), those within the misfire grace run once, as the latest of them; the others are
  recorded as coalesced. ``run_all``: each fire within the grace runs (at most 10). ``skip``:
  a fire runs only when it is on time (late by at most the schedule grace). Fires beyond the
  misfire grace are always recorded as missed.
* overlap ``skip`` (default): no new run while an earlier one of the job is queued or running
  (on any node of the cluster);
  ``allow``: runs side by side; ``queue``: the new run waits for the earlier ones to finish;
  ``replace``: the earlier ones are cancelled first.

Every fire that does not run is recorded in the history with its reason.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from app.domain.enums import JobStatus
from app.domain.job_schedule import fired_by
from app.domain.jobs import RUN_ALL_CAP, StoredJob, job_policies
from app.domain.records import TRIGGER_SCHEDULE, DuplicateScheduledRunError, ScheduledRun
from app.domain.timeutil import utc_now
from app.engine.ports import JobStore
from app.engine.scheduler import DueLoop
from app.sqlpool import is_transient

if TYPE_CHECKING:
    from app.engine.engine import NewExecutionEngine

log = logging.getLogger("app.engine.recurring")

#: Fires enumerated per job per evaluation (a job missed for longer is summarised).
MAX_FIRES_PER_EVALUATION = 1000


class RecurringScheduler(DueLoop):
    def __init__(
        self,
        engine: NewExecutionEngine,
        jobs: JobStore,
        *,
        misfire_grace: timedelta,
        on_time_tolerance: timedelta,
        poll_interval_seconds: float = 1.0,
        batch_size: int = 100,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__(
            poll_interval_seconds=poll_interval_seconds, batch_size=batch_size, clock=clock
        )
        self._engine = engine
        self._jobs = jobs
        self._misfire_grace = misfire_grace
        self._on_time = on_time_tolerance

    async def next_due_time(self) -> datetime | None:
        return await self._jobs.next_job_fire_time()

    async def run_due(self) -> int:
        return await self.fire_due()

    async def fire_due(self) -> int:
        now = self._clock()
        due = await self._jobs.due_jobs(now, self._batch)
        for stored in due:
            try:
                await self._fire_job(stored, now)
            except Exception as exc:  # one broken job must not stop every other job's schedule
                if is_transient(exc):
                    raise  # the database, not the job: the loop retries the whole pass
                log.exception("evaluating the schedule of job %s failed", stored.job_id)
                await self._jobs.advance_job(
                    stored.job_id,
                    expected_next_fire_at=stored.next_fire_at or now,
                    next_fire_at=None,
                    last_fire_at=stored.next_fire_at or now,
                )
        return len(due)

    async def _fire_job(self, stored: StoredJob, now: datetime) -> None:
        job = stored.job
        first = stored.next_fire_at
        assert first is not None and self._engine.jobs is not None
        schedule = await self._engine.jobs.schedule_of(job)
        head = schedule.fire_at(first)
        fires = [first]
        # Which schedule fired each instant, and the fires a business calendar excludes.
        sources = {first: head.source if head else None}
        excluded = {first: head.excluded_by} if head and head.excluded_by else {}
        following = schedule.next_fire(first)
        while following is not None and following.at <= now:
            if len(fires) >= MAX_FIRES_PER_EVALUATION:
                break
            fires.append(following.at)
            sources[following.at] = following.source
            if following.excluded_by:
                excluded[following.at] = following.excluded_by
            following = schedule.next_fire(following.at)
        misfire, overlap = job_policies(job)
        # Executions of this job active before this evaluation (not the runs it adds).
        active = await self._engine.cluster_active_execution_ids(job.job_id)
        for at, calendar in excluded.items():
            await self._record(stored, at, f"excluded by calendar {calendar}", JobStatus.CANCELLED)
        to_run, to_record = self._decide([f for f in fires if f not in excluded], now, misfire)
        for at, reason, status in to_record:
            source = sources.get(at)
            await self._record(
                stored, at, f"{reason} (schedule {source})" if source else reason, status
            )
        for at in to_run:
            await self._run(fired_by(stored, sources.get(at)), at, overlap, active)
        moved = await self._jobs.advance_job(
            job.job_id,
            expected_next_fire_at=first,
            next_fire_at=following.at if following is not None else None,
            last_fire_at=fires[-1],
        )
        if not moved:
            log.info("job %s was changed or fired elsewhere while it was evaluated", job.job_id)

    def _decide(
        self, fires: list[datetime], now: datetime, misfire: str
    ) -> tuple[list[datetime], list[tuple[datetime, str, JobStatus]]]:
        grace = self._misfire_grace.total_seconds()
        record: list[tuple[datetime, str, JobStatus]] = []
        within: list[datetime] = []
        for at in fires:
            late = (now - at).total_seconds()
            if late > grace:
                record.append(
                    (
                        at,
                        f"missed: {late:.0f}s late, beyond the misfire grace of {grace:.0f}s",
                        JobStatus.FAILED,
                    )
                )
            else:
                within.append(at)
        if not within:
            return [], record
        if misfire == "run_all":
            runs, rest = within[:RUN_ALL_CAP], within[RUN_ALL_CAP:]
            record += [
                (
                    at,
                    f"skipped: misfire_policy run_all catches up at most {RUN_ALL_CAP} fires",
                    JobStatus.CANCELLED,
                )
                for at in rest
            ]
            return runs, record
        last = within[-1]
        if misfire == "skip" and now - last > self._on_time:
            record += [
                (
                    at,
                    f"skipped: misfire_policy skip does not run late fires "
                    f"({(now - at).total_seconds():.0f}s late)",
                    JobStatus.CANCELLED,
                )
                for at in within
            ]
            return [], record
        record += [
            (
                at,
                f"skipped: coalesced into the run for {last.isoformat()} "
                f"(misfire_policy {misfire})",
                JobStatus.CANCELLED,
            )
            for at in within[:-1]
        ]
        return [last], record

    async def _record(
        self, stored: StoredJob, at: datetime, reason: str, status: JobStatus
    ) -> None:
        execution_id = uuid.uuid4().hex
        try:
            await self._engine.store.add_scheduled_run(
                ScheduledRun(
                    execution_id=execution_id,
                    job=stored.job,
                    scheduled_for=at,
                    trigger=TRIGGER_SCHEDULE,
                    requested_by="schedule",
                ),
                settled=(status, reason),
            )
        except DuplicateScheduledRunError:
            return  # this fire was already handled (before a restart, or by a replica)
        self._engine.observers.fire_not_run(stored.job, execution_id, at, reason, status)

    async def _run(self, stored: StoredJob, at: datetime, overlap: str, active: list[str]) -> None:
        job = stored.job
        if active and overlap == "skip":
            await self._record(
                stored,
                at,
                f"skipped: execution {active[0]} of this job is "
                "still queued or running (overlap_policy skip)",
                JobStatus.CANCELLED,
            )
            return
        try:
            await self._engine.store.add_scheduled_run(
                ScheduledRun(
                    execution_id=uuid.uuid4().hex,
                    job=job,
                    scheduled_for=at,
                    trigger=TRIGGER_SCHEDULE,
                    requested_by="schedule",
                )
            )
        except DuplicateScheduledRunError:
            # Fired already (by a replica, or a pass that raced this one): its run may be
            # among ``active`` by now, so nothing is cancelled for it here.
            return
        if active and overlap == "replace":
            # Only the evaluation that added this fire's run replaces the earlier runs.
            for execution_id in active:
                await self._engine.cancel_job(execution_id, cancelled_by="schedule")
        self._engine.wake_scheduler()
