"""TimezoneJobQueue: the waiting line and concurrency limit of one IANA timezone."""

from __future__ import annotations

import asyncio
import collections
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from app.domain.enums import JobStatus
from app.domain.errors import ConfigurationError, DisabledJobError, FieldError
from app.domain.models import JobDefinition
from app.domain.timeutil import get_zone, resolve_local
from app.engine.ports import TRIGGER_QUEUED
from app.engine.runner import Execution

if TYPE_CHECKING:
    from app.engine.engine import NewExecutionEngine

log = logging.getLogger("app.engine.queue")


class TimezoneJobQueue:
    """Timezone-specific job execution queue.

    Jobs of one timezone wait here in FIFO order; at most ``max_concurrent`` of them run at
    once (a hard limit). Each running job also holds one of the engine's ``max_workers``
    slots. A queue made on its own (outside an engine) creates a private engine on start.
    """

    def __init__(
        self,
        timezone: str,
        max_concurrent: int = 5,
        *,
        engine: NewExecutionEngine | None = None,
    ) -> None:
        """
        Initialize timezone queue

        Args:
            timezone: IANA timezone identifier
            max_concurrent: Maximum concurrent executions
        """
        try:
            get_zone(timezone)
        except KeyError:
            raise ConfigurationError(
                [FieldError("timezone", f"unknown IANA timezone {timezone!r}")]
            ) from None
        if max_concurrent < 1:
            raise ConfigurationError([FieldError("max_concurrent", "must be >= 1")])
        self.timezone = timezone
        self.max_concurrent = max_concurrent
        self._engine = engine
        self._owns_engine = engine is None
        self._waiting: collections.deque[Execution] = collections.deque()
        self._waiting_since: dict[str, float] = {}  # execution_id -> loop time enqueued
        self._has_waiting = asyncio.Event()
        self._slots = asyncio.Semaphore(max_concurrent)
        self._active: set[str] = set()
        self._active_immediate: set[str] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self.peak_active = 0
        self.counts: collections.Counter[str] = collections.Counter()

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Start queue processing"""
        if self._engine is None:
            from app.engine.engine import NewExecutionEngine

            self._engine = NewExecutionEngine(
                max_workers=self.max_concurrent, queue_max_concurrent=self.max_concurrent
            )
            self._engine.adopt_queue(self)
            await self._engine.start()
        self.start_dispatching()

    def start_dispatching(self) -> None:
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(
                self._dispatch_loop(), name=f"queue-dispatcher:{self.timezone}"
            )
            self._dispatcher.add_done_callback(self._dispatcher_done)

    async def stop_dispatching(self) -> None:
        """Stop starting waiting jobs; those still waiting are recorded CANCELLED."""
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
            self._dispatcher = None
        engine = self.engine
        while self._waiting:
            execution = self._waiting.popleft()
            self._waiting_since.pop(execution.execution_id, None)
            await engine.finish_unstarted(execution, "the engine stopped before it started")

    async def stop(self, wait_for_jobs: bool = True) -> None:
        """
        Stop queue processing

        Args:
            wait_for_jobs: Wait for running jobs to complete (else cancel them)
        """
        await self.stop_dispatching()
        engine = self.engine
        if self._owns_engine:
            await engine.stop(wait_for_jobs)
        else:
            await engine.settle_queue(self, wait_for_jobs)

    @property
    def engine(self) -> NewExecutionEngine:
        if self._engine is None:
            raise RuntimeError(f"queue {self.timezone} is not started")
        return self._engine

    @property
    def running(self) -> bool:
        return self._dispatcher is not None and not self._dispatcher.done()

    # -- job management ---------------------------------------------------------------------
    async def add_immediate_job(self, job: JobDefinition) -> str:
        """
        Add job for immediate execution (it waits for a free slot of this queue)

        Returns:
            Execution ID
        """
        if not job.enabled:
            raise DisabledJobError(job.job_id)
        execution = await self.engine.new_execution(job, TRIGGER_QUEUED)
        self.enqueue(execution)
        return execution.execution_id

    async def schedule_job(
        self, job: JobDefinition, scheduled_time: datetime, *, requested_by: str | None = None
    ) -> str:
        """
        Schedule job for future execution

        Args:
            job: Job to schedule
            scheduled_time: Execution time; a naive time is wall-clock time in this queue's
                timezone (a time in a DST gap is refused, an ambiguous one is its first
                occurrence); an aware time is an instant.
            requested_by: id of the API key that asked (kept with the run: it runs as it)

        Returns:
            Execution ID
        """
        instant = resolve_local(scheduled_time, self.timezone)
        return await self.engine.schedule_instant(job, instant, requested_by=requested_by)

    async def cancel_job(self, execution_id: str) -> bool:
        """Cancel job in queue (waiting, running or scheduled); True if cancelled"""
        return await self.engine.cancel_job(execution_id)

    def remove_waiting(self, execution_id: str) -> bool:
        for execution in self._waiting:
            if execution.execution_id == execution_id:
                self._waiting.remove(execution)
                self._waiting_since.pop(execution_id, None)
                return True
        return False

    def enqueue(self, execution: Execution) -> None:
        self._waiting_since[execution.execution_id] = asyncio.get_running_loop().time()
        self._waiting.append(execution)
        self._has_waiting.set()

    # -- status -------------------------------------------------------------------------------
    def get_status(self) -> dict[str, Any]:
        """Queue metrics and state"""
        return {
            "timezone": self.timezone,
            "running": self.running,
            "max_concurrent": self.max_concurrent,
            "depth": self.get_queue_depth(),
            "active": self.get_active_count(),
            "active_immediate": len(self._active_immediate),
            "peak_active": self.peak_active,
            "completed": self.counts["completed"],
            "failed": self.counts["failed"],
            "cancelled": self.counts["cancelled"],
        }

    def get_queue_depth(self) -> int:
        """Get number of jobs waiting in queue"""
        return len(self._waiting)

    def oldest_waiting_seconds(self) -> float:
        """How long the first execution in line has waited (0 when none waits)."""
        if not self._waiting:
            return 0.0
        since = self._waiting_since.get(self._waiting[0].execution_id)
        return 0.0 if since is None else asyncio.get_running_loop().time() - since

    def get_active_count(self) -> int:
        """Get number of currently executing queued jobs (at most ``max_concurrent``)"""
        return len(self._active)

    def record_outcome(self, status: JobStatus) -> None:
        if status in (JobStatus.SUCCESS, JobStatus.PARTIAL_SUCCESS):
            self.counts["completed"] += 1
        elif status is JobStatus.CANCELLED:
            self.counts["cancelled"] += 1
        else:
            self.counts["failed"] += 1

    def track_immediate(self, execution_id: str, active: bool) -> None:
        if active:
            self._active_immediate.add(execution_id)
        else:
            self._active_immediate.discard(execution_id)

    # -- internals ------------------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        while True:
            while not self._waiting:
                self._has_waiting.clear()
                await self._has_waiting.wait()
            await self._slots.acquire()
            if not self._waiting:  # cancelled while we waited for the slot
                self._slots.release()
                continue
            execution = self._waiting.popleft()
            self._waiting_since.pop(execution.execution_id, None)
            self._active.add(execution.execution_id)
            self.peak_active = max(self.peak_active, len(self._active))
            self.engine.launch(execution, on_done=self._release)

    def _release(self, execution: Execution) -> None:
        self._active.discard(execution.execution_id)
        self._slots.release()

    def _dispatcher_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.critical("queue dispatcher for %s died", self.timezone, exc_info=task.exception())
            if self._engine is not None:
                self._engine.fail(f"queue dispatcher {self.timezone} died")
