"""Metrics and notifications wired onto an engine from settings (used by the lifespan)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI

from app.api.notifications_schemas import (
    DeliveryListRead,
    DeliveryRead,
    NotificationTestCreate,
    NotificationTestRead,
)
from app.domain.errors import ConfigurationError, FieldError
from app.domain.notifications import validate_destination
from app.domain.timeutil import utc_now
from app.engine.engine import NewExecutionEngine
from app.engine.execution_log import ExecutionLog
from app.engine.metrics import EngineMetrics
from app.engine.notifications import (
    AllowedHosts,
    NotificationPolicy,
    Notifier,
    destination_label,
)
from app.engine.notify_delivery import (
    Channel,
    EmailChannel,
    NotificationDispatcher,
    OutboxStore,
    SmtpSettings,
    WebhookChannel,
)
from app.engine.ports import JobStore
from app.engine.schedule_health import ScheduleHealth
from app.settings import Settings

EXECUTION_LOG = ExecutionLog()


@dataclass
class Observability:
    """What the lifespan starts and the routes use."""

    metrics: EngineMetrics
    policy: NotificationPolicy
    notifier: Notifier
    channels: dict[str, Channel]
    outbox: OutboxStore | None
    dispatcher: NotificationDispatcher | None
    health: ScheduleHealth | None

    def start(self) -> None:
        """Start delivering (the engine, and so its store, has started)."""
        if self.dispatcher is not None:
            self.dispatcher.start()

    async def stop(self) -> None:
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        for channel in self.channels.values():
            if isinstance(channel, WebhookChannel):
                await channel.close()

    async def test(self, body: NotificationTestCreate) -> NotificationTestRead:
        """Send a test message to the destination of ``body`` now (not through the outbox);
        ``ConfigurationError`` when it is not exactly one destination this server allows."""
        rule = body.model_dump(mode="json", exclude_none=True)
        errors = validate_destination(rule) or self.policy.rule_errors(rule, "")
        if errors:
            raise ConfigurationError([FieldError(e.field.lstrip("."), e.message) for e in errors])
        channel = "webhook" if "webhook" in rule else "email"
        payload = {
            "event": "test",
            "event_id": uuid.uuid4().hex,
            "occurred_at": utc_now().isoformat(),
            "job": None,
            "execution": None,
            "console_url": None,
        }
        outcome = await self.channels[channel].send(rule[channel], payload)
        return NotificationTestRead(
            delivered=outcome.delivered,
            channel=channel,
            http_status=outcome.http_status,
            error=outcome.error,
        )

    async def delivery_log(
        self, *, execution_id: str | None, job_id: str | None, limit: int
    ) -> DeliveryListRead:
        found = (
            await self.outbox.list_deliveries(execution_id=execution_id, job_id=job_id, limit=limit)
            if self.outbox is not None
            else []
        )
        return DeliveryListRead(
            items=[
                DeliveryRead.of(d, destination_label(d.message.channel, d.message.destination))
                for d in found
            ]
        )


def notification_policy(settings: Settings | None) -> NotificationPolicy:
    """What this server lets jobs notify (none of it without settings)."""
    if settings is None:
        return NotificationPolicy()
    return NotificationPolicy(
        AllowedHosts.parse(settings.webhook_allowed_hosts),
        frozenset(settings.notification_secrets),
        email_enabled=bool(settings.smtp_url),
    )


def schedule_health(engine: NewExecutionEngine, failing_after: int) -> ScheduleHealth | None:
    """The health of ``engine``'s stored jobs (None when its store keeps none)."""
    store = engine.store
    if not isinstance(store, JobStore):
        return None
    return ScheduleHealth(
        store,
        store,
        failing_after=failing_after,
        misfire_grace=engine.misfire_grace,
        clock=engine.now,
        engine_running=lambda: engine.is_running,
    )


def build_observability(engine: NewExecutionEngine, settings: Settings) -> Observability:
    """Observe ``engine`` (before it starts, so that what its start-up recovery records is
    counted and notified) and make the store write the notifications of its state changes."""
    policy = notification_policy(settings)
    allowed = policy.allowed_hosts
    notifier = Notifier(engine.store, engine.live_job, console_url=settings.public_url)
    channels: dict[str, Channel] = {
        "webhook": WebhookChannel(
            allowed, settings.notification_secrets, timeout_seconds=settings.webhook_timeout_seconds
        )
    }
    if settings.smtp_url:
        channels["email"] = EmailChannel(
            SmtpSettings.from_url(settings.smtp_url, settings.smtp_from),
            timeout_seconds=max(settings.webhook_timeout_seconds, 10.0),
        )
    store = engine.store
    health = schedule_health(engine, settings.failing_after)
    outbox = store if isinstance(store, OutboxStore) else None
    dispatcher: NotificationDispatcher | None = None
    metrics = EngineMetrics(
        engine,
        job_label_limit=settings.metrics_job_label_limit,
        heartbeat=(lambda: dispatcher.last_pass if dispatcher is not None else None),
    )
    engine.observers.add(metrics)
    engine.observers.add(EXECUTION_LOG)
    if outbox is not None:
        store.outbox_source = notifier  # type: ignore[attr-defined]
        dispatcher = NotificationDispatcher(
            outbox,
            notifier,
            channels,
            owner=engine.owner,
            running=engine.running_executions,
            poll_interval_seconds=settings.poll_interval_seconds,
            max_attempts=settings.notification_max_attempts,
            retry_seconds=settings.notification_retry_seconds,
            lease_seconds=max(30.0, settings.webhook_timeout_seconds * 4),
            on_attempt=metrics.notification_attempt,
            overdue=(lambda: health.missed_messages(notifier)) if health is not None else None,
            overdue_every_seconds=max(settings.poll_interval_seconds, 1.0),
        )
        engine.observers.add(dispatcher)
    return Observability(metrics, policy, notifier, channels, outbox, dispatcher, health)


@contextlib.asynccontextmanager
async def observability(
    app: FastAPI, engine: NewExecutionEngine, settings: Settings
) -> AsyncIterator[Observability]:
    """``build_observability`` published on ``app.state`` while the context lasts; call
    its ``start`` once the engine has started (and ``stop`` runs before the engine stops)."""
    observed = build_observability(engine, settings)
    app.state.observability = observed
    app.state.metrics = observed.metrics
    app.state.metrics_public = settings.metrics_public
    try:
        yield observed
    finally:
        engine.observers.remove(observed.metrics)
        engine.observers.remove(EXECUTION_LOG)
        if observed.dispatcher is not None:
            engine.observers.remove(observed.dispatcher)
        app.state.metrics = app.state.observability = None
