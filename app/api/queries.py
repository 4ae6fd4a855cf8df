"""The query parameters of every route, one model per route (FastAPI query-parameter
models). ``extra="forbid"``: an unknown query parameter answers 400 naming it, together with
every other problem of the request, as an unknown body field does. A route without query
parameters takes ``NoQuery``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from app.api.schemas import _check_timezone
from app.domain.enums import JobStatus
from app.domain.jobs import JobQuery
from app.domain.records import ExecutionQuery
from app.domain.timeutil import parse_instant


class _StrictQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _instant_text(value: object) -> object:
    # Our own parser rather than pydantic's lax one, which reads "0.5" as a Unix time.
    return parse_instant(value) if isinstance(value, str) else value


#: An ISO 8601 instant with an offset, in years 1-9999 at every offset up to ±14 h.
Instant = Annotated[datetime, BeforeValidator(_instant_text)]


def _timezone(value: str | None) -> str | None:
    return None if value is None else _check_timezone(value)


class NoQueryModel(_StrictQuery):
    """No query parameters."""


class WaitQueryModel(_StrictQuery):
    wait: bool = Field(True, description="Wait for the result (default) or answer 202 at once.")


class JobListQueryModel(_StrictQuery):
    enabled: bool | None = Field(None, description="Only enabled (true) or disabled jobs.")
    timezone: str | None = Field(None, max_length=50, description="Only jobs in this timezone.")
    limit: int = Field(50, ge=1, le=500, description="Page size.")
    cursor: str | None = Field(None, max_length=500, description="`next_cursor` of a page.")

    _known_timezone = field_validator("timezone")(_timezone)

    def to_query(self) -> JobQuery:
        return JobQuery(
            enabled=self.enabled, timezone=self.timezone, limit=self.limit, cursor=self.cursor
        )


class NextRunsQueryModel(_StrictQuery):
    count: int = Field(10, ge=1, le=500, description="How many fires.")
    after: Instant | None = Field(
        None,
        description="Fires strictly after this instant (ISO 8601 with an offset); default: now.",
        examples=["2026-03-07T00:00:00Z"],
    )


class ExecutionListQueryModel(_StrictQuery):
    job_id: str | None = Field(None, max_length=100, description="Only this job's executions.")
    status: JobStatus | None = Field(None, description="Only executions with this status.")
    timezone: str | None = Field(
        None, max_length=50, description="Only executions of jobs in this timezone."
    )
    started_after: Instant | None = Field(
        None, description="Started at or after this instant (ISO 8601 with an offset)."
    )
    started_before: Instant | None = Field(
        None, description="Started before this instant (ISO 8601 with an offset)."
    )
    limit: int = Field(50, ge=1, le=200, description="Page size.")
    cursor: str | None = Field(None, max_length=500, description="`next_cursor` of a page.")

    _known_timezone = field_validator("timezone")(_timezone)

    def to_query(self) -> ExecutionQuery:
        return ExecutionQuery(
            job_id=self.job_id,
            status=self.status,
            timezone=self.timezone,
            started_after=self.started_after,
            started_before=self.started_before,
            limit=self.limit,
            cursor=self.cursor,
        )


class NotificationListQueryModel(_StrictQuery):
    execution_id: str | None = Field(None, min_length=1, max_length=100)
    job_id: str | None = Field(None, min_length=1, max_length=100)
    limit: int = Field(100, ge=1, le=500)


NoQuery = Annotated[NoQueryModel, Query()]
NotificationListQuery = Annotated[NotificationListQueryModel, Query()]
WaitQuery = Annotated[WaitQueryModel, Query()]
JobListQuery = Annotated[JobListQueryModel, Query()]
NextRunsQuery = Annotated[NextRunsQueryModel, Query()]
ExecutionListQuery = Annotated[ExecutionListQueryModel, Query()]
