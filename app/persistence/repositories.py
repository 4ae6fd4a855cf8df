"""Repositories: every query of the execution store. They never commit; the store opens one
short transaction per call and hands its session to them."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Interval,
    String,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.enums import JobStatus, StepStatus
from app.domain.timeutil import utc_now
from app.persistence.models import (
    RUN_CLAIMED,
    RUN_DONE,
    RUN_PENDING,
    JobDefinitionV2,
    JobExecutionV2,
    ScheduledRunV2,
    SchedulerNodeV2,
    StepExecutionV2,
)
from app.persistence.outbox import outbox_insert

# Namespace of step_execution_id = uuid5(namespace, "execution_id/attempt/step_id").
_STEP_NAMESPACE = uuid.UUID("1f0e4a36-5b0c-4f7e-9a59-7d1b2f0c9e11")
_STEP_NAMESPACE_BYTES = _STEP_NAMESPACE.bytes

TERMINAL_STATUSES = tuple(s.value for s in JobStatus if s.is_terminal)
IN_FLIGHT_STATUSES = (JobStatus.RUNNING.value, JobStatus.RETRYING.value)
_TO_RUN = (JobStatus.PENDING.value, *IN_FLIGHT_STATUSES)


def step_execution_id(execution_id: str, attempt: int, step_id: str, run: int = 0) -> str:
    """``str(uuid.uuid5(namespace, key))``, without building a ``UUID`` (a fourth of the
    time; every step row write needs one)."""
    key = f"{execution_id}/{attempt}/{step_id}" + (f"/{run}" if run else "")
    digest = bytearray(hashlib.sha1(_STEP_NAMESPACE_BYTES + key.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = digest.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


# Upserts are built once per (dialect, kind, bound columns) and executed with parameters:
# building them per call (ON CONFLICT ... excluded) cost more than the database round trip.
_UPSERTS: dict[tuple[bool, str, tuple[str, ...]], Any] = {}

#: Kinds of history write: "pending" (insert a PENDING job row unless it exists; "pending?"
#: is the same returning the id when inserted), "job" (upsert a job row's state), "step"
#: (upsert a step row), "started" (a scheduled run whose execution left PENDING is done),
#: "outbox" (a notification raised by the job row's state, ``app.persistence.outbox``).
HISTORY_KINDS = ("pending", "job", "step", "started", "outbox")

#: Parameters of "job", "step" and "started" writes that fence them: the write lands only
#: while the execution is still held by ``fence_owner`` at claim ``fence_attempt`` (a node
#: that lost its lease cannot overwrite the new owner's records).
FENCE_PARAMS = ("fence_owner", "fence_attempt")


def _fence(job: Table) -> ColumnElement[bool]:
    """The job row is still held by the writer: same owner, same claim attempt."""
    return and_(
        job.c.owner == bindparam("fence_owner", type_=String(100)),
        job.c.attempt == bindparam("fence_attempt", type_=Integer()),
    )


def history_statement(on_postgresql: bool, kind: str, columns: tuple[str, ...]) -> Any:
    """The statement of a history write of ``kind`` binding ``columns`` (sorted names)."""
    if kind == "started":
        return _MARK_DISPATCHED
    cache_key = (on_postgresql, kind, columns)
    stmt = _UPSERTS.get(cache_key)
    if stmt is not None:
        return stmt
    insert_ = postgresql.insert if on_postgresql else sqlite.insert
    data = tuple(c for c in columns if c not in FENCE_PARAMS)
    jobs: Table = JobExecutionV2.__table__  # type: ignore[assignment]
    table: Table
    if kind in ("pending", "pending?"):
        table = jobs
        stmt = (
            insert_(table)
            .values({c: bindparam(c, type_=table.c[c].type) for c in data})
            .on_conflict_do_nothing(index_elements=[table.c.execution_id])
        )
        if kind == "pending?":
            stmt = stmt.returning(table.c.execution_id)
    elif kind == "job":
        table = jobs
        base = insert_(table).values({c: bindparam(c, type_=table.c[c].type) for c in data})
        keep: tuple[str, ...] = ("execution_id", "job_id", "timezone", "created_at")
        keep += CREATION_ONLY
        stmt = base.on_conflict_do_update(
            index_elements=[table.c.execution_id],
            set_={c: base.excluded[c] for c in data if c not in keep},
            where=_fence(jobs) if "fence_attempt" in columns else None,
        )
    elif kind == "step":
        table = StepExecutionV2.__table__  # type: ignore[assignment]
        eid = bindparam("execution_id", type_=table.c.execution_id.type)
        next_order = (
            select(func.coalesce(func.max(table.c.start_order) + 1, 0))
            .where(
                table.c.execution_id == eid,
                table.c.attempt == bindparam("attempt", type_=table.c.attempt.type),
            )
            .scalar_subquery()
        )
        # INSERT ... SELECT ... WHERE <fence>: a fenced-out writer inserts nothing either.
        # The job row is found by its key alone and the fence is compared on what it holds:
        # with the fence in the WHERE clause, PostgreSQL (no statistics yet, the costs tied)
        # took the (owner, status) index and read every row this node owns, once per step
        # row written (B1 lost half its throughput over 5,000 executions).
        condition: ColumnElement[bool] = _fence(jobs) if "fence_attempt" in columns else true()
        held = select(condition).where(jobs.c.execution_id == eid).scalar_subquery().is_(True)
        rows = select(*[bindparam(c, type_=table.c[c].type) for c in data], next_order).where(held)
        base = insert_(table).from_select([*data, "start_order"], rows)
        keep = ("step_id", "step_execution_id", "execution_id", "attempt", "run", "created_at")
        stmt = base.on_conflict_do_update(
            index_elements=[table.c.execution_id, table.c.attempt, table.c.step_id, table.c.run],
            set_={c: base.excluded[c] for c in data if c not in keep},
        )
    elif kind == "outbox":
        stmt = outbox_insert(insert_, columns)
    else:
        raise ValueError(f"unknown history write {kind!r}")
    _UPSERTS[cache_key] = stmt
    return stmt


def pending_params(values: dict[str, Any]) -> dict[str, Any]:
    """Parameters of a "pending" write from the job row's creation values."""
    return {**values, "status": JobStatus.PENDING.value}


