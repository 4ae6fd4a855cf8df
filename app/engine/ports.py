"""The storage port the engine needs. Adapters implement it structurally:
``app.engine.memory_store.InMemoryExecutionStore`` here, ``app.persistence`` for databases.

Write calls are short and independent (no transaction spans a step's I/O). All datetimes are
timezone-aware UTC.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from app.domain.cluster import NodeInfo, OrphanedExecution
from app.domain.enums import JobStatus
from app.domain.jobs import JobPage, JobQuery, JobsWritten, JobWrite, OnConflict, StoredJob
from app.domain.models import JobDefinition, JobExecutionResult, StepExecutionResult
from app.domain.records import (
    TRIGGER_NOW,
    TRIGGER_QUEUED,
    TRIGGER_SCHEDULE,
    TRIGGER_SCHEDULED,
    ExecutionPage,
    ExecutionQuery,
    ScheduledRun,
)

__all__ = [
    "TRIGGER_NOW",
    "TRIGGER_QUEUED",
    "TRIGGER_SCHEDULE",
    "TRIGGER_SCHEDULED",
    "ClusterStore",
    "ExecutionPage",
    "ExecutionQuery",
    "ExecutionStore",
    "JobPage",
    "JobQuery",
    "JobStore",
    "ScheduledRun",
    "StoredJob",
]


@runtime_checkable
class ExecutionStore(Protocol):
    """Durable record of executions and of scheduled work."""

    async def open(self) -> None:
        """Prepare the store (connect; migrations are run by the composition root)."""

    async def close(self) -> None:
        """Release connections."""

    # -- execution history ---------------------------------------------------------------
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
        """Create the execution row in PENDING state.

        ``durable`` (here and below): the write is in the store when the call returns.
        ``durable=False`` lets a store queue it for a later batch (group commit); it must
        still be applied in order and seen by every later call of the store."""

    async def record_job(self, result: JobExecutionResult, *, durable: bool = True) -> None:
        """Write the job row's current state (RUNNING, RETRYING or terminal)."""

    async def record_step(
        self, execution_id: str, step: StepExecutionResult, attempt: int, *, durable: bool = True
    ) -> None:
        """Write one step row (when it starts and again when it ends)."""

    async def get_execution(self, execution_id: str) -> JobExecutionResult | None:
        """The execution with the steps of its latest attempt, or None."""

    async def list_executions(self, query: ExecutionQuery) -> ExecutionPage:
        """Executions matching ``query``, newest first."""

    # -- scheduled work ------------------------------------------------------------------
    async def add_scheduled_run(
        self, run: ScheduledRun, *, settled: tuple[JobStatus, str] | None = None
    ) -> None:
        """Persist a run waiting for its time (also records it PENDING in the history).
        With ``settled`` (status, reason) it is a fire that will not run: recorded ended
        with them in the same write, so no claimer can take it in between."""

    async def add_scheduled_runs(self, runs: Sequence[ScheduledRun]) -> None:
        """Persist many one-off runs (not keyed by a fire) and their PENDING history rows in
        one write: all of them or none."""

    async def fires_with_runs(self, job_id: str, start: datetime, end: datetime) -> set[datetime]:
        """``scheduled_for`` (UTC) in [start, end) of the executions of ``job_id`` that ran
        or are still to run (not those recorded missed or cancelled before they started)."""

    async def due_scheduled_runs(self, until: datetime, limit: int) -> list[ScheduledRun]:
        """Unclaimed runs with ``scheduled_for <= until``, earliest first."""

    async def claim_scheduled_run(self, execution_id: str, owner: str) -> bool:
        """Atomically take a run for execution; False when gone or claimed by another."""

    async def mark_run_dispatched(self, execution_id: str) -> None:
        """A claimed run is handed to its queue (durable when this returns): it never fires
        again, and after a crash its execution, still PENDING, is recorded interrupted
        instead of being run a second time."""

    async def cancel_scheduled_run(
        self,
        execution_id: str,
        *,
        cancelled_by: str | None = None,
        claimed_by: str | None = None,
    ) -> bool:
        """Remove an unclaimed run, or one ``claimed_by`` holds and has not started
        (recorded CANCELLED, with ``cancelled_by`` in its metadata when given); False when
        not pending."""

    async def count_scheduled_runs(self, limit: int | None = None) -> int:
        """Number of runs still waiting; with ``limit``, counting stops at ``limit`` (a
        status check stays cheap with a million runs pending)."""

    async def next_scheduled_time(self) -> datetime | None:
        """``scheduled_for`` of the earliest unclaimed run."""

    async def claim_due_runs(
        self, until: datetime, limit: int, owner: str | None = None
    ) -> list[ScheduledRun]:
        """Claim up to ``limit`` runs due by ``until`` in one go, earliest first."""

    async def mark_missed(
        self, execution_id: str, reason: str, status: JobStatus = JobStatus.FAILED
    ) -> bool:
        """Settle a pending run that will not run (with ``reason``); False if not pending."""

    # -- recovery and maintenance ----------------------------------------------------------
    async def requeue_claimed_runs(
        self,
        *,
        owner: str | None = None,
        expired_only: bool = True,
        execution_ids: Sequence[str] | None = None,
    ) -> int:
        """Claimed runs that never started become pending again (only ``execution_ids``
        when given); returns how many."""

    async def find_running(
        self, *, owner: str | None = None, include_queued: bool = False
    ) -> list[JobExecutionResult]:
        """Executions recorded RUNNING or RETRYING (and, with ``include_queued``, PENDING
        ones that are not scheduled runs): at startup, what a dead process left behind."""

    async def mark_interrupted(
        self,
        execution_id: str,
        reason: str = "interrupted",
        *,
        status: JobStatus = JobStatus.FAILED,
        owner: str | None = None,
    ) -> bool:
        """End a non-terminal execution with ``status`` and ``reason``."""

    async def get_job_definition(self, execution_id: str) -> JobDefinition | None:
        """The definition an execution was created with, or None."""

    async def purge_history(self, older_than: datetime, *, batch_size: int = 500) -> int:
        """Delete finished executions that ended before ``older_than``; returns how many."""


