"""Delivering the notification outbox: the webhook and e-mail channels and the loop that claims
due rows, sends them and records every attempt.

* Webhook: an HTTP POST of the message's JSON body (``httpx``), short timeouts, no redirects,
  signed with ``X-JobScheduler-Signature: sha256=<hex HMAC-SHA256 of the body>`` when the
  rule names a secret of ``V2_NOTIFICATION_SECRETS``. The host is checked against
  ``V2_WEBHOOK_ALLOWED_HOSTS`` right before each attempt, after resolving it.
* E-mail: ``aiosmtplib`` to ``V2_SMTP_URL`` (``smtp://`` with STARTTLS when the server
  offers it, ``?starttls=required`` to insist; ``smtps://`` for TLS from the start; user and
  password in the URL), a plain-text body with the same facts.
* A failed attempt is retried with exponential back-off and jitter (``retry_seconds``
  times 2^attempt times 0.5..1.5) up to ``max_attempts``; answers that cannot get better
  (a 4xx other than 408/429, a host not allowed, an unknown secret) fail at once.
* Rows are claimed with a lease, so one node delivers each; a node that dies mid-delivery
  leaves a lease that expires, and the row is delivered again with the same ``event_id``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
import httpx

from app.domain.models import JobDefinition, JobExecutionResult
from app.domain.notifications import (
    DELIVERY_DELIVERED,
    DELIVERY_FAILED,
    DELIVERY_PENDING,
    Delivery,
    OutboxMessage,
)
from app.engine.notifications import AllowedHosts, Notifier, destination_label
from app.engine.observers import FinishedRun, UnrunFire

log = logging.getLogger("app.engine.notifications")

SIGNATURE_HEADER = "X-JobScheduler-Signature"
MAX_RETRY_SECONDS = 3600.0


@runtime_checkable
class OutboxStore(Protocol):
    """The outbox part of a store (both stores implement it)."""

    async def add_outbox_messages(self, messages: Sequence[OutboxMessage]) -> None: ...

    async def claim_outbox(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[Delivery]: ...

    async def settle_outbox(
        self,
        delivery_id: str,
        owner: str,
        *,
        status: str,
        error: str | None,
        http_status: int | None,
        retry_in_seconds: float | None,
    ) -> bool: ...

    async def list_deliveries(
        self, *, execution_id: str | None = None, job_id: str | None = None, limit: int = 100
    ) -> list[Delivery]: ...


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    error: str | None = None
    http_status: int | None = None
    retry: bool = True  # worth another attempt


def signature(secret: str, body: bytes) -> str:
    """The ``X-JobScheduler-Signature`` value of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_body(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


class WebhookChannel:
    def __init__(
        self,
        allowed: AllowedHosts,
        secrets: Mapping[str, str],
        *,
        timeout_seconds: float = 5.0,
    ) -> None:
        self._allowed = allowed
        self._secrets = dict(secrets)
        self._timeout = timeout_seconds
        self._client: httpx.AsyncClient | None = None

    async def send(self, destination: Mapping[str, Any], payload: Mapping[str, Any]) -> Outcome:
        url = str(destination.get("url", ""))
        try:
            host = urlsplit(url).hostname or ""
        except ValueError:
            return Outcome(False, f"not a valid URL: {url!r}", retry=False)
        why = await self._allowed.check(host)
        if why is not None:
            return Outcome(False, why, retry=False)
        body = webhook_body(payload)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "jobscheduler-v2",
            "X-JobScheduler-Event": str(payload.get("event", "")),
            "X-JobScheduler-Event-Id": str(payload.get("event_id", "")),
        }
        secret_name = destination.get("secret_name")
        if secret_name is not None:
            secret = self._secrets.get(str(secret_name))
            if secret is None:
                return Outcome(False, f"unknown secret {secret_name!r}", retry=False)
            headers[SIGNATURE_HEADER] = signature(secret, body)
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout), follow_redirects=False, trust_env=False
            )
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.TimeoutException:
            return Outcome(False, f"timed out after {self._timeout:g}s")
        except httpx.HTTPError as exc:
            return Outcome(False, f"{type(exc).__name__}: {exc}"[:500])
        if 200 <= response.status_code < 300:
            return Outcome(True, http_status=response.status_code)
        permanent = 400 <= response.status_code < 500 and response.status_code not in (408, 429)
        return Outcome(
            False,
            f"HTTP {response.status_code}",
            http_status=response.status_code,
            retry=not permanent,
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


@dataclass(frozen=True)
class SmtpSettings:
    hostname: str
    port: int
    use_tls: bool
    start_tls: bool | None
    username: str | None
    password: str | None
    sender: str

    @classmethod
    def from_url(cls, url: str, sender: str) -> SmtpSettings:
        """``smtp://[user:password@]host[:port][?starttls=required]`` or ``smtps://...``;
        ``ValueError`` for anything else."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("must be smtp://host[:port] or smtps://host[:port]")
        query = parse_qs(parts.query)
        starttls = (query.get("starttls") or [""])[0].lower()
        if starttls not in ("", "required", "off"):
            raise ValueError("starttls must be 'required' or 'off'")
        use_tls = parts.scheme == "smtps"
        return cls(
            hostname=parts.hostname,
            port=parts.port or (465 if use_tls else 25),
            use_tls=use_tls,
            start_tls=None if use_tls else {"": None, "required": True, "off": False}[starttls],
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            sender=sender,
        )


class EmailChannel:
    def __init__(self, smtp: SmtpSettings, *, timeout_seconds: float = 10.0) -> None:
        self._smtp = smtp
        self._timeout = timeout_seconds

    async def send(self, destination: Mapping[str, Any], payload: Mapping[str, Any]) -> Outcome:
        message = email_message(payload, self._smtp.sender, list(destination.get("to", ())))
        smtp = self._smtp
        try:
            await aiosmtplib.send(
                message,
                hostname=smtp.hostname,
                port=smtp.port,
                username=smtp.username,
                password=smtp.password,
                use_tls=smtp.use_tls,
                start_tls=smtp.start_tls,
                timeout=self._timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            return Outcome(False, f"recipients refused: {exc}"[:500], retry=False)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return Outcome(False, f"{type(exc).__name__}: {exc}"[:500])
        return Outcome(True)


def email_message(payload: Mapping[str, Any], sender: str, to: Sequence[str]) -> EmailMessage:
    """A plain-text message with the facts of the webhook body; the subject names the
    job, the event and the status."""
    job = payload.get("job") or {}
    execution = payload.get("execution") or {}
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = (
        f"[jobscheduler] {job.get('job_name')} ({job.get('job_id')}): "
        f"{payload.get('event')} - {execution.get('status')}"
    )
    message["X-JobScheduler-Event-Id"] = str(payload.get("event_id", ""))
    lines = [
        f"Event:      {payload.get('event')}",
        f"Event id:   {payload.get('event_id')}",
        f"Job:        {job.get('job_name')} ({job.get('job_id')}, {job.get('timezone')})",
        f"Execution:  {execution.get('execution_id')}",
        f"Status:     {execution.get('status')}",
        f"Trigger:    {execution.get('trigger')}",
        f"Scheduled:  {execution.get('scheduled_for')}",
        f"Started:    {execution.get('start_time')}",
        f"Ended:      {execution.get('end_time')}",
        f"Duration:   {execution.get('duration_seconds')}s",
        f"Error:      {execution.get('error_message')}",
    ]
    failed = execution.get("failed_step")
    if failed:
        lines.append(
            f"Failed step: {failed.get('step_id')} ({failed.get('step_type')}) "
            f"{failed.get('status')}: {failed.get('error_message')}"
        )
    if payload.get("reason"):
        lines.append(f"Reason:     {payload.get('reason')}")
    if payload.get("console_url"):
        lines.append(f"Console:    {payload.get('console_url')}")
    message.set_content("\n".join(lines) + "\n")
    return message


class Channel(Protocol):
    async def send(self, destination: Mapping[str, Any], payload: Mapping[str, Any]) -> Outcome: ...


class NotificationDispatcher:
    """Claims due outbox rows, delivers them and records each attempt; an ``EngineObserver``
    (an ended execution or a fire not run wakes it at once)."""

    def __init__(
        self,
        store: OutboxStore,
        notifier: Notifier,
        channels: Mapping[str, Channel],
        *,
        owner: str,
        running: Callable[[], Iterable[tuple[JobDefinition, JobExecutionResult]]] = list,
        poll_interval_seconds: float = 1.0,
        max_attempts: int = 8,
        retry_seconds: float = 2.0,
        lease_seconds: float = 60.0,
        batch_size: int = 50,
        on_attempt: Callable[[str, str], None] | None = None,
        overdue: Callable[[], Awaitable[list[OutboxMessage]]] | None = None,
        overdue_every_seconds: float = 1.0,
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._channels = dict(channels)
        self._owner = owner
        self._running = running
        self._poll = poll_interval_seconds
        self._max_attempts = max_attempts
        self._retry = retry_seconds
        self._lease = lease_seconds
        self._batch = batch_size
        self._on_attempt = on_attempt
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._overdue = overdue
        self._overdue_every = overdue_every_seconds
        self._overdue_checked = float("-inf")
        self._raised: set[str] = set()  # slow and overdue messages already in the outbox
        #: Unix time of the last pass that reached the store (the node's heartbeat).
        self.last_pass: float | None = None

    # -- EngineObserver --------------------------------------------------------------------
    def execution_finished(self, run: FinishedRun) -> None:
        self._wake.set()

    def fire_not_run(self, fire: UnrunFire) -> None:
        self._wake.set()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run_forever(), name="notification-dispatcher")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(10):
                    await asyncio.shield(self._task)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def notify(self) -> None:
        self._wake.set()

    async def _run_forever(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                await self._raise_unprompted()
                count = await self.deliver_due()
                failures = 0
            except Exception as exc:  # a database fault: back off and carry on
                failures += 1
                log.warning("notification outbox pass failed (%s: %s)", type(exc).__name__, exc)
                count = 0
            if count >= self._batch:
                continue
            self._wake.clear()
            try:
                delay = self._poll * min(2**failures, 30)
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def deliver_due(self) -> int:
        """One pass: claim what is due and deliver it; returns how many were claimed."""
        claimed = await self._store.claim_outbox(self._owner, self._batch, self._lease)
        self.last_pass = time.time()
        if claimed:
            await asyncio.gather(*(self._deliver(d) for d in claimed))
        return len(claimed)

    async def _deliver(self, delivery: Delivery) -> None:
        message = delivery.message
        channel = self._channels.get(message.channel)
        attempt = delivery.attempts + 1
        if channel is None:
            outcome = Outcome(False, f"channel {message.channel} is not configured", retry=False)
        else:
            try:
                outcome = await channel.send(message.destination, message.payload)
            except Exception as exc:  # a bug in a channel must not stop the loop
                log.exception("notification %s: the channel raised", message.delivery_id)
                outcome = Outcome(False, f"internal error: {type(exc).__name__}: {exc}")
        if outcome.delivered:
            status, retry_in, result = DELIVERY_DELIVERED, None, "delivered"
        elif outcome.retry and attempt < self._max_attempts:
            status, result = DELIVERY_PENDING, "retry"
            retry_in = min(self._retry * 2 ** (attempt - 1), MAX_RETRY_SECONDS)
            retry_in *= 0.5 + random.random()  # jitter: retries of many rows spread out
        else:
            status, retry_in, result = DELIVERY_FAILED, None, "failed"
        log.info(
            "notification %s event=%s event_id=%s job_id=%s execution_id=%s channel=%s to=%s "
            "attempt=%d result=%s%s%s",
            message.delivery_id,
            message.event,
            message.event_id,
            message.job_id,
            message.execution_id,
            message.channel,
            destination_label(message.channel, message.destination),
            attempt,
            result,
            f" http_status={outcome.http_status}" if outcome.http_status is not None else "",
            f" error={outcome.error!r}" if outcome.error else "",
            extra={
                "delivery_id": message.delivery_id,
                "event": message.event,
                "event_id": message.event_id,
                "job_id": message.job_id,
                "execution_id": message.execution_id,
                "channel": message.channel,
                "attempt": attempt,
                "result": result,
                "http_status": outcome.http_status,
                "error": outcome.error,
            },
        )
        if self._on_attempt is not None:
            self._on_attempt(message.channel, result)
        await self._store.settle_outbox(
            message.delivery_id,
            self._owner,
            status=status,
            error=outcome.error,
            http_status=outcome.http_status,
            retry_in_seconds=retry_in,
        )

    async def _raise_unprompted(self) -> None:
        """Outbox rows no state change writes: runs still running past a rule's
        ``slow_after_seconds``, and (every ``overdue_every_seconds``) overdue schedules."""
        messages = [m for job, result in self._running() for m in self._notifier.slow(job, result)]
        now = time.monotonic()
        if self._overdue is not None and now - self._overdue_checked >= self._overdue_every:
            self._overdue_checked = now
            messages.extend(await self._overdue())
        fresh = [m for m in messages if m.delivery_id not in self._raised]
        if fresh:
            await self._store.add_outbox_messages(fresh)
            if len(self._raised) > 100_000:
                self._raised.clear()  # a repeat is ignored by the outbox anyway
            self._raised.update(m.delivery_id for m in fresh)
            self._wake.set()
