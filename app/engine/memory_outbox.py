"""The notification outbox of ``InMemoryExecutionStore`` (``memory://``): the same contract as
the database outbox (``app.persistence.outbox``), kept in process memory, so it forgets
undelivered messages on restart like everything else there."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

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

log = logging.getLogger("app.engine.notifications")


@dataclasses.dataclass
class _Row:
    delivery: Delivery
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    due_at: datetime = dataclasses.field(default_factory=utc_now)


class MemoryOutboxMixin:
    outbox_source: OutboxSource | None = None
    _outbox: dict[str, _Row]

    if TYPE_CHECKING:

        async def get_execution(self, execution_id: str) -> JobExecutionResult | None: ...

        async def get_job_definition(self, execution_id: str) -> JobDefinition | None: ...

    def _outbox_rows(self) -> dict[str, _Row]:
        if not hasattr(self, "_outbox"):
            self._outbox = {}
        return self._outbox

    async def add_outbox_messages(self, messages: Sequence[OutboxMessage]) -> None:
        rows = self._outbox_rows()
        now = utc_now()
        for message in messages:
            if message.delivery_id not in rows:
                rows[message.delivery_id] = _Row(
                    Delivery(message, DELIVERY_PENDING, 0, now, None, None, now, now, None),
                    due_at=now,
                )

    async def claim_outbox(self, owner: str, limit: int, lease_seconds: float) -> list[Delivery]:
        now = utc_now()
        due = sorted(
            (
                row
                for row in self._outbox_rows().values()
                if row.delivery.status == DELIVERY_PENDING
                and row.due_at <= now
                and (row.lease_expires_at is None or row.lease_expires_at < now)
            ),
            key=lambda row: row.due_at,
        )[:limit]
        for row in due:
            row.lease_owner = owner
            row.lease_expires_at = now + timedelta(seconds=lease_seconds)
        return [dataclasses.replace(row.delivery) for row in due]

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
        row = self._outbox_rows().get(delivery_id)
        if row is None or row.lease_owner != owner:
            return False
        now = utc_now()
        delivery = row.delivery
        delivery.status = status
        delivery.attempts += 1
        if error is not None:  # a success keeps the error of the attempt before it
            delivery.last_error = error
        delivery.last_http_status = http_status
        delivery.updated_at = now
        if status == DELIVERY_DELIVERED:
            delivery.delivered_at = now
        if retry_in_seconds is not None:
            row.due_at = now + timedelta(seconds=retry_in_seconds)
        delivery.next_attempt_at = row.due_at if status == DELIVERY_PENDING else None
        row.lease_owner = row.lease_expires_at = None
        return True

    async def list_deliveries(
        self, *, execution_id: str | None = None, job_id: str | None = None, limit: int = 100
    ) -> list[Delivery]:
        found = [
            dataclasses.replace(row.delivery)
            for row in self._outbox_rows().values()
            if (execution_id is None or row.delivery.message.execution_id == execution_id)
            and (job_id is None or row.delivery.message.job_id == job_id)
        ]
        found.sort(key=lambda d: (d.created_at, d.message.delivery_id), reverse=True)
        return found[:limit]

    async def _finished_outbox(self, result: JobExecutionResult) -> None:
        if self.outbox_source is not None and result.status.is_terminal:
            try:
                messages = await self.outbox_source.finished(result)
            except Exception:  # the execution's record matters more than its notices
                log.exception("the notifications of %s could not be made", result.execution_id)
                return
            await self.add_outbox_messages(messages)

    async def _missed_outbox(
        self, job: JobDefinition, execution_id: str, at: datetime, reason: str, status: JobStatus
    ) -> None:
        if self.outbox_source is not None:
            messages = self.outbox_source.missed(job, execution_id, at, reason, status)
            await self.add_outbox_messages(messages)

    async def _interrupted_outbox(
        self, execution_id: str, reason: str, status: JobStatus
    ) -> list[OutboxMessage]:
        if self.outbox_source is None:
            return []
        job = await self.get_job_definition(execution_id)
        current = await self.get_execution(execution_id)
        if job is None or not job.notifications or current is None:
            return []
        now = utc_now()
        ended = dataclasses.replace(
            current,
            status=status,
            error_message=reason,
            end_time=now,
            duration_seconds=(now - current.start_time).total_seconds()
            if current.start_time
            else 0.0,
        )
        return await self.outbox_source.ended(job, ended)
