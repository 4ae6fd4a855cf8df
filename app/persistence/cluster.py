"""The cluster port of ``SqlExecutionStore``: nodes, their heartbeats, and settling the work
of dead ones.

A node's heartbeat (``scheduler_nodes.heartbeat_at``, on the database's clock) is the lease
of everything it owns: one statement renews all of it. Work whose owner has no heartbeat
younger than the node timeout is orphaned; settling it is a compare-and-set on the row's
(owner, attempt) that also raises the attempt, so of two nodes settling the same work one
wins, and the old owner's late writes (fenced on the same pair) no longer land.

On PostgreSQL, ``pg_notify`` in the writing transaction wakes the other nodes at commit
(:meth:`SqlClusterMixin.listen`); polling stays the fallback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, text, union_all, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.domain.cluster import NodeInfo, OrphanedExecution
from app.domain.enums import JobStatus
from app.domain.notifications import OutboxMessage
from app.domain.records import ScheduledRun
from app.domain.timeutil import utc_now
from app.persistence.convert import job_from_row
from app.persistence.database import hold_sqlite_file
from app.persistence.models import (
    NODE_RUNNING,
    RUN_CLAIMED,
    RUN_PENDING,
    JobExecutionV2,
    ScheduledRunV2,
    SchedulerNodeV2,
    SerialLockV2,
)
from app.persistence.repositories import (
    IN_FLIGHT_STATUSES,
    ExecutionRepository,
    ScheduledRunRepository,
    _Repository,
)
from app.sqlpool import is_transient

log = logging.getLogger("app.persistence.cluster")

#: The LISTEN/NOTIFY channel; payloads are "runs", "jobs" and "cancel".
CHANNEL = "jobscheduler_v2"
UNFINISHED = tuple(s.value for s in JobStatus if not s.is_terminal)


class NodeRepository(_Repository):
    """Rows of ``scheduler_nodes``."""

    async def register(self, node: NodeInfo, *, only_process: bool) -> None:
        """Add ``node``; with ``only_process`` (SQLite, whose file this process holds) the
        rows of other processes go too: they cannot be running."""
        nodes = SchedulerNodeV2
        gone = nodes.node_id == node.node_id
        if only_process:
            gone = or_(gone, nodes.host != node.host[:255], nodes.pid != node.pid)
        await self.session.execute(delete(nodes).where(gone))
        now = self.db_now()
        await self.session.execute(
            insert(SchedulerNodeV2).values(
                node_id=node.node_id,
                host=node.host[:255],
                pid=node.pid,
                version=node.version[:50],
                state=NODE_RUNNING,
                started_at=now,
                heartbeat_at=now,
            )
        )

    async def beat(self, node_id: str) -> bool:
        stmt = (
            update(SchedulerNodeV2)
            .where(SchedulerNodeV2.node_id == node_id)
            .values(heartbeat_at=self.db_now())
            .returning(SchedulerNodeV2.node_id)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.execute(stmt)).first() is not None

    async def set_state(self, node_id: str, state: str) -> None:
        await self.session.execute(
            update(SchedulerNodeV2)
            .where(SchedulerNodeV2.node_id == node_id)
            .values(state=state)
            .execution_options(synchronize_session=False)
        )

    async def remove(self, node_id: str) -> None:
        await self.session.execute(
            delete(SchedulerNodeV2).where(SchedulerNodeV2.node_id == node_id)
        )

    async def remove_dead(self, timeout_seconds: float, keep: str) -> list[str]:
        node = SchedulerNodeV2
        stmt = (
            delete(node)
            .where(node.heartbeat_at < self.db_now_plus(-timeout_seconds), node.node_id != keep)
            .returning(node.node_id)
            .execution_options(synchronize_session=False)
        )
        return [r[0] for r in (await self.session.execute(stmt)).all()]

    async def all(self, timeout_seconds: float) -> list[tuple[SchedulerNodeV2, bool]]:
        node = SchedulerNodeV2
        alive = node.heartbeat_at >= self.db_now_plus(-timeout_seconds)
        stmt = select(node, alive.label("alive")).order_by(node.started_at, node.node_id)
        return [(row, bool(ok)) for row, ok in (await self.session.execute(stmt)).all()]

    async def running_by_owner(self, owners: Sequence[str]) -> dict[str, list[str]]:
        job = JobExecutionV2
        out: dict[str, list[str]] = {o: [] for o in owners}
        if not owners:
            return out
        stmt = (
            select(job.owner, job.execution_id)
            .where(job.owner.in_(list(owners)), job.status.in_(IN_FLIGHT_STATUSES))
            .order_by(job.created_at)
        )
        for owner, execution_id in (await self.session.execute(stmt)).all():
            out.setdefault(owner or "", []).append(execution_id)
        return out

    async def orphaned(self, timeout_seconds: float, also: str | None) -> list[JobExecutionV2]:
        """Unfinished rows not held by a live node: RUNNING/RETRYING, and PENDING ones not
        waiting as a scheduled run (they were in a dead node's memory queue or handed to
        it)."""
        job, run = JobExecutionV2, ScheduledRunV2
        waiting = (
            select(run.execution_id)
            .where(
                run.execution_id == job.execution_id,
                run.status.in_((RUN_PENDING, RUN_CLAIMED)),
            )
            .exists()
        )
        stmt = (
            select(job)
            .where(
                or_(
                    job.status.in_(IN_FLIGHT_STATUSES),
                    and_(job.status == JobStatus.PENDING.value, ~waiting),
                ),
                or_(
                    job.owner.is_(None),
                    job.owner == also,
                    ~self.live_node(job.owner, timeout_seconds),
                ),
            )
            .order_by(job.created_at, job.execution_id)
        )
        return list(await self.session.scalars(stmt))

    async def notify(self, payload: str) -> None:
        """Wake the other nodes when this transaction commits (PostgreSQL only)."""
        if self.on_postgresql:
            await self.session.execute(
                select(func.pg_notify(CHANNEL, payload))  # delivered at commit
            )


class SqlClusterMixin:
    """Nodes, heartbeats and recovery of dead nodes' work (mixed into SqlExecutionStore)."""

    url: str

    def _read(self) -> AbstractAsyncContextManager[AsyncSession]:
        raise NotImplementedError  # provided by SqlExecutionStore

    def _write(self) -> AbstractAsyncContextManager[AsyncSession]:
        raise NotImplementedError  # provided by SqlExecutionStore

    @property
    def engine(self) -> AsyncEngine:
        raise NotImplementedError  # provided by SqlExecutionStore

    @property
    def exclusive(self) -> bool:
        """This process alone serves the database: SQLite, whose file it holds locked
        (``hold_sqlite_file``). No other node can take its work over, so its lease holds
        however late a heartbeat commits (a long write may hold the file for seconds)."""
        return make_url(self.url).get_backend_name() == "sqlite"

    # -- nodes -------------------------------------------------------------------------------
    async def register_node(self, node: NodeInfo) -> None:
        """Add (or re-add) ``node`` with a fresh heartbeat. On SQLite, first make this the
        only process serving the file (``SingleNodeError`` otherwise); nodes of processes
        that served it before are dead then, and their work is recovered at once."""
        hold_sqlite_file(self.url)
        async with self._write() as session:
            repo = NodeRepository(session)
            await repo.register(node, only_process=not repo.on_postgresql)

    async def heartbeat(self, node_id: str) -> bool:
        """Renew the lease of everything ``node_id`` holds (one statement); False when the
        node is no longer registered (another node declared it dead and took its work)."""
        async with self._write() as session:
            return await NodeRepository(session).beat(node_id)

    async def set_node_state(self, node_id: str, state: str) -> None:
        async with self._write() as session:
            await NodeRepository(session).set_state(node_id, state)

    async def deregister_node(self, node_id: str) -> None:
        async with self._write() as session:
            await NodeRepository(session).remove(node_id)

    async def list_nodes(self, timeout_seconds: float) -> list[NodeInfo]:
        """Every registered node, alive or not (on the database's clock), with the
        executions it is running."""
        async with self._read() as session:
            repo = NodeRepository(session)
            rows = await repo.all(timeout_seconds)
            running = await repo.running_by_owner([r.node_id for r, _ in rows])
        return [
            NodeInfo(
                node_id=row.node_id,
                host=row.host,
                pid=row.pid,
                version=row.version,
                state=row.state,
                started_at=row.started_at,
                heartbeat_at=row.heartbeat_at,
                alive=alive,
                running=running.get(row.node_id, []),
            )
            for row, alive in rows
        ]

    # -- recovery ----------------------------------------------------------------------------
    async def remove_dead_nodes(self, timeout_seconds: float, *, keep: str) -> list[str]:
        """Deregister nodes whose heartbeat is older than ``timeout_seconds`` (never
        ``keep``); a removed node's next heartbeat tells it that it lost its work."""
        async with self._write() as session:
            return await NodeRepository(session).remove_dead(timeout_seconds, keep)

    async def requeue_orphaned_claims(self, timeout_seconds: float) -> int:
        """Claimed runs that never started and whose claimer is not a live node become
        pending again."""
        async with self._write() as session:
            count = await ScheduledRunRepository(session).requeue_claimed(
                owner=None, expired_only=False, orphaned_after=timeout_seconds
            )
            if count:
                await NodeRepository(session).notify("runs")
            return count

    async def find_orphaned(
        self, timeout_seconds: float, *, also_of: str | None = None
    ) -> list[OrphanedExecution]:
        """Unfinished executions whose owner is not a live node (or is ``also_of``: a node
        starting, which holds nothing yet), oldest first."""
        async with self._read() as session:
            repo = ExecutionRepository(session)
            rows = await NodeRepository(session).orphaned(timeout_seconds, also_of)
            steps = await repo.latest_steps([r.execution_id for r in rows])
        return [
            OrphanedExecution(job_from_row(r, steps[r.execution_id]), r.owner, r.attempt)
            for r in rows
        ]

    async def take_over(
        self,
        orphan: OrphanedExecution,
        reason: str,
        *,
        retry: ScheduledRun | None = None,
    ) -> bool:
        """Settle an orphaned execution FAILED with ``reason`` (its unfinished steps too),
        only if it is still held as ``orphan`` says, and in the same transaction add
        ``retry`` (a new run of the job). False when another node settled it first."""
        execution_id = orphan.result.execution_id
        notices = await self._interrupted_outbox(execution_id, reason, JobStatus.FAILED)
        async with self._write() as session:
            row = await ExecutionRepository(session).settle(
                execution_id,
                JobStatus.FAILED,
                reason,
                from_statuses=UNFINISHED,
                fence=(orphan.owner, orphan.attempt),
            )
            if row is None:
                return False
            runs = ScheduledRunRepository(session)
            await runs.mark_started(execution_id)
            await self._insert_outbox(session, notices)  # failure notices, same transaction
            if retry is not None:
                await self._insert_run(session, retry)
                await NodeRepository(session).notify("runs")
        return True

    async def _insert_run(self, session: AsyncSession, run: ScheduledRun) -> None:
        raise NotImplementedError  # provided by SqlExecutionStore

    async def _interrupted_outbox(
        self, execution_id: str, reason: str, status: JobStatus
    ) -> list[OutboxMessage]:
        raise NotImplementedError  # provided by SqlOutboxMixin

    async def _insert_outbox(
        self, session: AsyncSession, messages: Sequence[OutboxMessage]
    ) -> None:
        raise NotImplementedError  # provided by SqlOutboxMixin

    # -- cluster-wide control ----------------------------------------------------------------
    async def request_cancel(self, execution_id: str, by: str | None) -> str | None:
        """Ask the owner of an unfinished execution to cancel it; the owner's node id
        (None when it is not unfinished or has no owner)."""
        job = JobExecutionV2
        async with self._write() as session:
            stmt = (
                update(job)
                .where(job.execution_id == execution_id, job.status.in_(UNFINISHED))
                .values(cancel_requested_at=utc_now(), cancel_requested_by=(by or "")[:100])
                .returning(job.owner)
                .execution_options(synchronize_session=False)
            )
            found = (await session.execute(stmt)).first()
            if found is None:
                return None
            await NodeRepository(session).notify("cancel")
            owner: str | None = found[0]
            return owner

    async def cancel_requests(self, node_id: str) -> list[tuple[str, str | None]]:
        """(execution_id, requested_by) of ``node_id``'s unfinished executions whose cancel
        was asked through some replica."""
        job = JobExecutionV2
        async with self._read() as session:
            stmt = select(job.execution_id, job.cancel_requested_by).where(
                job.owner == node_id,
                job.status.in_(UNFINISHED),
                job.cancel_requested_at.is_not(None),
            )
            return [(eid, by or None) for eid, by in (await session.execute(stmt)).all()]

    async def active_execution_ids(self, job_id: str) -> list[str]:
        """Executions of ``job_id`` queued, handed over or running on any node (not those
        waiting for a future time), oldest first."""
        job, run = JobExecutionV2, ScheduledRunV2
        waiting = (
            select(run.execution_id)
            .where(run.execution_id == job.execution_id, run.status == RUN_PENDING)
            .exists()
        )
        async with self._read() as session:
            stmt = (
                select(job.execution_id)
                .where(
                    job.job_id == job_id,
                    or_(
                        job.status.in_(IN_FLIGHT_STATUSES),
                        and_(job.status == JobStatus.PENDING.value, ~waiting),
                    ),
                )
                .order_by(job.created_at, job.execution_id)
            )
            return list(await session.scalars(stmt))

    async def acquire_serial(
        self, job_id: str, execution_id: str, owner: str, timeout_seconds: float
    ) -> bool:
        """One lock row per job; a stale one (dead node, or its execution ended) is removed
        first. Of two nodes inserting at once the primary key lets one win."""
        lock, job = SerialLockV2, JobExecutionV2
        try:
            async with self._write() as session:
                repo = NodeRepository(session)
                ended = (
                    select(job.execution_id)
                    .where(job.execution_id == lock.execution_id, job.status.not_in(UNFINISHED))
                    .exists()
                )
                await session.execute(
                    delete(lock)
                    .where(
                        lock.job_id == job_id,
                        lock.execution_id != execution_id,
                        or_(~repo.live_node(lock.owner, timeout_seconds), ended),
                    )
                    .execution_options(synchronize_session=False)
                )
                held = await session.scalar(select(lock.execution_id).where(lock.job_id == job_id))
                if held is not None:
                    return bool(held == execution_id)
                await session.execute(
                    insert(lock).values(
                        job_id=job_id,
                        execution_id=execution_id,
                        owner=owner,
                        acquired_at=repo.db_now(),
                    )
                )
                return True
        except IntegrityError:
            return False  # another node took it between our look and our insert

    async def release_serial(self, job_id: str, execution_id: str, owner: str) -> None:
        lock = SerialLockV2
        async with self._write() as session:
            gone = await session.execute(
                delete(lock)
                .where(
                    lock.job_id == job_id, lock.execution_id == execution_id, lock.owner == owner
                )
                .execution_options(synchronize_session=False)
            )
            if gone.rowcount:  # type: ignore[attr-defined]
                await NodeRepository(session).notify("serial")

    async def waiting_by_timezone(self, now: datetime) -> dict[str, int]:
        """Cluster-wide queue depths: runs due and not yet started, per timezone: PENDING
        executions that were queued at once (no ``scheduled_for``) or whose time has come.
        Two ranges of the (status, scheduled_for) index, so a million runs waiting for a
        later time cost nothing here."""
        job = JobExecutionV2
        pending = job.status == JobStatus.PENDING.value
        queued = select(job.timezone).where(pending, job.scheduled_for.is_(None))
        due = select(job.timezone).where(pending, job.scheduled_for <= now)
        waiting = union_all(queued, due).subquery()
        async with self._read() as session:
            stmt = select(waiting.c.timezone, func.count()).group_by(waiting.c.timezone)
            return {tz: int(n) for tz, n in (await session.execute(stmt)).all()}

    async def notify(self, payload: str) -> None:
        """Wake the other nodes (``runs``: new runs to claim; ``jobs``: stored jobs
        changed)."""
        async with self._write() as session:
            await NodeRepository(session).notify(payload)

    async def listen(self, on_message: Callable[[str], None], stop: asyncio.Event) -> None:
        """Until ``stop`` is set, call ``on_message(payload)`` for every notification of the
        other nodes (PostgreSQL; returns at once elsewhere). A lost connection is made again
        with back-off; messages sent meanwhile are lost, which the poll makes up for."""
        if self.engine.dialect.name != "postgresql":
            return
        delay = 0.2
        while not stop.is_set():
            try:
                async with self.engine.connect() as conn:
                    raw: Any = await conn.get_raw_connection()
                    driver = raw.driver_connection

                    def deliver(*args: Any) -> None:
                        on_message(str(args[-1]))

                    await driver.add_listener(CHANNEL, deliver)
                    delay = 0.2
                    on_message("reconnected")
                    try:
                        while not stop.is_set():
                            try:
                                async with asyncio.timeout(2.0):
                                    await stop.wait()
                            except TimeoutError:
                                await conn.execute(text("SELECT 1"))  # notice a dead link
                    finally:
                        await driver.remove_listener(CHANNEL, deliver)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning(
                    "listening for other nodes failed (%s); retrying in %.1fs",
                    type(exc).__name__,
                    delay,
                )
                try:
                    async with asyncio.timeout(delay):
                        await stop.wait()
                except TimeoutError:
                    pass
                delay = min(delay * 2, 5.0)