def job_params(values: dict[str, Any], owner: str | None, fence: int) -> dict[str, Any]:
    """Parameters of a "job" write from ``convert.job_values``, fenced on (``owner``,
    claim attempt ``fence``)."""
    now = utc_now()
    return {
        **values,
        "owner": owner,
        "created_at": now,
        "updated_at": now,
        "fence_owner": owner,
        "fence_attempt": fence,
    }


def step_params(
    execution_id: str, attempt: int, values: dict[str, Any], owner: str | None, fence: int
) -> dict[str, Any]:
    """Parameters of a "step" write from ``convert.step_values`` (``attempt``: the job's
    retry attempt), fenced as ``job_params``."""
    now = utc_now()
    return {
        **values,
        "step_execution_id": step_execution_id(
            execution_id, attempt, values["step_id"], values.get("run", 0)
        ),
        "execution_id": execution_id,
        "attempt": attempt,
        "created_at": now,
        "updated_at": now,
        "fence_owner": owner,
        "fence_attempt": fence,
    }


def started_params(execution_id: str, owner: str | None, fence: int) -> dict[str, Any]:
    """Parameters of a "started" write: the run must still be claimed by ``owner`` at
    attempt ``fence``."""
    return {"b_execution_id": execution_id, "fence_owner": owner, "fence_attempt": fence}


#: Columns only a "pending" write sets: how the execution was created.
CREATION_ONLY = ("trigger", "scheduled_for", "requested_by", "job_definition_json", "attempt")


