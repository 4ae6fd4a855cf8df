"""Notification rules of a job (``JobDefinition.notifications``) and the messages they raise.

A rule names the events it fires on and exactly one destination::

    {"on": ["failure", "timeout", "missed"],
     "webhook": {"url": "https://hooks.example/ops", "secret_name": "ops-hook"}}
    {"on": ["failure", "recovered"], "email": {"to": ["dba@example.com"]},
     "min_consecutive_failures": 3}
    {"on": ["slow"], "slow_after_seconds": 900, "webhook": {"url": "..."}}

``validate_notifications`` checks the shape (pure); whether a destination is allowed on this
server (hosts, secret names, SMTP) is checked by the engine's notification policy.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from app.domain.errors import FieldError

if TYPE_CHECKING:
    from app.domain.enums import JobStatus
    from app.domain.models import JobDefinition, JobExecutionResult

EVENTS = ("success", "failure", "timeout", "cancelled", "missed", "recovered", "slow")
CHANNELS = ("webhook", "email")
MAX_RULES = 20
MAX_RECIPIENTS = 50
MAX_URL_LENGTH = 2000
RULE_FIELDS = frozenset({"on", "min_consecutive_failures", "slow_after_seconds", *CHANNELS})

#: uuid5 namespace of event ids and delivery ids.
_NAMESPACE = uuid.UUID("6c1d8f0e-2b4a-4f39-9d57-0a8e3c5b7f21")


@dataclass(frozen=True)
class NotificationRule:
    on: frozenset[str]
    channel: str
    destination: dict[str, Any]
    min_consecutive_failures: int = 1
    slow_after_seconds: float | None = None

    @property
    def key(self) -> str:
        """Identifies the destination (one delivery per event and destination)."""
        if self.channel == "webhook":
            return f"webhook:{self.destination['url']}"
        return "email:" + ",".join(sorted(self.destination["to"]))


@dataclass
class OutboxMessage:
    """One event to deliver to one destination, written with the state change causing it."""

    delivery_id: str
    event_id: str
    event: str
    channel: str
    destination: dict[str, Any]
    job_id: str
    execution_id: str | None
    payload: dict[str, Any] = field(default_factory=dict)


#: States of a delivery.
DELIVERY_PENDING = "pending"  # to deliver (again) at next_attempt_at
DELIVERY_DELIVERED = "delivered"
DELIVERY_FAILED = "failed"  # gave up: attempts spent, or the destination is not allowed


@dataclass
class Delivery:
    """An outbox row: the message and the log of its delivery attempts."""

    message: OutboxMessage
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    last_http_status: int | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None


class OutboxSource(Protocol):
    """What a store asks, inside the write of a state change, for the messages it raises."""

    async def finished(self, result: JobExecutionResult) -> list[OutboxMessage]:
        """Messages of an execution's terminal state (before its final row is written)."""

    async def ended(self, job: JobDefinition, result: JobExecutionResult) -> list[OutboxMessage]:
        """Messages of ``result`` ending so (an execution settled at recovery)."""

    def missed(
        self,
        job: JobDefinition,
        execution_id: str,
        scheduled_for: datetime | None,
        reason: str,
        status: JobStatus,
    ) -> list[OutboxMessage]:
        """Messages of a fire recorded without running (no I/O: it runs in a transaction)."""


def event_id(subject: str, event: str) -> str:
    """Stable id of ``event`` about ``subject`` (an execution id): the same on every retry
    and every node, so a receiver can drop a repeat."""
    return uuid.uuid5(_NAMESPACE, f"{subject}/{event}").hex


def delivery_id(event: str, destination_key: str) -> str:
    return uuid.uuid5(_NAMESPACE, f"{event}/{destination_key}").hex


def parse_rules(value: Any) -> list[NotificationRule]:
    """Rules of a validated ``notifications`` list (``validate_notifications`` passed)."""
    rules = []
    for item in value or ():
        channel = next(c for c in CHANNELS if item.get(c) is not None)
        destination = dict(item[channel])
        if channel == "email":
            destination["to"] = list(destination["to"])
        rules.append(
            NotificationRule(
                on=frozenset(item["on"]),
                channel=channel,
                destination=destination,
                min_consecutive_failures=int(item.get("min_consecutive_failures", 1)),
                slow_after_seconds=(
                    float(item["slow_after_seconds"])
                    if item.get("slow_after_seconds") is not None
                    else None
                ),
            )
        )
    return rules


