"""The notification outbox: one row per (event, destination), written in the transaction of the
state change that causes it, claimed and delivered by one node.

* An execution's final job row goes through the group-commit writer; its outbox rows are one
  more kind of history write (``"outbox"``) queued just before it, so they commit in the same
  batch transaction. A missed fire's rows are inserted in the transaction that settles it.
* ``delivery_id`` is derived from the event id and the destination: inserting a message twice
  (a retried batch, two nodes noticing the same slow run) is a no-op (``ON CONFLICT DO
  NOTHING``).
* Delivery claims due rows with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two
  nodes never take the same row; SQLite has one writer). A node that dies mid-delivery leaves
  a lease that expires; another node (or the next start) takes the row again.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Index,
    Integer,
    Interval,
    String,
    Table,
    Text,
    bindparam,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from app.domain.enums import JobStatus
from app.domain.models import JobDefinition, JobExecutionResult
from app.domain.notifications import (
    DELIVERY_DELIVERED,
    DELIVERY_PENDING,
    Delivery,
    OutboxMessage,
    OutboxSource,
)
from app.domain.timeutil import utc_now
from app.persistence.convert import definition_from_json, dump_json, load_json_object
from app.persistence.models import Base

log = logging.getLogger("app.persistence.outbox")

OUTBOX_PENDING = DELIVERY_PENDING
OUTBOX_DELIVERED = DELIVERY_DELIVERED


class NotificationOutboxV2(Base):
    """One notification to deliver to one destination, and the log of its attempts."""

    __tablename__ = "notification_outbox_v2"

    delivery_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(20))
    channel: Mapped[str] = mapped_column(String(10))
    destination_json: Mapped[str] = mapped_column(Text)
    job_id: Mapped[str] = mapped_column(String(100), index=True)
    execution_id: Mapped[str | None] = mapped_column(String(100), index=True)
    payload_json: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_http_status: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_notification_outbox_v2_status_next_attempt_at", "status", "next_attempt_at"),
    )


OUTBOX_TABLE: Table = NotificationOutboxV2.__table__  # type: ignore[assignment]


def outbox_params(message: OutboxMessage) -> dict[str, Any]:
    """Parameters of an ``"outbox"`` history write (an insert that ignores a repeat)."""
    now = utc_now()
    return {
        "delivery_id": message.delivery_id,
        "event_id": message.event_id,
        "event": message.event,
        "channel": message.channel,
        "destination_json": dump_json(message.destination),
        "job_id": message.job_id[:100],
        "execution_id": message.execution_id,
        "payload_json": dump_json(message.payload),
        "status": OUTBOX_PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


def outbox_insert(insert_: Any, columns: tuple[str, ...]) -> Any:
    """The ``"outbox"`` history statement (``insert_``: the dialect's insert)."""
    table = OUTBOX_TABLE
    return (
        insert_(table)
        .values({c: bindparam(c, type_=table.c[c].type) for c in columns})
        .on_conflict_do_nothing(index_elements=[table.c.delivery_id])
    )


def delivery_from_row(row: Any) -> Delivery:
    return Delivery(
        message=OutboxMessage(
            delivery_id=row.delivery_id,
            event_id=row.event_id,
            event=row.event,
            channel=row.channel,
            destination=load_json_object(row.destination_json),
            job_id=row.job_id,
            execution_id=row.execution_id,
            payload=load_json_object(row.payload_json),
        ),
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at if row.status == OUTBOX_PENDING else None,
        last_error=row.last_error,
        last_http_status=row.last_http_status,
        created_at=row.created_at,
        updated_at=row.updated_at,
        delivered_at=row.delivered_at,
    )


class OutboxRepository:
    """Every query of the outbox. Never commits. Times come from the database's clock on
    PostgreSQL (one clock for every node), the process clock on SQLite (a single host)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.on_postgresql = session.get_bind().dialect.name == "postgresql"

    def _now(self, plus_seconds: float = 0.0) -> ColumnElement[datetime]:
        if self.on_postgresql:
            return func.now() + literal(timedelta(seconds=plus_seconds), Interval())
        return literal(utc_now() + timedelta(seconds=plus_seconds), OUTBOX_TABLE.c.created_at.type)

    async def insert(self, messages: Sequence[OutboxMessage]) -> None:
        insert_ = postgresql.insert if self.on_postgresql else sqlite.insert
        for message in messages:
            params = outbox_params(message)
            await self.session.execute(outbox_insert(insert_, tuple(sorted(params))), params)

    async def claim(self, owner: str, limit: int, lease_seconds: float) -> list[Delivery]:
        """Take up to ``limit`` due rows (pending, due, lease free or expired) for ``owner``
        until the lease expires."""
        box = OUTBOX_TABLE
        now = self._now()
        due = (
            select(box.c.delivery_id)
            .where(
                box.c.status == OUTBOX_PENDING,
                box.c.next_attempt_at <= now,
                or_(box.c.lease_expires_at.is_(None), box.c.lease_expires_at < now),
            )
            .order_by(box.c.next_attempt_at)
            .limit(limit)
        )
        if self.on_postgresql:
            due = due.with_for_update(skip_locked=True)
        claimed = (
            update(box)
            .where(box.c.delivery_id.in_(due.scalar_subquery()))
            .values(lease_owner=owner, lease_expires_at=self._now(lease_seconds))
            .returning(*box.c)
        )
        rows = (await self.session.execute(claimed)).all()
        return [delivery_from_row(row) for row in rows]

    async def settle(
        self,
        delivery_id: str,
        owner: str,
        *,
        status: str,
        error: str | None,
        http_status: int | None,
        retry_in_seconds: float | None,
    ) -> bool:
        """Record one attempt of a row ``owner`` holds (fenced on the lease owner); a
        pending row is tried again in ``retry_in_seconds``."""
        box = OUTBOX_TABLE
        values: dict[str, Any] = {
            "status": status,
            "attempts": box.c.attempts + 1,
            "last_http_status": http_status,
            "lease_owner": None,
            "lease_expires_at": None,
            "updated_at": utc_now(),
        }
        if error is not None:  # a success keeps the error of the attempt before it
            values["last_error"] = error
        if retry_in_seconds is not None:
            values["next_attempt_at"] = self._now(retry_in_seconds)
        if status == OUTBOX_DELIVERED:
            values["delivered_at"] = utc_now()
        result = await self.session.execute(
            update(box)
            .where(box.c.delivery_id == delivery_id, box.c.lease_owner == owner)
            .values(**values)
        )
        return bool(result.rowcount)

    async def search(
        self, *, execution_id: str | None, job_id: str | None, limit: int
    ) -> list[Delivery]:
        """Newest first."""
        box = OUTBOX_TABLE
        stmt = select(box)
        if execution_id is not None:
            stmt = stmt.where(box.c.execution_id == execution_id)
        if job_id is not None:
            stmt = stmt.where(box.c.job_id == job_id)
        stmt = stmt.order_by(box.c.created_at.desc(), box.c.delivery_id).limit(limit)
        return [delivery_from_row(row) for row in (await self.session.execute(stmt)).all()]


class SqlOutboxMixin:
    """The outbox part of ``SqlExecutionStore`` (the engine's ``OutboxStore`` port)."""

    #: Asked for the messages of a state change, inside its write (set by the app).
    outbox_source: OutboxSource | None = None

    if TYPE_CHECKING:

        def _write(self) -> AbstractAsyncContextManager[AsyncSession]: ...

        def _read(self) -> AbstractAsyncContextManager[AsyncSession]: ...

        async def get_execution(self, execution_id: str) -> JobExecutionResult | None: ...

        async def get_job_definition(self, execution_id: str) -> JobDefinition | None: ...

    async def add_outbox_messages(self, messages: Sequence[OutboxMessage]) -> None:
        """Insert messages raised by no state change of their own (a run seen slow, an
        overdue schedule); a repeat of a message is ignored."""
        if not messages:
            return
        async with self._write() as session:
            await OutboxRepository(session).insert(messages)

    async def claim_outbox(self, owner: str, limit: int, lease_seconds: float) -> list[Delivery]:
        async with self._write() as session:
            return await OutboxRepository(session).claim(owner, limit, lease_seconds)

    async def settle_outbox(
        self,
        delivery_id: str,
        owner: str,
        *,
        status: str,
        error: str | None,
        http_status: int | None,
        retry_in_seconds: float | None,
    ) -> bool:
        async with self._write() as session:
            return await OutboxRepository(session).settle(
                delivery_id,
                owner,
                status=status,
                error=error,
                http_status=http_status,
                retry_in_seconds=retry_in_seconds,
            )

    async def list_deliveries(
        self, *, execution_id: str | None = None, job_id: str | None = None, limit: int = 100
    ) -> list[Delivery]:
        async with self._read() as session:
            return await OutboxRepository(session).search(
                execution_id=execution_id, job_id=job_id, limit=limit
            )

    async def _finished_outbox(self, result: JobExecutionResult) -> list[dict[str, Any]]:
        """``"outbox"`` history writes of a terminal result (queued with its job row)."""
        if self.outbox_source is None or not result.status.is_terminal:
            return []
        try:
            messages = await self.outbox_source.finished(result)
        except Exception:  # the execution's record matters more than its notices
            log.exception("notifications of execution %s not made", result.execution_id)
            return []
        return [outbox_params(m) for m in messages]

    async def _missed_outbox(self, session: AsyncSession, row: Any, reason: str) -> None:
        """Outbox rows of a fire settled without running, in the settling transaction."""
        if self.outbox_source is None or not row.job_definition_json:
            return
        job = definition_from_json(row.job_definition_json)
        messages = self.outbox_source.missed(
            job, row.execution_id, row.scheduled_for, reason, JobStatus(row.status)
        )
        await OutboxRepository(session).insert(messages)

    async def _interrupted_outbox(
        self, execution_id: str, reason: str, status: JobStatus
    ) -> list[OutboxMessage]:
        """Messages of an execution about to be settled at recovery (computed before its
        transaction, written in it with ``_insert_outbox`` if it is settled)."""
        if self.outbox_source is None:
            return []
        job = await self.get_job_definition(execution_id)
        current = await self.get_execution(execution_id)
        if job is None or not job.notifications or current is None:
            return []
        return await self.outbox_source.ended(job, settled_result(current, status, reason))

    async def _insert_outbox(
        self, session: AsyncSession, messages: Sequence[OutboxMessage]
    ) -> None:
        if messages:
            await OutboxRepository(session).insert(messages)


def settled_result(
    current: JobExecutionResult, status: JobStatus, reason: str
) -> JobExecutionResult:
    """``current`` as recovery settles it."""
    now = utc_now()
    duration = (now - current.start_time).total_seconds() if current.start_time else 0.0
    return dataclasses.replace(
        current, status=status, error_message=reason, end_time=now, duration_seconds=duration
    )
