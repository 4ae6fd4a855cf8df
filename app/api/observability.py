"""Metrics and notifications wired onto an engine from settings (used by the lifespan)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from app.domain.notifications import Delivery
from app.engine.engine import NewExecutionEngine
from app.engine.metrics import EngineMetrics
from app.engine.notifications import AllowedHosts, NotificationPolicy, Notifier
from app.engine.notify_delivery import (
    Channel,
    EmailChannel,
    NotificationDispatcher,
    OutboxStore,
    Outcome,
    SmtpSettings,
    WebhookChannel,
)
from app.engine.ports import JobStore
from app.engine.schedule_health import ScheduleHealth
from app.settings import Settings


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

    async def send_test(self, channel: str, destination: dict[str, Any]) -> Outcome:
        """Send a test message to one destination now (not through the outbox)."""
        sender = self.channels.get(channel)
        if sender is None:
            return Outcome(False, f"{channel} is not configured on this server", retry=False)
        payload = {
            "event": "test",
            "event_id": "test",
            "job": {"job_id": "test", "job_name": "Test notification", "timezone": "UTC"},
            "execution": None,
            "console_url": None,
        }
        return await sender.send(destination, payload)

    async def deliveries(
        self, *, execution_id: str | None, job_id: str | None, limit: int
    ) -> list[Delivery]:
        if self.outbox is None:
            return []
        return await self.outbox.list_deliveries(
            execution_id=execution_id, job_id=job_id, limit=limit
        )


def build_observability(engine: NewExecutionEngine, settings: Settings) -> Observability:
    """Observe ``engine`` (before it starts, so that what its start-up recovery records is
    counted and notified) and make the store write the notifications of its state changes."""
    allowed = AllowedHosts.parse(settings.webhook_allowed_hosts)
    policy = NotificationPolicy(
        allowed, frozenset(settings.notification_secrets), email_enabled=bool(settings.smtp_url)
    )
    notifier = Notifier(engine.store, engine.live_job, console_url=settings.console_url)
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
    health = None
    if isinstance(store, JobStore):
        health = ScheduleHealth(
            store,
            store,
            failing_after=settings.failing_after,
            misfire_grace=engine.misfire_grace,
            clock=engine.now,
            engine_running=lambda: engine.is_running,
        )
    outbox = store if isinstance(store, OutboxStore) else None
    dispatcher: NotificationDispatcher | None = None
    metrics = EngineMetrics(
        engine,
        job_label_limit=settings.metrics_job_label_limit,
        heartbeat=(lambda: dispatcher.last_pass if dispatcher is not None else None),
    )
    engine.observers.add(metrics)
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
        if observed.dispatcher is not None:
            engine.observers.remove(observed.dispatcher)
        app.state.metrics = app.state.observability = None