def validate_notifications(value: Any, prefix: str = "notifications") -> list[FieldError]:
    """Every problem of the shape of a ``notifications`` list."""
    if value is None:
        return []
    if not isinstance(value, list):
        return [FieldError(prefix, "must be a list of notification rules")]
    if len(value) > MAX_RULES:
        return [FieldError(prefix, f"at most {MAX_RULES} rules")]
    errors: list[FieldError] = []
    for index, rule in enumerate(value):
        errors.extend(_rule_errors(rule, f"{prefix}[{index}]"))
    return errors


def validate_destination(rule: dict[str, Any], at: str = "") -> list[FieldError]:
    """Problems of the one destination (``webhook`` or ``email``) of ``rule``."""
    channels = [c for c in CHANNELS if rule.get(c) is not None]
    if len(channels) != 1:
        return [FieldError(at, "must have exactly one of 'webhook' or 'email'")]
    where = f"{at}.{channels[0]}" if at else channels[0]
    if channels[0] == "webhook":
        return _webhook_errors(rule["webhook"], where)
    return _email_errors(rule["email"], where)


def _rule_errors(rule: Any, at: str) -> list[FieldError]:
    if not isinstance(rule, dict):
        return [FieldError(at, "must be an object")]
    errors = [FieldError(f"{at}.{k}", "unknown field") for k in sorted(set(rule) - RULE_FIELDS)]
    on = rule.get("on")
    if not isinstance(on, list) or not on:
        errors.append(FieldError(f"{at}.on", f"must be a non-empty list of: {', '.join(EVENTS)}"))
    else:
        for i, event in enumerate(on):
            if event not in EVENTS:
                errors.append(
                    FieldError(
                        f"{at}.on[{i}]", f"unknown event {event!r} (one of {', '.join(EVENTS)})"
                    )
                )
    errors.extend(validate_destination(rule, at))
    count = rule.get("min_consecutive_failures", 1)
    if not _is_int(count) or not 1 <= count <= 1000:
        errors.append(
            FieldError(f"{at}.min_consecutive_failures", "must be an integer from 1 to 1000")
        )
    slow = rule.get("slow_after_seconds")
    uses_slow = isinstance(on, list) and "slow" in on
    if slow is not None and (not _is_number(slow) or slow <= 0):
        errors.append(FieldError(f"{at}.slow_after_seconds", "must be a number > 0"))
    elif uses_slow and slow is None:
        errors.append(FieldError(f"{at}.slow_after_seconds", "is required for the 'slow' event"))
    elif slow is not None and not uses_slow:
        errors.append(
            FieldError(f"{at}.slow_after_seconds", "is only used with the 'slow' event in 'on'")
        )
    return errors


def _webhook_errors(webhook: Any, at: str) -> list[FieldError]:
    if not isinstance(webhook, dict):
        return [FieldError(at, "must be an object with 'url' (and 'secret_name')")]
    errors = [
        FieldError(f"{at}.{k}", "unknown field")
        for k in sorted(set(webhook) - {"url", "secret_name"})
    ]
    url = webhook.get("url")
    if not isinstance(url, str) or not url:
        errors.append(FieldError(f"{at}.url", "is required"))
    elif len(url) > MAX_URL_LENGTH:
        errors.append(FieldError(f"{at}.url", f"must be at most {MAX_URL_LENGTH} characters"))
    else:
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            return [*errors, FieldError(f"{at}.url", "is not a valid URL")]
        if parts.scheme not in ("http", "https") or not host:
            errors.append(FieldError(f"{at}.url", "must be an http:// or https:// URL with a host"))
        elif parts.username or parts.password:
            errors.append(
                FieldError(f"{at}.url", "must not carry credentials (use secret_name to sign)")
            )
    secret = webhook.get("secret_name")
    if secret is not None and (not isinstance(secret, str) or not secret):
        errors.append(FieldError(f"{at}.secret_name", "must be a non-empty string"))
    return errors


def _email_errors(email: Any, at: str) -> list[FieldError]:
    if not isinstance(email, dict):
        return [FieldError(at, "must be an object with 'to'")]
    errors = [FieldError(f"{at}.{k}", "unknown field") for k in sorted(set(email) - {"to"})]
    to = email.get("to")
    if not isinstance(to, list) or not to or len(to) > MAX_RECIPIENTS:
        errors.append(
            FieldError(f"{at}.to", f"must be a list of 1 to {MAX_RECIPIENTS} e-mail addresses")
        )
        return errors
    for i, address in enumerate(to):
        if (
            not isinstance(address, str)
            or len(address) > 254
            or address.count("@") != 1
            or any(c in address for c in " \r\n<>,;")
            or not all(address.split("@"))
        ):
            errors.append(FieldError(f"{at}.to[{i}]", "is not an e-mail address"))
    return errors


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