_RUNS: Table = ScheduledRunV2.__table__  # type: ignore[assignment]
#: A claimed run handed to its queue (or whose execution left PENDING) is done, only while
#: its claim is still the writer's. The run is found by its key alone and the claim is
#: compared on the row (``... IS TRUE``, which no index serves): as plain conditions,
#: PostgreSQL (no statistics yet, the costs tied) took the (status, scheduled_for) index
#: and read every claimed run, once per run dispatched.
_MARK_DISPATCHED = (
    update(_RUNS)
    .where(
        _RUNS.c.execution_id == bindparam("b_execution_id"),
        and_(
            _RUNS.c.status == RUN_CLAIMED,
            _RUNS.c.lease_owner == bindparam("fence_owner", type_=String(100)),
            _RUNS.c.attempt == bindparam("fence_attempt", type_=Integer()),
        ).is_(True),
    )
    .values(status=RUN_DONE)
)
#: Settling an execution (recovery, interruption): its run, pending or claimed, is done.
_MARK_STARTED = (
    update(_RUNS)
    .where(
        _RUNS.c.execution_id == bindparam("b_execution_id"),
        # Not IN (...): an expanding parameter cannot be used in an executemany batch.
        or_(_RUNS.c.status == RUN_PENDING, _RUNS.c.status == RUN_CLAIMED),
    )
    .values(status=RUN_DONE)
)


class _Repository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.on_postgresql = session.get_bind().dialect.name == "postgresql"

    def db_now(self) -> ColumnElement[datetime]:
        """The database's clock on PostgreSQL (one clock for every replica); the process
        clock on SQLite, whose file has a single host anyway."""
        if self.on_postgresql:
            return func.now()
        return literal(utc_now(), JobExecutionV2.created_at.type)

    def db_now_plus(self, seconds: float) -> ColumnElement[datetime]:
        if self.on_postgresql:
            return func.now() + literal(timedelta(seconds=seconds), Interval())
        return literal(utc_now() + timedelta(seconds=seconds), JobExecutionV2.created_at.type)

    def live_node(self, node_id: Any, timeout_seconds: float) -> ColumnElement[bool]:
        """``node_id`` (a column or value) names a node whose heartbeat is younger than
        ``timeout_seconds`` on the database's clock."""
        node = SchedulerNodeV2
        return (
            select(node.node_id)
            .where(node.node_id == node_id, node.heartbeat_at >= self.db_now_plus(-timeout_seconds))
            .exists()
        )


