"""NewExecutionEngine: per-timezone queues, worker limit, scheduling, cancellation."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from app.domain.cluster import NodeInfo
from app.domain.enums import JobStatus, StepStatus
from app.domain.errors import (
    DisabledJobError,
    EngineNotRunningError,
    ExecutionEngineError,
    SchedulingError,
)
from app.domain.job_schedule import SCHEDULE_NAME_KEY
from app.domain.jobs import job_policies
from app.domain.models import JobDefinition, JobExecutionResult, StepExecutionResult
from app.domain.timeutil import utc_now
from app.engine import env_defaults as env
from app.engine.admission import SERIAL_RELEASED, SerialRuns
from app.engine.env_defaults import EnvFloat, EnvInt
from app.engine.execution_log import log_cancel
from app.engine.jobs import JobService
from app.engine.memory_store import InMemoryExecutionStore
from app.engine.node import ClusterNode
from app.engine.observers import EngineObservers
from app.engine.ports import (
    TRIGGER_NOW,
    TRIGGER_SCHEDULE,
    ClusterStore,
    ExecutionStore,
    JobStore,
    ScheduledRun,
)
from app.engine.queue import TimezoneJobQueue
from app.engine.recovery import Recovery
from app.engine.recurring import RecurringScheduler
from app.engine.runner import Execution, FinishedExecution, JobRunner, RunOptions
from app.engine.scheduler import Scheduler
from app.steps.context import ExecutionContext
from app.steps.resources import StepResources

log = logging.getLogger("app.engine")

#: The status check counts pending runs up to here (beyond: "at least this many"), so it
#: costs the same with a million runs pending.
PENDING_COUNT_LIMIT = 10_000

#: How long a cancel through a node that does not own the execution waits for its owner.
CANCEL_WAIT_SECONDS = 5.0


class NewExecutionEngine:
    """Modern async job execution engine with timezone support"""

    def __init__(
        self,
        max_workers: int = EnvInt(10),
        default_timeout: int = EnvInt(3600),
        *,
        queue_max_concurrent: int = EnvInt(5),
        store: ExecutionStore | None = None,
        resources: StepResources | None = None,
        enable_step_caching: bool | None = None,
        schedule_grace_seconds: float = EnvFloat(5.0),
        poll_interval_seconds: float = EnvFloat(1.0),
        scheduler_lookahead_seconds: float = 0.25,
        recent_limit: int = 1000,
        recent_max_chars: int = 8 * 1024 * 1024,
        misfire_grace_seconds: float = EnvFloat(300.0),
        history_retention_days: float | None = None,
        maintenance_interval_seconds: float = 3600.0,
        recover_on_start: bool = True,
        owner: str | None = None,
        heartbeat_seconds: float = EnvFloat(5.0),
        node_timeout_seconds: float = EnvFloat(30.0),
        version: str = "2.0.0",
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        """
        Initialize execution engine

        Args:
            max_workers: Maximum concurrent job executions (hard limit over all queues)
            default_timeout: Default job timeout in seconds
            queue_max_concurrent: Maximum concurrent executions of each timezone queue
            store: where executions and scheduled runs are recorded (default: in memory)
            resources: connections, executables and output limits for steps
            enable_step_caching: a retry reuses steps that succeeded in an earlier attempt
            schedule_grace_seconds: how far in the past a scheduled time may be
            scheduler_lookahead_seconds: scheduled runs are claimed this far ahead of their
                time and started by an event-loop timer, so claiming never makes them late
            misfire_grace_seconds: at start, runs that came due while the service was down
                run if at most this late; older ones are recorded as missed
            history_retention_days: purge finished executions older than this (None: keep)
            recover_on_start: at start, settle what dead nodes left behind (runs
                interrupted while running, claimed runs that never started, misfires); a
                live node's work is never touched. Periodically after that, too.
            owner: this node's id (default: the store's, so claims, history rows and
                log lines carry one identity)
            heartbeat_seconds: how often the node renews its lease (database store)
            node_timeout_seconds: a node whose heartbeat is older is dead

        What the caller does not pass comes from the V2_* environment (``env_defaults``).
        """
        max_workers, default_timeout = (
            env.number("max_workers", max_workers),
            env.number("default_timeout", default_timeout),
        )
        queue_max_concurrent = env.number("queue_max_concurrent", queue_max_concurrent)
        enable_step_caching = env.flag("enable_step_caching", enable_step_caching, True)
        schedule_grace_seconds = env.number("schedule_grace_seconds", schedule_grace_seconds)
        poll_interval_seconds = env.number("poll_interval_seconds", poll_interval_seconds)
        misfire_grace_seconds = env.number("misfire_grace_seconds", misfire_grace_seconds)
        heartbeat_seconds = env.number("heartbeat_seconds", heartbeat_seconds)
        node_timeout_seconds = env.number("node_timeout_seconds", node_timeout_seconds)
        resources = resources or env.resources(pool_size=max_workers)
        if max_workers < 1 or queue_max_concurrent < 1 or default_timeout < 1:
            raise ValueError("max_workers, queue_max_concurrent and default_timeout must be >= 1")
        self.max_workers = max_workers
        self.default_timeout = default_timeout
        self.queue_max_concurrent = queue_max_concurrent
        self.store: ExecutionStore = store or InMemoryExecutionStore()
        self.resources = resources or StepResources()
        self.enable_step_caching = enable_step_caching
        self.schedule_grace = timedelta(seconds=schedule_grace_seconds)
        self.owner = owner or getattr(self.store, "owner", None) or f"engine-{uuid.uuid4().hex}"
        self._clock = clock
        self.misfire_grace = timedelta(seconds=misfire_grace_seconds)
        self.history_retention_days = history_retention_days
        self._maintenance_interval = maintenance_interval_seconds
        self._recover_on_start = recover_on_start
        self._maintenance_task: asyncio.Task[None] | None = None
        self._maintenance_stop = asyncio.Event()
        self.recovery_report: dict[str, int] = {}
        self.jobs: JobService | None = None
        self._recurring: RecurringScheduler | None = None
        self._recurring_task: asyncio.Task[None] | None = None
        self._dispatching: set[str] = set()
        self.observers = EngineObservers()  # metrics, notifications
        if isinstance(self.store, JobStore):
            self.jobs = JobService(self, self.store, clock=clock)
            self._recurring = RecurringScheduler(
                self,
                self.store,
                misfire_grace=self.misfire_grace,
                on_time_tolerance=self.schedule_grace,
                poll_interval_seconds=poll_interval_seconds,
                clock=clock,
            )
        self._version = version
        self._node: ClusterNode | None = None
        self._serial = SerialRuns(self.store, self.owner, node_timeout_seconds=node_timeout_seconds)
        self._recovery = Recovery(
            self.store,
            node_id=self.owner,
            node_timeout_seconds=node_timeout_seconds,
            misfire_grace=self.misfire_grace,
            clock=clock,
            on_missed=self._missed_at_recovery,
        )
        if isinstance(self.store, ClusterStore):
            self._node = ClusterNode(
                self.store,
                self.owner,
                version=version,
                heartbeat_seconds=heartbeat_seconds,
                node_timeout_seconds=node_timeout_seconds,
                on_lost=self._abandon,
                on_cancel=self._cancel_asked_elsewhere,
                on_message=self._notified,
                recover=self._recover_periodically,
                has_live_work=lambda: bool(self._live),
            )
        self._node_tasks: list[asyncio.Task[None]] = []
        self._runner = JobRunner(self.store, enable_step_caching=enable_step_caching, clock=clock)
        self._scheduler = Scheduler(
            self.store,
            self._dispatch_scheduled,
            owner=self.owner,
            poll_interval_seconds=poll_interval_seconds,
            clock=clock,
            lookahead_seconds=scheduler_lookahead_seconds,
        )
        self._worker_slots = asyncio.Semaphore(max_workers)
        self._queues: dict[str, TimezoneJobQueue] = {}
        self._live: dict[str, Execution] = {}
        self._running: dict[str, Execution] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Executions that ended here lately, for the synchronous get_execution_status: kept
        # as they are (converted when asked), at most recent_limit of them and about
        # recent_max_chars of output and error text (the store has them all anyway).
        self._recent: collections.OrderedDict[str, FinishedExecution] = collections.OrderedDict()
        self._recent_limit = recent_limit
        self._recent_max_chars = recent_max_chars
        self._recent_chars = 0
        self._scheduler_task: asyncio.Task[None] | None = None
        self._state = "stopped"
        self._failure: str | None = None
        self._started_at: datetime | None = None
        self.peak_workers = 0

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the execution engine and all timezone queues"""
        if self._state == "running":
            return
        await self.store.open()
        try:
            if self._node is not None:
                await self._node.register()  # refused on a SQLite file another process has
            if self._recover_on_start:
                self.recovery_report = await self._recovery.run_once(starting=True)
        except BaseException:
            await self.store.close()
            raise
        if self._node is not None:
            self._node_tasks = self._node.start()
            for task in self._node_tasks:
                task.add_done_callback(self._background_done)
        self._state = "running"
        self._failure = None
        self._started_at = self._clock()
        for queue in self._queues.values():
            await queue.start()
        self._scheduler.reset()
        if self._recurring is not None:
            self._recurring.reset()
        self._maintenance_stop.clear()
        self._scheduler_task = asyncio.create_task(
            self._scheduler.run_forever(), name="engine-scheduler"
        )
        self._scheduler_task.add_done_callback(self._background_done)
        if self._recurring is not None:
            self._recurring_task = asyncio.create_task(
                self._recurring.run_forever(), name="engine-recurring"
            )
            self._recurring_task.add_done_callback(self._background_done)
        if self.history_retention_days is not None:
            self._maintenance_task = asyncio.create_task(
                self._maintenance_forever(), name="engine-maintenance"
            )
            self._maintenance_task.add_done_callback(self._background_done)
        log.info(
            "engine %s started (max_workers=%d, queue_max_concurrent=%d)",
            self.owner,
            self.max_workers,
            self.queue_max_concurrent,
        )

    async def stop(self, wait_for_jobs: bool = True, *, timeout: float | None = None) -> None:
        """
        Stop the execution engine

        Args:
            wait_for_jobs: Wait for running jobs to complete; when False they are cancelled
                and recorded CANCELLED.
            timeout: with ``wait_for_jobs``, seconds to wait before cancelling the rest.
        """
        if self._state == "stopped":
            return
        self._state = "stopping"
        if self._node is not None:
            await self._node.mark_stopping()
        held = self._scheduler.drop_held()
        await self._stop_background()
        await self._scheduler.wait_dispatching()
        if held:  # claimed ahead of their time: pending again, for the next start or replica
            await self.store.requeue_claimed_runs(
                owner=self.owner, expired_only=False, execution_ids=held
            )
        for queue in list(self._queues.values()):
            await queue.stop_dispatching()
        if wait_for_jobs and self._tasks:
            _, still = await asyncio.wait(set(self._tasks), timeout=timeout)
            if still:
                log.warning(
                    "%d executions still running after %.1fs: cancelling them",
                    len(still),
                    timeout or 0.0,
                )
        await self._cancel_all("cancelled: the engine was stopped")
        await self.resources.connections.dispose()
        if self._node is not None:
            await self._node.stop()
        await self.store.close()
        self._state = "stopped"
        log.info("engine %s stopped", self.owner)

    async def health_check(self) -> dict[str, Any]:
        """Get engine health status"""
        try:
            counted = await self.store.count_scheduled_runs(PENDING_COUNT_LIMIT + 1)
            pending, capped = min(counted, PENDING_COUNT_LIMIT), counted > PENDING_COUNT_LIMIT
            store_ok = True
        except Exception:
            log.exception("store health check failed")
            pending, capped, store_ok = -1, False, False
        now = self._clock()
        lease_ok = self._node is None or self._node.lease_valid
        problem = self._failure
        if problem is None and self._state != "running":
            problem = f"the engine is {self._state}"
        if problem is None and not store_ok:
            problem = "database unreachable: the execution store is unreachable"
        if problem is None and not lease_ok:
            problem = "database unreachable: this node cannot renew its lease"
        return {
            "status": self._state if self._failure is None else "failed",
            "healthy": self._state == "running" and problem is None,
            "failure": problem,
            "store_reachable": store_ok,
            "node_id": self.owner,
            "node": self._node.status() if self._node is not None else None,
            "started_at": self._started_at.isoformat() if self._started_at else None,
            "uptime_seconds": (now - self._started_at).total_seconds()
            if self._started_at and self._state == "running"
            else 0.0,
            "max_workers": self.max_workers,
            "active_workers": len(self._running),
            "peak_workers": self.peak_workers,
            "queued": sum(q.get_queue_depth() for q in self._queues.values()),
            "scheduled_pending": pending,
            "scheduled_pending_capped": capped,
            "default_timeout": self.default_timeout,
            "queue_max_concurrent": self.queue_max_concurrent,
            "step_caching": self.enable_step_caching,
            "timezones": sorted(self._queues),
        }

    @property
    def is_running(self) -> bool:
        return self._state == "running" and self._failure is None

    @property
    def busy_workers(self) -> int:
        return len(self._running)

    def timezone_queues(self) -> list[TimezoneJobQueue]:
        return list(self._queues.values())

    def now(self) -> datetime:
        """The engine's clock."""
        return self._clock()

    def live_job(self, execution_id: str) -> JobDefinition | None:
        """The definition of an execution queued or running here, else None."""
        execution = self._live.get(execution_id)
        return execution.job if execution is not None else None

    def running_executions(self) -> list[tuple[JobDefinition, JobExecutionResult]]:
        return [(e.job, e.result) for e in self._running.values()]

    def fail(self, reason: str) -> None:
        """A background loop died: refuse new work and report unhealthy."""
        log.critical("engine failure: %s", reason)
        self._failure = reason

    # -- job execution --------------------------------------------------------------------------
    async def execute_job_now(
        self, job: JobDefinition, *, requested_by: str | None = None
    ) -> JobExecutionResult:
        """
        Execute job immediately, bypassing queue

        It does not wait in its timezone queue's line (nor take one of its slots), but it
        does take one of the engine's ``max_workers`` slots.

        Returns:
            Complete execution result

        Raises:
            ExecutionEngineError: If execution fails to start (ConfigurationError for an
                invalid job, DisabledJobError for ``enabled: false``, EngineNotRunningError
                when stopped)
        """
        if not job.enabled:
            raise DisabledJobError(job.job_id)
        # The caller waits for the result, whose durable write covers the PENDING row.
        execution = await self.submit_now(job, requested_by=requested_by, durable=False)
        return await asyncio.shield(execution.done)

    async def submit_now(
        self,
        job: JobDefinition,
        *,
        requested_by: str | None = None,
        durable: bool = True,
        options: RunOptions | None = None,
    ) -> Execution:
        """Start ``job`` now (as ``execute_job_now``) without waiting for it to end. Its
        PENDING row is in the store when this returns (``durable``): the caller may hand
        its id out. ``options``: a manual run's start step, logical date, serial run."""
        self._require_running()
        job.validate()
        execution = await self.new_execution(
            job, TRIGGER_NOW, requested_by=requested_by, durable=durable
        )
        if options is not None:
            options.apply(execution)
        queue = self._queue_for(job.timezone)
        queue.track_immediate(execution.execution_id, True)

        def release(done: Execution) -> None:
            queue.track_immediate(done.execution_id, False)

        self.launch(execution, on_done=release)
        return execution

    async def schedule_job(
        self, job: JobDefinition, scheduled_time: datetime, *, requested_by: str | None = None
    ) -> str:
        """
        Schedule job for future execution

        Args:
            job: Job definition to schedule
            scheduled_time: When to execute. Aware: an instant. Naive: wall-clock time in the
                job's timezone (a time in a DST gap is refused; an ambiguous time means its
                first occurrence).
            requested_by: id of the API key that asked; the run keeps it (audit, and the
                connections it may use)

        Returns:
            Execution ID for tracking

        Raises:
            SchedulingError: If scheduling fails (past time, DST gap, disabled job)
            ConfigurationError: If the job is invalid
        """
        self._require_running()
        job.validate()
        return await self._queue_for(job.timezone).schedule_job(
            job, scheduled_time, requested_by=requested_by
        )

    def check_schedulable(self, job: JobDefinition, instant: datetime) -> None:
        """``SchedulingError`` (naming the field) when ``job`` may not be scheduled at
        ``instant``: disabled, or the instant is in the past."""
        if not job.enabled:
            raise DisabledJobError(job.job_id, field="job.enabled")
        now = self._clock()
        if instant < now - self.schedule_grace:
            raise SchedulingError(
                f"scheduled_time {instant.isoformat()} is in the past (now {now.isoformat()})",
                field="scheduled_time",
            )

    async def schedule_instants(
        self, items: Sequence[tuple[JobDefinition, datetime]], *, requested_by: str | None = None
    ) -> list[str]:
        """Schedule many one-off runs (job, instant) in one write: all or none. Each is
        checked as ``schedule_instant`` checks it first; the execution ids, in order."""
        self._require_running()
        for job, instant in items:
            job.validate()
            self.check_schedulable(job, instant)
        runs = [
            ScheduledRun(
                execution_id=uuid.uuid4().hex,
                job=job,
                scheduled_for=instant,
                requested_by=requested_by,
            )
            for job, instant in items
        ]
        await self.store.add_scheduled_runs(runs)
        self._scheduler.notify()
        return [run.execution_id for run in runs]

    async def schedule_instant(
        self, job: JobDefinition, instant: datetime, *, requested_by: str | None = None
    ) -> str:
        self._require_running()
        job.validate()
        self.check_schedulable(job, instant)
        execution_id = uuid.uuid4().hex
        await self.store.add_scheduled_run(
            ScheduledRun(
                execution_id=execution_id, job=job, scheduled_for=instant, requested_by=requested_by
            )
        )
        self._scheduler.notify()
        return execution_id

    async def cancel_job(self, execution_id: str, *, cancelled_by: str | None = None) -> bool:
        """
        Cancel a scheduled or running job

        A scheduled run is removed; a running one is stopped for real (query cancelled,
        process group killed) and recorded CANCELLED before this returns.

        Args:
            cancelled_by: who asked (an API key id); recorded as ``cancelled_by`` in the
                execution's metadata

        Returns:
            True if cancelled, False if not found/already completed
        """
        execution = self._live.get(execution_id)
        if execution is not None:
            if execution.result.status.is_terminal:
                return False
            if cancelled_by is not None:
                execution.result.metadata["cancelled_by"] = cancelled_by
            execution.context.request_cancel()
            job_id = execution.job.job_id
            if execution.task is None:
                queue = self._queues.get(execution.job.timezone)
                if queue is not None and queue.remove_waiting(execution_id):
                    log_cancel(job_id, execution_id, cancelled_by, "queued")
                    await self.finish_unstarted(execution, "cancelled before it started")
                    return True
                if execution.execution_id in self._dispatching:
                    # Being handed to its queue: the dispatcher sees the request and ends it.
                    log_cancel(job_id, execution_id, cancelled_by, "starting")
                    await asyncio.shield(execution.done)
                    return True
                return False
            log_cancel(job_id, execution_id, cancelled_by, "running")
            execution.task.cancel()
            await asyncio.shield(execution.done)
            return True
        held = self._scheduler.withdraw(execution_id)  # claimed ahead of its time, not fired
        if await self.store.cancel_scheduled_run(
            execution_id, cancelled_by=cancelled_by, claimed_by=self.owner if held else None
        ):
            log_cancel(await self._job_id_of(execution_id), execution_id, cancelled_by, "scheduled")
            return True
        return await self._cancel_elsewhere(execution_id, cancelled_by)

    async def _cancel_elsewhere(self, execution_id: str, cancelled_by: str | None) -> bool:
        """Cancel an execution another node runs: ask its owner through the store and wait
        (up to ``CANCEL_WAIT_SECONDS``) for it to end. True once it ended cancelled."""
        if not isinstance(self.store, ClusterStore):
            return False
        owner = await self.store.request_cancel(execution_id, cancelled_by)
        if owner is None or owner == self.owner:
            return False  # finished, or ours and already ending (it is not live here)
        log_cancel(
            await self._job_id_of(execution_id), execution_id, cancelled_by, f"on node {owner}"
        )
        deadline = asyncio.get_running_loop().time() + CANCEL_WAIT_SECONDS
        while asyncio.get_running_loop().time() < deadline:
            stored = await self.store.get_execution(execution_id)
            if stored is None or stored.status.is_terminal:
                return stored is not None and stored.status is JobStatus.CANCELLED
            await asyncio.sleep(0.05)
        log.warning(
            "execution %s: node %s did not end it within %.0fs of the cancel request",
            execution_id,
            owner,
            CANCEL_WAIT_SECONDS,
        )
        return True  # asked: the owner carries it out (or recovery does, if it is dead)

    async def _job_id_of(self, execution_id: str) -> str | None:
        stored = await self.store.get_execution(execution_id)
        return stored.job_id if stored is not None else None

    async def wait_for(self, execution_id: str) -> JobExecutionResult | None:
        """Wait until a live execution ends; the stored result for others."""
        execution = self._live.get(execution_id)
        if execution is not None:
            return await asyncio.shield(execution.done)
        return await self.store.get_execution(execution_id)

    # -- status and monitoring ------------------------------------------------------------------
    def get_queue_status(self) -> dict[str, dict[str, Any]]:
        """Status of all timezone queues: timezone -> queue status"""
        return {tz: q.get_status() for tz, q in sorted(self._queues.items())}

    def get_execution_status(self, execution_id: str) -> dict[str, Any] | None:
        """Status of a live or recently finished execution, or None if not known here.

        (``get_execution`` also looks in the store.)
        """
        execution = self._live.get(execution_id)
        if execution is not None:
            return execution.status_dict()
        recent = self._recent.get(execution_id)
        return recent.status_dict() if recent is not None else None

    async def get_execution(self, execution_id: str) -> dict[str, Any] | None:
        """Status of any execution: live, recent, or recorded in the store."""
        status = self.get_execution_status(execution_id)
        if status is not None:
            return status
        stored = await self.store.get_execution(execution_id)
        return stored.to_dict() if stored is not None else None

    def get_active_executions(self) -> list[dict[str, Any]]:
        """Get list of currently running executions"""
        return [e.status_dict() for e in self._running.values()]

    def active_execution_ids(self, job_id: str) -> list[str]:
        """Executions of ``job_id`` queued or running in this engine, oldest first."""
        return [
            e.execution_id
            for e in self._live.values()
            if e.job.job_id == job_id and not e.result.status.is_terminal
        ]

    async def cluster_active_execution_ids(self, job_id: str) -> list[str]:
        """Executions of ``job_id`` queued, handed over or running on any node (this one's
        first), for overlap policies that hold across replicas."""
        local = self.active_execution_ids(job_id)
        if not isinstance(self.store, ClusterStore):
            return local
        elsewhere = await self.store.active_execution_ids(job_id)
        return local + [eid for eid in elsewhere if eid not in local]

    async def cluster_status(self) -> dict[str, Any]:
        """This node, every node of the cluster, and the cluster-wide queue depths."""
        nodes: list[dict[str, Any]] = []
        waiting: dict[str, int] = {}
        if self._node is not None and isinstance(self.store, ClusterStore):
            timeout = self._node.node_timeout_seconds
            nodes = [n.to_dict() for n in await self.store.list_nodes(timeout)]
            waiting = await self.store.waiting_by_timezone(self._clock())
        else:  # one process: the cluster is this node
            waiting = {tz: q.get_queue_depth() for tz, q in self._queues.items()}
            me = NodeInfo(
                node_id=self.owner,
                host=socket.gethostname(),
                pid=os.getpid(),
                version=self._version,
                state=self._state,
                started_at=self._started_at,
                heartbeat_at=self._clock(),
                running=list(self._running),
            )
            nodes = [me.to_dict()]
        return {
            "node_id": self.owner,
            "nodes": nodes,
            "cluster_waiting_by_timezone": dict(sorted(waiting.items())),
            "cluster_waiting": sum(waiting.values()),
        }

    def wake_scheduler(self) -> None:
        self._scheduler.notify()

    def wake_recurring(self) -> None:
        if self._recurring is not None:
            self._recurring.notify()

    # -- used by queues -------------------------------------------------------------------------
    def adopt_queue(self, queue: TimezoneJobQueue) -> None:
        self._queues[queue.timezone] = queue

    async def new_execution(
        self,
        job: JobDefinition,
        trigger: str,
        *,
        execution_id: str | None = None,
        scheduled_for: datetime | None = None,
        requested_by: str | None = None,
        durable: bool = True,
        metadata: dict[str, Any] | None = None,
    ) -> Execution:
        fresh = execution_id is None
        execution_id = execution_id or uuid.uuid4().hex
        result = JobExecutionResult(
            execution_id=execution_id,
            job_id=job.job_id,
            job_name=job.job_name,
            status=JobStatus.PENDING,
            timezone=job.timezone,
            metadata={**(metadata or {}), "trigger": trigger},
        )
        if scheduled_for is not None:
            result.metadata["scheduled_for"] = scheduled_for.isoformat()
        if requested_by is not None:
            result.metadata["requested_by"] = requested_by
        if trigger == TRIGGER_SCHEDULE and SCHEDULE_NAME_KEY in job.metadata:
            result.metadata[SCHEDULE_NAME_KEY] = job.metadata[SCHEDULE_NAME_KEY]
        execution = Execution(
            execution_id=execution_id,
            job=job,
            trigger=trigger,
            context=ExecutionContext(
                job, execution_id, resources=self.resources, requested_by=requested_by
            ),
            result=result,
            done=asyncio.get_running_loop().create_future(),
            scheduled_for=scheduled_for,
            requested_by=requested_by,
        )
        if fresh:
            # Work must be on record before it is acknowledged (``durable``).
            await self.store.record_pending(
                execution_id,
                job,
                trigger=trigger,
                scheduled_for=scheduled_for,
                requested_by=requested_by,
                durable=durable,
            )
        self._live[execution_id] = execution
        return execution

    def launch(
        self, execution: Execution, on_done: Callable[[Execution], None] | None = None
    ) -> None:
        task = asyncio.create_task(
            self._run_execution(execution, on_done), name=f"execution:{execution.execution_id}"
        )
        execution.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def finish_unstarted(self, execution: Execution, reason: str) -> None:
        result = execution.result
        result.status = JobStatus.CANCELLED
        result.error_message = reason
        result.end_time = self._clock()
        await self.store.record_job(result)
        self._complete(execution)

    async def settle_queue(self, queue: TimezoneJobQueue, wait_for_jobs: bool) -> None:
        tasks = [
            e.task
            for e in self._live.values()
            if e.job.timezone == queue.timezone and e.task is not None
        ]
        if not wait_for_jobs:
            for execution in list(self._live.values()):
                if execution.job.timezone == queue.timezone and execution.task is not None:
                    execution.context.request_cancel()
                    execution.task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- internals ------------------------------------------------------------------------------
    def _require_running(self) -> None:
        if self._failure is not None:
            raise EngineNotRunningError(f"the engine has failed: {self._failure}")
        if self._state != "running":
            raise EngineNotRunningError(f"the engine is {self._state}; it accepts no new work")
        if self._node is not None and not self._node.lease_valid:
            raise EngineNotRunningError(
                "database unreachable: this node cannot renew its lease, so it starts no "
                "new work until the database is back"
            )

    def _queue_for(self, timezone: str) -> TimezoneJobQueue:
        queue = self._queues.get(timezone)
        if queue is None:
            queue = TimezoneJobQueue(timezone, self.queue_max_concurrent, engine=self)
            self._queues[timezone] = queue
            if self._state == "running":
                queue.start_dispatching()
        return queue

    async def _dispatch_scheduled(self, run: ScheduledRun) -> None:
        execution = await self.new_execution(
            run.job,
            run.trigger,
            execution_id=run.execution_id,
            scheduled_for=run.scheduled_for,
            requested_by=run.requested_by,
            metadata=run.metadata,
        )
        retry_of = run.metadata.get("retry_of")
        if isinstance(retry_of, str):
            execution.resume = await self._finished_steps(retry_of)
        if run.trigger == TRIGGER_SCHEDULE or isinstance(retry_of, str):
            # overlap_policy queue, and run_all catch-ups (and the retry of one a dead node
            # left): one run of the job at a time, cluster-wide.
            misfire, overlap = job_policies(run.job)
            execution.serial = overlap == "queue" or misfire == "run_all"
        # On record before it can start: after a crash from here on, the execution is
        # recorded interrupted instead of being run a second time (at most once). Group
        # committed with every other run firing now, and before any slot is taken.
        self._dispatching.add(run.execution_id)
        try:
            if not await self._hold_lease():
                self._dispatching.discard(run.execution_id)
                self._live.pop(run.execution_id, None)
                if not execution.done.done():
                    execution.done.set_result(execution.result)
                log.warning("run %s not started: this node lost its claim", run.execution_id)
                return
            await self.store.mark_run_dispatched(run.execution_id)
            if not execution.context.is_cancelled():
                await self._until(run.scheduled_for)  # handed over a little early: wait
        finally:
            self._dispatching.discard(run.execution_id)
        if execution.context.is_cancelled():
            await self.finish_unstarted(execution, "cancelled before it started")
            return
        self._queue_for(run.job.timezone).enqueue(execution)

    async def _finished_steps(self, execution_id: str) -> dict[str, StepExecutionResult]:
        """Steps that succeeded in ``execution_id`` (an execution interrupted on a dead node,
        which this one retries): they are not run a second time."""
        if not self.enable_step_caching:
            return {}
        previous = await self.store.get_execution(execution_id)
        if previous is None:
            return {}
        return {s.step_id: s for s in previous.steps if s.status is StepStatus.SUCCESS}

    async def _hold_lease(self) -> bool:
        """Before starting claimed work: wait while the lease cannot be renewed (database
        unreachable); False if the node was declared dead meanwhile (the claim is gone)."""
        node = self._node
        if node is None:
            return True
        takeovers = node.takeovers
        while not node.lease_valid and node.takeovers == takeovers:
            if self._state != "running":
                return False
            await asyncio.sleep(0.1)
        return node.takeovers == takeovers

    async def _until(self, instant: datetime) -> None:
        """Sleep until the engine's clock reaches ``instant`` (timers may fire a little
        early, and a test's clock moves on its own terms)."""
        while (remaining := (instant - self._clock()).total_seconds()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(min(remaining, 0.05))

    async def _run_execution(
        self, execution: Execution, on_done: Callable[[Execution], None] | None
    ) -> JobExecutionResult:
        job_id = execution.job.job_id
        holds_serial = False
        queue_released = False

        def release_queue() -> None:
            nonlocal queue_released
            if not queue_released:
                queue_released = True
                if on_done is not None:
                    on_done(execution)

        try:
            try:
                if execution.serial:
                    await self._serial.enter(job_id, execution.execution_id)
                    holds_serial = True
                await self._worker_slots.acquire()
            except asyncio.CancelledError:
                if holds_serial:
                    self._serial.leave_local(job_id)
                    await asyncio.shield(self._serial.leave(job_id, execution.execution_id))
                if not execution.context.is_cancelled():
                    raise
                _uncancel()
                await self.finish_unstarted(execution, "cancelled before it started")
                return execution.result

            def release_slots() -> None:
                self._running.pop(execution.execution_id, None)
                self._worker_slots.release()
                if holds_serial:
                    self._serial.leave_local(job_id)
                release_queue()

            execution.release = release_slots
            try:
                self._running[execution.execution_id] = execution
                self.peak_workers = max(self.peak_workers, len(self._running))
                return await self._runner.run(execution)
            except Exception as exc:  # the store failed under the runner: end it FAILED
                await self._fail_unrecorded(execution, exc)
                return execution.result
            except asyncio.CancelledError:
                if not execution.context.is_cancelled():
                    raise
                _uncancel()
                if not execution.result.status.is_terminal:
                    await self.finish_unstarted(execution, "cancelled on request")
                return execution.result
            finally:
                execution.release_slots()
                if holds_serial:
                    await asyncio.shield(self._serial.leave(job_id, execution.execution_id))
        finally:
            release_queue()
            self._complete(execution)

    def _complete(self, execution: Execution) -> None:
        if self._live.pop(execution.execution_id, None) is None:
            return
        queue = self._queues.get(execution.job.timezone)
        if queue is not None:
            queue.record_outcome(execution.result.status)
        self._remember(execution)
        self.observers.execution_finished(
            execution.result, execution.job, execution.trigger, execution.scheduled_for
        )
        if not execution.done.done():
            execution.done.set_result(execution.result)

    async def _fail_unrecorded(self, execution: Execution, exc: Exception) -> None:
        log.exception("execution %s could not be run or recorded", execution.execution_id)
        result = execution.result
        result.status = JobStatus.FAILED
        result.error_message = f"internal error: {type(exc).__name__}: {exc}"
        result.end_time = self._clock()
        try:
            await self.store.record_job(result)
        except Exception:
            log.exception("execution %s: recording its failure failed too", execution.execution_id)

    def _remember(self, execution: Execution) -> None:
        self._recent[execution.execution_id] = execution.finished()
        self._recent_chars += _text_size(execution.result)
        while self._recent and (
            len(self._recent) > self._recent_limit or self._recent_chars > self._recent_max_chars
        ):
            _, dropped = self._recent.popitem(last=False)
            self._recent_chars -= _text_size(dropped.result)

    async def _cancel_all(self, reason: str) -> None:
        for execution in list(self._live.values()):
            execution.context.request_cancel()
            if execution.task is not None:
                execution.task.cancel()
            else:
                queue = self._queues.get(execution.job.timezone)
                if queue is not None:
                    queue.remove_waiting(execution.execution_id)
                await self.finish_unstarted(execution, reason)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.critical("%s died", task.get_name(), exc_info=exc)
            self.fail(f"{task.get_name()} died: {type(exc).__name__}: {exc}")

    # -- the cluster ----------------------------------------------------------------------
    def _missed_at_recovery(self, run: ScheduledRun, reason: str) -> None:
        self.observers.fire_not_run(
            run.job, run.execution_id, run.scheduled_for, reason, JobStatus.FAILED
        )

    async def _recover_periodically(self) -> None:
        if self._state == "running":
            report = await self._recovery.run_once()
            if report["requeued"] or report["retried"]:
                self._scheduler.notify()

    def _notified(self, payload: str) -> None:
        """Another node changed something: look again now instead of at the next poll."""
        if payload in ("runs", "reconnected"):
            self._scheduler.notify()
        if payload in (SERIAL_RELEASED, "reconnected"):
            self._serial.wake()
        if payload in ("jobs", "reconnected") and self._recurring is not None:
            self._recurring.notify()

    async def _cancel_asked_elsewhere(self, execution_id: str, by: str | None) -> None:
        if execution_id in self._live:
            log.info("execution %s: cancel asked through another node (by %s)", execution_id, by)
            await self.cancel_job(execution_id, cancelled_by=by)

    async def _abandon(self) -> None:
        """This node was declared dead and its work taken over: stop running it (its late
        writes are fenced off anyway). Held runs were requeued by the node that took over."""
        held = self._scheduler.drop_held()
        live = list(self._live)
        log.error(
            "node %s abandons %d executions and %d claimed runs taken over by another node",
            self.owner,
            len(live),
            len(held),
        )
        await self._cancel_all("abandoned: this node lost its lease and its work was taken over")

    async def _maintenance_forever(self) -> None:
        assert self.history_retention_days is not None
        while not self._maintenance_stop.is_set():
            cutoff = self._clock() - timedelta(days=self.history_retention_days)
            purged = await self.store.purge_history(cutoff)
            if purged:
                log.info("purged %d executions that ended before %s", purged, cutoff)
            try:
                async with asyncio.timeout(self._maintenance_interval):
                    await self._maintenance_stop.wait()
            except TimeoutError:
                pass

    async def _stop_background(self, grace_seconds: float = 10.0) -> None:
        """Ask the background loops to finish their current pass, so that no store call is
        cut off in the middle (a cut-off SQLite call would outlive its event loop); cancel
        whatever has not finished after the grace."""
        self._scheduler.stop()
        if self._recurring is not None:
            self._recurring.stop()
        self._maintenance_stop.set()
        tasks = [
            t
            for t in (self._scheduler_task, self._recurring_task, self._maintenance_task)
            if t is not None
        ]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace_seconds)
            for task in late:
                log.warning(
                    "%s did not stop within %.0fs: cancelling it", task.get_name(), grace_seconds
                )
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._scheduler_task = self._recurring_task = self._maintenance_task = None


def _text_size(result: JobExecutionResult) -> int:
    """Characters of output and error text a result holds (what makes one large)."""
    return len(result.error_message or "") + sum(
        len(step.output or "") + len(step.error_message or "") for step in result.steps
    )


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


__all__ = ["ExecutionEngineError", "NewExecutionEngine"]
