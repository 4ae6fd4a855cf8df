"""Which notifications a state change raises (``Notifier``, the stores' outbox source), and
whether a job's destinations are allowed on this server (``NotificationPolicy``).

Events: ``success``; ``failure`` (failed or partial_success); ``timeout``; ``cancelled``;
``missed`` (a fire recorded missed or skipped); ``recovered`` (the first success after
failures); ``slow`` (a run past ``slow_after_seconds``, still running or finished).

No alert storms: runs that failed (failed, partial_success, timeout) one after the other form
a streak; a rule sends its ``failure``/``timeout`` notice once per streak, for the run that
makes the streak reach ``min_consecutive_failures`` (default 1). ``recovered`` goes to the
rules whose failure notice went out (the streak before the success reached their minimum).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from app.domain.enums import JobStatus
from app.domain.errors import FieldError
from app.domain.models import JobDefinition, JobExecutionResult
from app.domain.notifications import (
    NotificationRule,
    OutboxMessage,
    delivery_id,
    event_id,
    parse_rules,
)
from app.domain.records import TRIGGER_SCHEDULE, ExecutionQuery
from app.domain.timeutil import iso, utc_now
from app.engine.ports import ExecutionStore

log = logging.getLogger("app.engine.notifications")

FAILING = frozenset({JobStatus.FAILED, JobStatus.PARTIAL_SUCCESS, JobStatus.TIMEOUT})
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# -- server policy ----------------------------------------------------------------------------
@dataclass(frozen=True)
class AllowedHosts:
    """``V2_WEBHOOK_ALLOWED_HOSTS``: host names, IP addresses and CIDR ranges."""

    names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowedHosts:
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.add(entry.lower().rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def __bool__(self) -> bool:
        return bool(self.names or self.networks)

    def address_allowed(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def check_literal(self, host: str) -> str | None:
        """The check of a job's URL as it enters, without resolving names: a listed name
        or an address in a listed range passes; another name passes only when ranges are
        listed (it is resolved and checked at every delivery, ``check``)."""
        name = host.lower().rstrip(".").strip("[]")
        if name in self.names:
            return None
        try:
            ipaddress.ip_address(name)
        except ValueError:
            if self.networks:
                return None
            return f"host {host!r} is not in V2_WEBHOOK_ALLOWED_HOSTS"
        if self.address_allowed(name):
            return None
        return f"address {host!r} is outside V2_WEBHOOK_ALLOWED_HOSTS"

    async def check(self, host: str) -> str | None:
        """None when ``host`` may be called now, else why not. A listed name is allowed;
        any other host is resolved, and every address it resolves to must be listed."""
        name = host.lower().rstrip(".").strip("[]")
        if name in self.names:
            return None
        try:
            ipaddress.ip_address(name)
            addresses = [name]
        except ValueError:
            if not self.networks:
                return f"host {host!r} is not in V2_WEBHOOK_ALLOWED_HOSTS"
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    name, None, type=socket.SOCK_STREAM
                )
            except OSError as exc:
                return f"host {host!r} does not resolve: {exc}"
            addresses = sorted({str(info[4][0]) for info in infos})
        refused = [a for a in addresses if not self.address_allowed(a)]
        if refused:
            return (
                f"host {host!r} resolves to {', '.join(refused)}, outside V2_WEBHOOK_ALLOWED_HOSTS"
            )
        return None


@dataclass(frozen=True)
class NotificationPolicy:
    """What this server allows: webhook hosts, signing secret names, e-mail."""

    allowed_hosts: AllowedHosts = field(default_factory=AllowedHosts)
    secret_names: frozenset[str] = frozenset()
    email_enabled: bool = False

    def errors(self, job: JobDefinition, prefix: str = "") -> list[FieldError]:
        """Every rule of ``job`` this server will not deliver (field paths under
        ``prefix``; the shape was checked by ``job.validate()``). Host names are resolved
        at delivery, not here (no blocking look-up as a request enters)."""
        at = f"{prefix}.notifications" if prefix else "notifications"
        errors: list[FieldError] = []
        for index, rule in enumerate(job.notifications or ()):
            errors.extend(self.rule_errors(rule, f"{at}[{index}]"))
        return errors

    def rule_errors(self, rule: dict[str, Any], at: str) -> list[FieldError]:
        errors: list[FieldError] = []
        webhook = rule.get("webhook")
        if isinstance(webhook, dict):
            host = _hostname(str(webhook.get("url", "")))
            if not self.allowed_hosts:
                errors.append(
                    FieldError(
                        f"{at}.webhook.url", "webhooks are off: V2_WEBHOOK_ALLOWED_HOSTS is empty"
                    )
                )
            elif (why := self.allowed_hosts.check_literal(host)) is not None:
                errors.append(FieldError(f"{at}.webhook.url", why))
            secret = webhook.get("secret_name")
            if secret is not None and secret not in self.secret_names:
                errors.append(
                    FieldError(
                        f"{at}.webhook.secret_name",
                        f"unknown secret {secret!r} (not in V2_NOTIFICATION_SECRETS)",
                    )
                )
        if rule.get("email") is not None and not self.email_enabled:
            errors.append(FieldError(f"{at}.email", "e-mail is off: V2_SMTP_URL is not set"))
        return errors


# -- the outbox source ------------------------------------------------------------------------
class Notifier:
    """Turns state changes into outbox messages (``OutboxSource`` of the stores)."""

    def __init__(
        self,
        store: ExecutionStore,
        live_job: Callable[[str], JobDefinition | None],
        *,
        console_url: str | None = None,  # the service's base URL (the console is /ui)
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._live_job = live_job
        self._console_url = console_url.rstrip("/") if console_url else None
        self._clock = clock

    async def finished(self, result: JobExecutionResult) -> list[OutboxMessage]:
        job = self._live_job(result.execution_id)
        if job is None:
            return []
        return await self.ended(job, result)

    async def ended(self, job: JobDefinition, result: JobExecutionResult) -> list[OutboxMessage]:
        if not job.notifications or not result.status.is_terminal:
            return []
        rules = parse_rules(job.notifications)
        streak = 0
        if any(r.on & {"failure", "timeout", "recovered"} for r in rules):
            depth = max(r.min_consecutive_failures for r in rules) + 1
            streak = await self.previous_failures(job.job_id, result.execution_id, depth)
        failures = streak + 1 if result.status in FAILING else streak
        extra = {"consecutive_failures": failures}
        messages = []
        for rule in rules:
            for event in _events(rule, result, streak):
                messages.append(self._message(event, rule, job, result, extra))
        return messages

    def missed(
        self,
        job: JobDefinition,
        execution_id: str,
        scheduled_for: datetime | None,
        reason: str,
        status: JobStatus,
    ) -> list[OutboxMessage]:
        result = JobExecutionResult(
            execution_id=execution_id,
            job_id=job.job_id,
            job_name=job.job_name,
            status=status,
            timezone=job.timezone,
            error_message=reason,
            metadata={
                "trigger": TRIGGER_SCHEDULE,
                "scheduled_for": iso(scheduled_for),
            },
        )
        return [
            self._message("missed", rule, job, result, {"reason": reason})
            for rule in parse_rules(job.notifications)
            if "missed" in rule.on
        ]

    def slow(self, job: JobDefinition, result: JobExecutionResult) -> list[OutboxMessage]:
        """Messages for a run still running past a rule's ``slow_after_seconds``."""
        if not job.notifications or result.start_time is None:
            return []
        running = (self._clock() - result.start_time).total_seconds()
        return [
            self._message("slow", rule, job, result, {"running_seconds": running})
            for rule in parse_rules(job.notifications)
            if "slow" in rule.on
            and rule.slow_after_seconds is not None
            and running > rule.slow_after_seconds
        ]

    def overdue(
        self, job: JobDefinition, next_fire_at: datetime, reason: str
    ) -> list[OutboxMessage]:
        """``missed`` messages of a schedule that stopped firing (once per due instant)."""
        subject = f"{job.job_id}@{next_fire_at.isoformat()}"
        result = JobExecutionResult(
            execution_id=subject,
            job_id=job.job_id,
            job_name=job.job_name,
            status=JobStatus.PENDING,
            timezone=job.timezone,
            error_message=reason,
            metadata={"trigger": TRIGGER_SCHEDULE, "scheduled_for": next_fire_at.isoformat()},
        )
        messages = [
            self._message("missed", rule, job, result, {"reason": reason})
            for rule in parse_rules(job.notifications)
            if "missed" in rule.on
        ]
        for message in messages:
            message.execution_id = None
            message.payload["execution"]["execution_id"] = None
        return messages

    async def previous_failures(self, job_id: str, execution_id: str, depth: int) -> int:
        """How many runs of ``job_id`` before ``execution_id`` failed one after the other
        (cancelled runs and runs still going are passed over), counting up to ``depth``."""
        page = await self._store.list_executions(ExecutionQuery(job_id=job_id, limit=depth + 20))
        count = 0
        for item in page.items:
            if item.execution_id == execution_id or not item.status.is_terminal:
                continue
            if item.status is JobStatus.CANCELLED:
                continue
            if item.status not in FAILING:
                break
            count += 1
            if count >= depth:
                break
        return count

    def _message(
        self,
        event: str,
        rule: NotificationRule,
        job: JobDefinition,
        result: JobExecutionResult,
        extra: dict[str, Any],
    ) -> OutboxMessage:
        eid = event_id(result.execution_id, event)
        payload = {
            "event": event,
            "event_id": eid,
            "occurred_at": self._clock().isoformat(),
            "job": {"job_id": job.job_id, "job_name": job.job_name, "timezone": job.timezone},
            "execution": execution_summary(result),
            "console_url": self.console_link(result.execution_id),
            **extra,
        }
        return OutboxMessage(
            delivery_id=delivery_id(eid, rule.key),
            event_id=eid,
            event=event,
            channel=rule.channel,
            destination=rule.destination,
            job_id=job.job_id,
            execution_id=result.execution_id,
            payload=payload,
        )

    def console_link(self, execution_id: str) -> str | None:
        if self._console_url is None:
            return None
        return f"{self._console_url}/ui/executions/{execution_id}"