class ExecutionRepository(_Repository):
    """Job and step rows (the execution history)."""

    async def insert_pending(self, values: dict[str, Any]) -> bool:
        """Insert a PENDING job row; False (and nothing changed) when the id exists."""
        params = pending_params(values)
        stmt = history_statement(self.on_postgresql, "pending?", tuple(sorted(params)))
        return (await self.session.execute(stmt, params)).first() is not None

    async def insert_pending_many(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert many PENDING job rows of new execution ids: one executemany per set of
        columns (rows with the same columns share a statement)."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for values in rows:
            params = pending_params(values)
            groups.setdefault(tuple(sorted(params)), []).append(params)
        for columns, params_list in groups.items():
            stmt = history_statement(self.on_postgresql, "pending", columns)
            await self.session.execute(stmt, params_list)

    async def get(self, execution_id: str) -> JobExecutionV2 | None:
        return await self.session.get(JobExecutionV2, execution_id)

    async def latest_steps(self, execution_ids: Sequence[str]) -> dict[str, list[StepExecutionV2]]:
        """Steps of each execution's latest attempt, in start order."""
        out: dict[str, list[StepExecutionV2]] = {eid: [] for eid in execution_ids}
        if not execution_ids:
            return out
        step = StepExecutionV2
        latest = (
            select(step.execution_id, func.max(step.attempt).label("attempt"))
            .where(step.execution_id.in_(execution_ids))
            .group_by(step.execution_id)
            .subquery()
        )
        stmt = (
            select(step)
            .join(
                latest,
                and_(step.execution_id == latest.c.execution_id, step.attempt == latest.c.attempt),
            )
            .order_by(step.execution_id, step.start_order, step.created_at, step.step_id)
        )
        for row in await self.session.scalars(stmt):
            out[row.execution_id].append(row)
        return out

    async def all_steps(self, execution_ids: Sequence[str]) -> dict[str, list[StepExecutionV2]]:
        """Steps of every attempt of each execution, by attempt and start order."""
        out: dict[str, list[StepExecutionV2]] = {eid: [] for eid in execution_ids}
        if not execution_ids:
            return out
        step = StepExecutionV2
        stmt = (
            select(step)
            .where(step.execution_id.in_(execution_ids))
            .order_by(step.execution_id, step.attempt, step.start_order, step.created_at)
        )
        for row in await self.session.scalars(stmt):
            out[row.execution_id].append(row)
        return out

    async def fires_with_runs(self, job_id: str, start: datetime, end: datetime) -> set[datetime]:
        job = JobExecutionV2
        stmt = select(job.scheduled_for).where(
            job.job_id == job_id,
            job.scheduled_for >= start,
            job.scheduled_for < end,
            or_(job.start_time.is_not(None), job.status.in_(_TO_RUN)),
        )
        return {at for at in await self.session.scalars(stmt) if at is not None}

    async def page(
        self,
        *,
        job_id: str | None,
        status: str | None,
        timezone: str | None,
        started_after: datetime | None,
        started_before: datetime | None,
        after_key: tuple[datetime, str] | None,
        limit: int,
    ) -> list[JobExecutionV2]:
        """Up to ``limit`` rows, newest first (created_at, execution_id), after ``after_key``."""
        job = JobExecutionV2
        stmt = select(job)
        if job_id is not None:
            stmt = stmt.where(job.job_id == job_id)
        if status is not None:
            stmt = stmt.where(job.status == status)
        if timezone is not None:
            stmt = stmt.where(job.timezone == timezone)
        if started_after is not None:
            stmt = stmt.where(job.start_time >= started_after)
        if started_before is not None:
            stmt = stmt.where(job.start_time < started_before)
        if after_key is not None:
            created_at, execution_id = after_key
            stmt = stmt.where(
                or_(
                    job.created_at < created_at,
                    and_(job.created_at == created_at, job.execution_id < execution_id),
                )
            )
        stmt = stmt.order_by(job.created_at.desc(), job.execution_id.desc()).limit(limit)
        return list(await self.session.scalars(stmt))

    async def settle(
        self,
        execution_id: str,
        status: JobStatus,
        reason: str,
        *,
        from_statuses: Sequence[str],
        owner: str | None = None,
        fence: tuple[str | None, int] | None = None,
    ) -> JobExecutionV2 | None:
        """Move a job row in one of ``from_statuses`` (and owned by ``owner`` if given) to
        ``status`` with ``reason``; its RUNNING/PENDING steps become FAILED. With ``fence``
        (owner, attempt) the row must still be held so, and its attempt goes up by one: the
        old holder's late writes no longer match. The updated row, or None when it did not
        qualify."""
        job = JobExecutionV2
        now = utc_now()
        conditions = [job.execution_id == execution_id, job.status.in_(from_statuses)]
        if owner is not None:
            conditions.append(job.owner == owner)
        if fence is not None:
            held_by, attempt = fence
            conditions.append(job.owner.is_(None) if held_by is None else job.owner == held_by)
            conditions.append(job.attempt == attempt)
        row = (await self.session.scalars(select(job).where(*conditions).with_for_update())).first()
        if row is None:
            return None
        if fence is not None:
            row.attempt = row.attempt + 1
        row.status = status.value
        row.error_message = reason
        row.end_time = now
        row.updated_at = now
        if row.start_time is not None:
            row.duration_seconds = max(0.0, (now - row.start_time).total_seconds())
        step = StepExecutionV2
        await self.session.execute(
            update(step)
            .where(
                step.execution_id == execution_id,
                step.status.in_((StepStatus.RUNNING.value, StepStatus.PENDING.value)),
            )
            .values(
                status=StepStatus.FAILED.value, error_message=reason, end_time=now, updated_at=now
            )
            .execution_options(synchronize_session=False)
        )
        await self.session.flush()
        return row

    async def in_flight(self, *, owner: str | None, include_queued: bool) -> list[JobExecutionV2]:
        """RUNNING/RETRYING rows (of ``owner`` if given); with ``include_queued`` also
        PENDING rows that are not waiting as a scheduled run (they waited in a memory
        queue)."""
        job = JobExecutionV2
        condition: ColumnElement[bool] = job.status.in_(IN_FLIGHT_STATUSES)
        if include_queued:
            waiting = select(ScheduledRunV2.execution_id).where(
                ScheduledRunV2.execution_id == job.execution_id,
                ScheduledRunV2.status.in_((RUN_PENDING, RUN_CLAIMED)),
            )
            condition = or_(
                condition,
                and_(job.status == JobStatus.PENDING.value, ~waiting.exists()),
            )
        stmt = select(job).where(condition)
        if owner is not None:
            stmt = stmt.where(job.owner == owner)
        stmt = stmt.order_by(job.created_at, job.execution_id)
        return list(await self.session.scalars(stmt))

    async def finished_before(self, older_than: datetime, limit: int) -> list[str]:
        job = JobExecutionV2
        stmt = (
            select(job.execution_id)
            .where(
                job.status.in_(TERMINAL_STATUSES),
                or_(
                    job.end_time < older_than,
                    and_(job.end_time.is_(None), job.created_at < older_than),
                ),
            )
            .limit(limit)
        )
        return list(await self.session.scalars(stmt))

    async def delete(self, execution_ids: Sequence[str]) -> int:
        """Delete executions with their steps and scheduled runs."""
        if not execution_ids:
            return 0
        for entity in (StepExecutionV2, ScheduledRunV2):
            await self.session.execute(
                delete(entity)
                .where(entity.execution_id.in_(execution_ids))
                .execution_options(synchronize_session=False)
            )
        result = await self.session.execute(
            delete(JobExecutionV2)
            .where(JobExecutionV2.execution_id.in_(execution_ids))
            .returning(JobExecutionV2.execution_id)
            .execution_options(synchronize_session=False)
        )
        return len(result.all())

    async def definition_json(self, execution_id: str) -> str | None:
        return await self.session.scalar(
            select(JobExecutionV2.job_definition_json).where(
                JobExecutionV2.execution_id == execution_id
            )
        )


class ScheduledRunRepository(_Repository):
    """Rows of ``scheduled_runs_v2``: waiting, claimed, done or cancelled runs."""

    async def insert(self, values: dict[str, Any]) -> None:
        self.session.add(ScheduledRunV2(status=RUN_PENDING, **values))
        await self.session.flush()

    async def insert_many(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert many waiting runs (one executemany)."""
        if rows:
            await self.session.execute(
                insert(ScheduledRunV2), [{"status": RUN_PENDING, **values} for values in rows]
            )

    async def fire_exists(self, job_id: str, schedule_key: datetime) -> bool:
        run = ScheduledRunV2
        stmt = select(run.execution_id).where(
            run.job_id == job_id, run.schedule_key == schedule_key
        )
        return (await self.session.execute(stmt)).first() is not None

    async def due(self, until: datetime, limit: int) -> list[ScheduledRunV2]:
        run = ScheduledRunV2
        stmt = (
            select(run)
            .where(run.status == RUN_PENDING, run.scheduled_for <= until)
            .order_by(run.scheduled_for, run.execution_id)
            .limit(limit)
        )
        return list(await self.session.scalars(stmt))

    async def claim(
        self,
        owner: str,
        lease_seconds: float,
        *,
        execution_id: str | None = None,
        until: datetime | None = None,
        limit: int = 1,
    ) -> list[ScheduledRunV2]:
        """Atomically move pending runs to claimed by ``owner`` (attempt + 1, lease from the
        database clock). Either the one ``execution_id`` or up to ``limit`` runs due by
        ``until``, earliest first; on PostgreSQL rows locked by another claimer are skipped,
        so concurrent claimers never get the same run."""
        run = ScheduledRunV2
        if execution_id is not None:
            target: ColumnElement[bool] = and_(
                run.execution_id == execution_id, run.status == RUN_PENDING
            )
        else:
            assert until is not None
            pick = (
                select(run.execution_id)
                .where(run.status == RUN_PENDING, run.scheduled_for <= until)
                .order_by(run.scheduled_for, run.execution_id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            # Re-check status: a row picked in the subquery may have been claimed by a
            # concurrent statement that committed between the pick and the update.
            target = and_(run.execution_id.in_(pick.scalar_subquery()), run.status == RUN_PENDING)
        stmt = (
            update(run)
            .where(target)
            .values(
                status=RUN_CLAIMED,
                attempt=run.attempt + 1,
                lease_owner=owner,
                lease_expires_at=self.db_now_plus(lease_seconds),
            )
            .returning(run)
            .execution_options(synchronize_session=False)
        )
        claimed = list((await self.session.scalars(stmt)).all())
        if claimed:
            job = JobExecutionV2
            await self.session.execute(
                update(job)
                .where(job.execution_id.in_([r.execution_id for r in claimed]))
                .values(
                    owner=owner,
                    attempt=select(run.attempt)
                    .where(run.execution_id == job.execution_id)
                    .scalar_subquery(),
                    updated_at=utc_now(),
                )
                .execution_options(synchronize_session=False)
            )
        claimed.sort(key=lambda r: (r.scheduled_for, r.execution_id))
        return claimed

    async def set_status(
        self,
        execution_id: str,
        status: str,
        *,
        from_statuses: Sequence[str],
        owner: str | None = None,
        attempt: int | None = None,
    ) -> bool:
        run = ScheduledRunV2
        conditions = [run.execution_id == execution_id, run.status.in_(from_statuses)]
        if owner is not None:
            conditions.append(run.lease_owner == owner)
        if attempt is not None:
            conditions.append(run.attempt == attempt)
        stmt = (
            update(run)
            .where(*conditions)
            .values(status=status)
            .returning(run.execution_id)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.execute(stmt)).first() is not None

    async def mark_started(self, execution_id: str) -> None:
        """The execution left PENDING: its run (if any) must never fire again."""
        await self.session.execute(_MARK_STARTED, {"b_execution_id": execution_id})

    async def requeue_claimed(
        self,
        *,
        owner: str | None,
        expired_only: bool,
        execution_ids: Sequence[str] | None = None,
        orphaned_after: float | None = None,
    ) -> int:
        """Claimed runs whose execution never started go back to pending (their job rows
        lose their owner, fencing out the old claimer); with ``orphaned_after``, only
        runs whose claimer is not a node with a heartbeat younger than that many seconds."""
        run, job = ScheduledRunV2, JobExecutionV2
        not_started = (
            select(job.execution_id)
            .where(job.execution_id == run.execution_id, job.status == JobStatus.PENDING.value)
            .exists()
        )
        conditions: list[ColumnElement[bool]] = [run.status == RUN_CLAIMED, not_started]
        if owner is not None:
            conditions.append(run.lease_owner == owner)
        if expired_only:
            conditions.append(run.lease_expires_at < self.db_now())
        if execution_ids is not None:
            conditions.append(run.execution_id.in_(list(execution_ids)))
        if orphaned_after is not None:
            conditions.append(~self.live_node(run.lease_owner, orphaned_after))
        stmt = (
            update(run)
            .where(*conditions)
            .values(status=RUN_PENDING, lease_owner=None, lease_expires_at=None)
            .returning(run.execution_id)
            .execution_options(synchronize_session=False)
        )
        ids = [r[0] for r in (await self.session.execute(stmt)).all()]
        if ids:
            await self.session.execute(
                update(job)
                .where(job.execution_id.in_(ids))
                .values(owner=None)
                .execution_options(synchronize_session=False)
            )
        return len(ids)

    async def count_pending(self, limit: int | None = None) -> int:
        """Pending runs; with ``limit`` the count stops there (reads at most that many
        index entries instead of all of them)."""
        run = ScheduledRunV2
        pending = select(run.execution_id).where(run.status == RUN_PENDING)
        if limit is not None:
            pending = pending.limit(limit)
        stmt = select(func.count()).select_from(pending.subquery())
        return int(await self.session.scalar(stmt) or 0)

    async def next_time(self) -> datetime | None:
        stmt = select(func.min(ScheduledRunV2.scheduled_for)).where(
            ScheduledRunV2.status == RUN_PENDING
        )
        return await self.session.scalar(stmt)


class JobRepository(_Repository):
    """Rows of ``jobs_v2``: stored job definitions. Writes that depend on what is stored
    (version, next fire) are single conditional statements, so concurrent writers on any
    backend cannot both succeed."""

    async def insert(self, values: dict[str, Any]) -> JobDefinitionV2:
        """Insert a row; IntegrityError when the job_id exists."""
        stmt = insert(JobDefinitionV2).values(**values).returning(JobDefinitionV2)
        return (await self.session.scalars(stmt)).one()

    async def get(self, job_id: str) -> JobDefinitionV2 | None:
        return await self.session.get(JobDefinitionV2, job_id)

    async def existing_ids(self, job_ids: Sequence[str]) -> set[str]:
        """Which of ``job_ids`` are stored (in batches, so any number of ids fits in the
        statements' parameter limits)."""
        found: set[str] = set()
        wanted = list(job_ids)
        for start in range(0, len(wanted), 500):
            stmt = select(JobDefinitionV2.job_id).where(
                JobDefinitionV2.job_id.in_(wanted[start : start + 500])
            )
            found.update(await self.session.scalars(stmt))
        return found

    async def version(self, job_id: str) -> int | None:
        """The stored version, or None when there is no such job."""
        stmt = select(JobDefinitionV2.version).where(JobDefinitionV2.job_id == job_id)
        return await self.session.scalar(stmt)

    async def page(
        self, *, enabled: bool | None, timezone: str | None, after_job_id: str | None, limit: int
    ) -> list[JobDefinitionV2]:
        """Up to ``limit`` rows ordered by job_id, after ``after_job_id``."""
        job = JobDefinitionV2
        stmt = select(job)
        if enabled is not None:
            stmt = stmt.where(job.enabled == enabled)
        if timezone is not None:
            stmt = stmt.where(job.timezone == timezone)
        if after_job_id is not None:
            stmt = stmt.where(job.job_id > after_job_id)
        stmt = stmt.order_by(job.job_id).limit(limit)
        return list(await self.session.scalars(stmt))

    async def update(
        self, job_id: str, expected_version: int | None, values: dict[str, Any]
    ) -> datetime | None:
        """Set ``values`` and version + 1 on the row, only if it is at ``expected_version``
        (when given). Its ``created_at``, or None when no row qualified."""
        job = JobDefinitionV2
        conditions = [job.job_id == job_id]
        if expected_version is not None:
            conditions.append(job.version == expected_version)
        stmt = (
            update(job)
            .where(*conditions)
            .values(**values, version=job.version + 1)
            .returning(job.created_at)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.execute(stmt)).scalar()

    async def set_definition_json(self, job_id: str, text: str) -> JobDefinitionV2:
        job = JobDefinitionV2
        stmt = (
            update(job)
            .where(job.job_id == job_id)
            .values(definition_json=text)
            .returning(job)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.scalars(stmt)).one()

    async def delete(self, job_id: str, expected_version: int | None) -> bool:
        """Delete the row (only at ``expected_version`` when given); whether one went."""
        job = JobDefinitionV2
        conditions = [job.job_id == job_id]
        if expected_version is not None:
            conditions.append(job.version == expected_version)
        stmt = (
            delete(job)
            .where(*conditions)
            .returning(job.job_id)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.execute(stmt)).first() is not None

    async def due(self, until: datetime, limit: int) -> list[JobDefinitionV2]:
        job = JobDefinitionV2
        stmt = (
            select(job)
            .where(job.enabled == true(), job.next_fire_at <= until)
            .order_by(job.next_fire_at, job.job_id)
            .limit(limit)
        )
        return list(await self.session.scalars(stmt))

    async def advance(
        self,
        job_id: str,
        *,
        expected_next_fire_at: datetime,
        next_fire_at: datetime | None,
        last_fire_at: datetime,
    ) -> bool:
        """Compare-and-set of ``next_fire_at``. Timestamps compare exactly on both backends
        (``UTCDateTime`` binds the same UTC value, microseconds included, that it stored)."""
        job = JobDefinitionV2
        stmt = (
            update(job)
            .where(job.job_id == job_id, job.next_fire_at == expected_next_fire_at)
            .values(next_fire_at=next_fire_at, last_fire_at=last_fire_at)
            .returning(job.job_id)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.execute(stmt)).first() is not None

    async def next_fire_time(self) -> datetime | None:
        job = JobDefinitionV2
        stmt = select(func.min(job.next_fire_at)).where(job.enabled == true())
        return await self.session.scalar(stmt)
