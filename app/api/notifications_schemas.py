"""Request and response schemas of notifications: the rules of a job (``notifications``), the
delivery log and the test message."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.domain.notifications import Delivery

NotificationEvent = Literal[
    "success", "failure", "timeout", "cancelled", "missed", "recovered", "slow"
]


class WebhookTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(
        min_length=1,
        max_length=2000,
        description="http:// or https:// URL; its host must be allowed by "
        "V2_WEBHOOK_ALLOWED_HOSTS (checked here and at every delivery).",
        examples=["https://hooks.example/ops"],
    )
    secret_name: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="Name of a secret of V2_NOTIFICATION_SECRETS; the body is signed with it "
        "(X-JobScheduler-Signature: sha256=<HMAC>). The secret itself stays on the server.",
    )


class EmailTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    to: list[str] = Field(min_length=1, max_length=50, examples=[["dba@example.com"]])


class NotificationRuleCreate(BaseModel):
    """When to tell whom: events and exactly one destination."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "on": ["failure", "timeout", "missed"],
                    "webhook": {"url": "https://hooks.example/ops", "secret_name": "ops-hook"},
                },
                {
                    "on": ["failure", "recovered"],
                    "email": {"to": ["dba@example.com"]},
                    "min_consecutive_failures": 3,
                },
            ]
        },
    )

    on: list[NotificationEvent] = Field(
        min_length=1,
        description="success; failure (failed or partial_success); timeout; cancelled; "
        "missed (a fire recorded missed or skipped, or an overdue schedule); recovered (the "
        "first success after failures); slow (running, or finished, past slow_after_seconds).",
    )
    webhook: WebhookTarget | None = None
    email: EmailTarget | None = None
    min_consecutive_failures: int = Field(
        1,
        ge=1,
        le=1000,
        description="failure/timeout notices go out once per streak of failed runs, when it "
        "reaches this length; recovered only follows a streak that did.",
    )
    slow_after_seconds: float | None = Field(
        None, gt=0, description="Required with the slow event."
    )


class DeliveryRead(BaseModel):
    """One notification to one destination and the log of its delivery."""

    delivery_id: str
    event_id: str = Field(description="Stable across retries and nodes (the body's event_id).")
    event: str
    channel: Literal["webhook", "email"]
    destination: str = Field(description="The webhook URL (without query) or the recipients.")
    job_id: str
    execution_id: str | None
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_error: str | None
    last_http_status: int | None
    next_attempt_at: datetime | None = Field(None, description="When pending: the next try.")
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, delivery: Delivery, destination: str) -> DeliveryRead:
        message = delivery.message
        return cls.model_validate(
            {
                "delivery_id": message.delivery_id,
                "event_id": message.event_id,
                "event": message.event,
                "channel": message.channel,
                "destination": destination,
                "job_id": message.job_id,
                "execution_id": message.execution_id,
                "status": delivery.status,
                "attempts": delivery.attempts,
                "last_error": delivery.last_error,
                "last_http_status": delivery.last_http_status,
                "next_attempt_at": delivery.next_attempt_at,
                "created_at": delivery.created_at,
                "updated_at": delivery.updated_at,
                "delivered_at": delivery.delivered_at,
            }
        )


class DeliveryListRead(BaseModel):
    items: list[DeliveryRead]


class NotificationTestCreate(BaseModel):
    """A destination to send a test message to (as in a rule, without events)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    webhook: WebhookTarget | None = None
    email: EmailTarget | None = None


class NotificationTestRead(BaseModel):
    delivered: bool
    channel: Literal["webhook", "email"]
    http_status: int | None = None
    error: str | None = None


class OverdueJobRead(BaseModel):
    job_id: str
    next_fire_at: datetime
    late_seconds: float