def _events(rule: NotificationRule, result: JobExecutionResult, previous: int) -> list[str]:
    status, on = result.status, rule.on
    events = []
    if status is JobStatus.SUCCESS:
        if "success" in on:
            events.append("success")
        if "recovered" in on and previous >= rule.min_consecutive_failures:
            events.append("recovered")
    elif status in FAILING:
        event = "timeout" if status is JobStatus.TIMEOUT else "failure"
        if event in on and previous + 1 == rule.min_consecutive_failures:
            events.append(event)
    elif status is JobStatus.CANCELLED and "cancelled" in on:
        events.append("cancelled")
    slow = rule.slow_after_seconds
    if "slow" in on and slow is not None and result.duration_seconds > slow:
        events.append("slow")
    return events


def execution_summary(result: JobExecutionResult) -> dict[str, Any]:
    """The facts of an execution a notification carries (the first failed step too)."""
    failed = next((s for s in result.steps if s.status.is_failure), None)
    return {
        "execution_id": result.execution_id,
        "status": result.status.value,
        "trigger": result.metadata.get("trigger"),
        "scheduled_for": result.metadata.get("scheduled_for"),
        "start_time": iso(result.start_time),
        "end_time": iso(result.end_time),
        "duration_seconds": result.duration_seconds,
        "retry_count": result.retry_count,
        "error_message": result.error_message,
        "failed_step": None
        if failed is None
        else {
            "step_id": failed.step_id,
            "step_name": failed.step_name,
            "step_type": failed.step_type,
            "status": failed.status.value,
            "error_message": failed.error_message,
        },
    }


def _hostname(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def destination_label(channel: str, destination: dict[str, Any]) -> str:
    """The destination in a log line (a URL without its query, or the recipients)."""
    if channel == "webhook":
        parts = urlsplit(str(destination.get("url", "")))
        return f"{parts.scheme}://{parts.netloc}{parts.path}"
    return ", ".join(str(a) for a in destination.get("to", ()))


__all__: Sequence[str] = (
    "AllowedHosts",
    "NotificationPolicy",
    "Notifier",
    "destination_label",
    "execution_summary",
)