@runtime_checkable
class JobStore(Protocol):
    """Stored job definitions (recurring jobs). ``version`` starts at 1 and goes up by one
    on every user change (update, enable, disable); ``advance_job`` does not change it."""

    async def create_job(self, job: JobDefinition, *, next_fire_at: datetime | None) -> StoredJob:
        """Store a new job (created_at/updated_at set now, version 1); JobExistsError."""

    async def get_job(self, job_id: str) -> StoredJob | None:
        """The stored job or None."""

    async def write_jobs(
        self, writes: Sequence[JobWrite], *, on_conflict: OnConflict
    ) -> JobsWritten:
        """Store several jobs (distinct job_ids) in one transaction: all or none. A job_id
        already stored: ``fail`` raises JobsExistError naming every such id and stores
        nothing, ``skip`` leaves that job as it is, ``replace`` replaces it as update_job
        does (created_at kept, version + 1)."""

    async def list_jobs(self, query: JobQuery) -> JobPage:
        """Jobs ordered by job_id, filtered by enabled/timezone, keyset-paginated."""

    async def update_job(
        self, job: JobDefinition, *, expected_version: int | None, next_fire_at: datetime | None
    ) -> StoredJob:
        """Replace a job's definition (keeps created_at, sets updated_at, version + 1, sets
        next_fire_at). JobNotFoundError; VersionConflictError when ``expected_version`` is
        given and differs."""

    async def delete_job(self, job_id: str, *, expected_version: int | None = None) -> bool:
        """Delete the definition (its execution history stays); False when absent;
        VersionConflictError on a stale ``expected_version``."""

    async def due_jobs(self, until: datetime, limit: int) -> list[StoredJob]:
        """Enabled jobs with ``next_fire_at <= until``, earliest first."""

    async def advance_job(
        self,
        job_id: str,
        *,
        expected_next_fire_at: datetime,
        next_fire_at: datetime | None,
        last_fire_at: datetime,
    ) -> bool:
        """Compare-and-set the job's next fire: only if it is still
        ``expected_next_fire_at`` (so one replica advances it once)."""

    async def next_job_fire_time(self) -> datetime | None:
        """Earliest ``next_fire_at`` among enabled jobs."""

    async def latest_executions(self, job_ids: Sequence[str]) -> dict[str, JobExecutionResult]:
        """The newest execution of each of ``job_ids`` (any job id, stored or not), keyed
        by job_id, with a fixed number of queries however many ids there are (the job
        listing's "last execution" of a whole page at once).

        Newest is the first one ``list_executions(ExecutionQuery(job_id=...))`` gives:
        highest ``created_at``, ties broken by highest ``execution_id``. The results carry
        no steps (``steps == []``; ``get_execution`` has them). Job ids without an
        execution are absent from the dict; repeated ids are looked up once."""


