"""Request and response models of ``POST /api/v2/jobs/schedule/batch``: many
``{job, scheduled_time}`` items (each as ``POST /api/v2/jobs/schedule`` takes one), answered
item by item."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from app.api.schemas import EXAMPLE_JOB, LocalDateTime, ProblemFieldError
from app.domain.enums import JobStatus

MAX_BATCH_ITEMS = 1_000

# Items are checked one by one (``ScheduleCreate`` each), so that a bad item is answered on
# its own when ``atomic`` is false; the document shows them as ``ScheduleCreate``.
_ITEMS_SCHEMA = {
    "type": "array",
    "items": {"$ref": "#/components/schemas/ScheduleCreate"},
    "minItems": 1,
    "maxItems": MAX_BATCH_ITEMS,
    "title": "Items",
    "description": f"1 to {MAX_BATCH_ITEMS:,} runs to schedule, each `{{job, scheduled_time}}` "
    "as `POST /api/v2/jobs/schedule` takes it.",
}


class ScheduleBatchCreate(BaseModel):
    """Many one-off runs to schedule in one request."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "atomic": True,
                    "items": [
                        {"job": EXAMPLE_JOB, "scheduled_time": "2035-01-15T09:30:00"},
                        {"job": EXAMPLE_JOB, "scheduled_time": "2035-01-16T09:30:00"},
                    ],
                }
            ]
        },
    )

    items: Annotated[list[Any], WithJsonSchema(_ITEMS_SCHEMA)] = Field(
        min_length=1, max_length=MAX_BATCH_ITEMS
    )
    atomic: bool = Field(
        True,
        description="true: every item is checked first; one bad item refuses the request "
        "(400 naming each bad item's fields, nothing written). false: the good items are "
        "scheduled and each bad one is answered with its errors.",
    )


class ScheduleBatchItemRead(BaseModel):
    """The answer for one item, in request order: scheduled (an ``execution_id``) or not
    (``errors`` naming the item's fields, ``items[<index>].<field>``)."""

    index: int = Field(description="Position of the item in the request (from 0).")
    scheduled: bool
    execution_id: str | None = None
    job_id: str | None = None
    status: JobStatus | None = None
    scheduled_time_utc: datetime | None = None
    scheduled_time_local: LocalDateTime | None = Field(
        None, description="The same instant in the job's timezone, with its UTC offset."
    )
    timezone: str | None = None
    status_url: str | None = Field(None, description="URL of the execution.")
    errors: list[ProblemFieldError] = Field(
        default_factory=list, description="Why the item was not scheduled."
    )


class ScheduleBatchRead(BaseModel):
    """What was scheduled: every item's answer. All scheduled items were written in one
    transaction."""

    atomic: bool
    scheduled: int = Field(description="Items scheduled.")
    failed: int = Field(description="Items refused (only when `atomic` is false).")
    items: list[ScheduleBatchItemRead]
