"""``/api/v2/notifications``: the delivery log and a test message to a destination."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request

from app.api.errors import problem_responses
from app.api.notifications_schemas import (
    DeliveryListRead,
    NotificationTestCreate,
    NotificationTestRead,
)
from app.api.observability import Observability
from app.api.queries import NoQuery, NotificationListQuery
from app.api.responses import operation_id
from app.api.security import AdminKey, ReadKey
from app.domain.errors import EngineNotRunningError

notifications_router = APIRouter(
    prefix="/api/v2/notifications", tags=["notifications"], generate_unique_id_function=operation_id
)


async def get_observability(request: Request) -> Observability:
    """The app's metrics and notifications; 503 before startup or after shutdown."""
    observed: Observability | None = getattr(request.app.state, "observability", None)
    if observed is None:
        raise EngineNotRunningError("the service is not started")
    return observed


ObservabilityDep = Annotated[Observability, Depends(get_observability)]


@notifications_router.get(
    "",
    summary="Notification delivery log",
    description="Every notification raised (one per event and destination), newest first, "
    "with its delivery state: `pending` (its next attempt at `next_attempt_at`), "
    "`delivered` or `failed`; the number of attempts, the last error and HTTP status.",
    response_model=DeliveryListRead,
    response_description="The deliveries.",
    responses=problem_responses(400, 500, 503),
)
async def list_notifications(
    _: ReadKey,
    observed: ObservabilityDep,
    query: NotificationListQuery,
) -> DeliveryListRead:
    return await observed.delivery_log(
        execution_id=query.execution_id, job_id=query.job_id, limit=query.limit
    )


@notifications_router.post(
    "/test",
    summary="Send a test notification",
    description="Sends a test message (`event: test`) to one destination now, as a rule "
    "would (same allowed hosts, signature and SMTP settings), and answers with the outcome. "
    "**400** when the destination is not allowed on this server.",
    response_model=NotificationTestRead,
    response_description="Whether the destination accepted it.",
    responses=problem_responses(400, 413, 500, 503),
)
async def send_test_notification(
    body: Annotated[
        NotificationTestCreate,
        Body(
            openapi_examples={
                "webhook": {
                    "summary": "A signed webhook",
                    "value": {
                        "webhook": {"url": "https://hooks.example/ops", "secret_name": "ops-hook"}
                    },
                },
                "email": {
                    "summary": "An e-mail (needs V2_SMTP_URL)",
                    "value": {"email": {"to": ["dba@example.com"]}},
                },
            }
        ),
    ],
    _: AdminKey,
    observed: ObservabilityDep,
    query: NoQuery,
) -> NotificationTestRead:
    return await observed.test(body)