@runtime_checkable
class ClusterStore(Protocol):
    """A store several engines (nodes) share: node registry, heartbeats (the lease of all a
    node holds), recovery of dead nodes' work, and control across nodes. The database store
    implements it; the in-memory store is one process and does not."""

    owner: str

    @property
    def exclusive(self) -> bool:
        """Only this process can serve the database (SQLite): its lease cannot lapse."""

    async def register_node(self, node: NodeInfo) -> None:
        """Add (or re-add) ``node`` with a fresh heartbeat."""

    async def heartbeat(self, node_id: str) -> bool:
        """Renew the node's lease; False when it is no longer registered (declared dead)."""

    async def set_node_state(self, node_id: str, state: str) -> None:
        """Record ``running`` or ``stopping``."""

    async def deregister_node(self, node_id: str) -> None:
        """Remove the node (a clean stop)."""

    async def list_nodes(self, timeout_seconds: float) -> list[NodeInfo]:
        """Every registered node with its liveness and running executions."""

    async def remove_dead_nodes(self, timeout_seconds: float, *, keep: str) -> list[str]:
        """Deregister nodes with a heartbeat older than ``timeout_seconds``."""

    async def requeue_orphaned_claims(self, timeout_seconds: float) -> int:
        """Claimed, unstarted runs of dead claimers become pending again."""

    async def find_orphaned(
        self, timeout_seconds: float, *, also_of: str | None = None
    ) -> list[OrphanedExecution]:
        """Unfinished executions whose owner is not a live node (or is ``also_of``)."""

    async def take_over(
        self, orphan: OrphanedExecution, reason: str, *, retry: ScheduledRun | None = None
    ) -> bool:
        """Settle ``orphan`` (fenced on its owner and attempt), adding ``retry``; False when
        another node did first."""

    async def request_cancel(self, execution_id: str, by: str | None) -> str | None:
        """Ask the owner of an unfinished execution to cancel it; the owner or None."""

    async def cancel_requests(self, node_id: str) -> list[tuple[str, str | None]]:
        """(execution_id, requested_by) of the node's executions asked to cancel."""

    async def active_execution_ids(self, job_id: str) -> list[str]:
        """Executions of ``job_id`` queued, handed over or running on any node."""

    async def waiting_by_timezone(self, now: datetime) -> dict[str, int]:
        """Runs due and not started, per timezone, over the whole cluster."""

    async def acquire_serial(
        self, job_id: str, execution_id: str, owner: str, timeout_seconds: float
    ) -> bool:
        """Make ``execution_id`` (run by ``owner``) the one run of ``job_id`` allowed now:
        True when it is (also when it already was), False while another execution holds
        it. A holder whose node has no heartbeat younger than ``timeout_seconds``, or whose
        execution ended, is replaced."""

    async def release_serial(self, job_id: str, execution_id: str, owner: str) -> None:
        """Give back ``job_id``'s lock if ``execution_id`` of ``owner`` holds it; wake the
        other nodes."""

    async def notify(self, payload: str) -> None:
        """Wake the other nodes (``runs``, ``jobs``)."""

    async def listen(self, on_message: Callable[[str], None], stop: asyncio.Event) -> None:
        """Deliver the other nodes' notifications until ``stop`` is set."""
