"""Records the execution store keeps, shared by the engine's port and every store adapter.

``ScheduledRun``, ``ExecutionQuery`` and ``ExecutionPage`` travel between the engine and a
store; the helpers below are the parts of the store contract that every backend applies
the same way (cursor format, text sanitising, output cap), so the in-memory store and the
database store give identical answers.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from app.domain.enums import JobStatus, Trigger
from app.domain.errors import ConfigurationError, FieldError, SchedulingError
from app.domain.models import (
    AttemptRecord,
    JobDefinition,
    JobExecutionResult,
    StepExecutionResult,
)
from app.domain.timeutil import parse_iso

#: How an execution came to be (see ``Trigger``).
TRIGGER_NOW = Trigger.NOW
TRIGGER_QUEUED = Trigger.QUEUED
TRIGGER_SCHEDULED = Trigger.SCHEDULED
TRIGGER_SCHEDULE = Trigger.SCHEDULE
TRIGGER_BACKFILL = Trigger.BACKFILL

#: Output kept per step; longer output is cut and flagged (``output_truncated``).
DEFAULT_MAX_OUTPUT_CHARS = 1_000_000

#: Error recorded on a scheduled run cancelled before it started.
CANCELLED_BEFORE_START = "cancelled before it started"


@dataclass
class ScheduledRun:
    """A run waiting for its time (durable: it lives in the store, not only in memory).

    ``attempt`` counts claims: a store increments it each time the run is claimed, so a
    completion can be fenced on (execution_id, attempt, owner).
    """

    execution_id: str
    job: JobDefinition
    scheduled_for: datetime
    trigger: str = TRIGGER_SCHEDULED
    attempt: int = 0
    requested_by: str | None = None
    #: Keyed by (job_id, scheduled_for): at most one such run per fire. Default: the runs
    #: a recurring schedule fires; a backfill's new runs are keyed too, its re-runs not.
    keyed: bool | None = None
    #: Starts the execution's metadata (e.g. ``retry_of`` for a recovery retry).
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def timezone(self) -> str:
        return self.job.timezone

    @property
    def fire_key(self) -> datetime | None:
        """``scheduled_for`` when the run is keyed by its fire, else None."""
        keyed = self.trigger == TRIGGER_SCHEDULE if self.keyed is None else self.keyed
        return self.scheduled_for if keyed else None


@dataclass
class ExecutionQuery:
    """Filters for listing executions, newest first; ``cursor`` is an opaque page cursor.

    ``started_after`` is inclusive and ``started_before`` exclusive; executions that have
    not started (no ``start_time``) never match a time filter.
    """

    job_id: str | None = None
    status: JobStatus | None = None
    timezone: str | None = None
    started_after: datetime | None = None
    started_before: datetime | None = None
    limit: int = 50
    cursor: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExecutionPage:
    items: list[JobExecutionResult]
    next_cursor: str | None = None


class DuplicateScheduledRunError(SchedulingError):
    """A recurring schedule already fired (or will fire) ``job_id`` at ``scheduled_for``.

    Raised by ``add_scheduled_run`` for ``trigger == TRIGGER_SCHEDULE`` runs; nothing is
    written. Several replicas computing the same fire all try to add it; one wins.
    """

    def __init__(self, job_id: str, scheduled_for: datetime) -> None:
        self.job_id = job_id
        self.scheduled_for = scheduled_for
        super().__init__(
            f"job {job_id!r} already has a scheduled fire at {scheduled_for.isoformat()}",
            field="scheduled_for",
        )


# -- listing cursor ---------------------------------------------------------------------------
def encode_cursor(created_at: datetime, execution_id: str) -> str:
    """Opaque keyset cursor: the (created_at, execution_id) of the last item of a page."""
    raw = json.dumps([created_at.astimezone(UTC).isoformat(), execution_id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Inverse of ``encode_cursor``; a cursor that was not made by it is a field error."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, execution_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        when = parse_iso(created)
        if when.tzinfo is None or not isinstance(execution_id, str):
            raise ValueError(cursor)
        return when.astimezone(UTC), execution_id
    except (ValueError, TypeError, binascii.Error, UnicodeError) as exc:
        raise ConfigurationError([FieldError("cursor", "is not a valid page cursor")]) from exc


def check_limit(limit: int) -> None:
    if limit < 1:
        raise ConfigurationError([FieldError("limit", "must be an integer >= 1")])


# -- hostile text -----------------------------------------------------------------------------
# NUL is rejected by PostgreSQL text; lone surrogates (undecodable process output kept with
# ``surrogateescape``) cannot be encoded as UTF-8 at all. Both become U+FFFD.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def clean_text(value: str | None) -> tuple[str | None, bool]:
    """``value`` with unstorable characters replaced by U+FFFD, and whether any were."""
    if value is None:
        return None, False
    cleaned, count = _UNSTORABLE.subn(REPLACEMENT, value)
    return cleaned, count > 0


def sanitize_fields(obj: Any, names: tuple[str, ...], metadata: dict[str, Any]) -> None:
    """Replace unstorable characters in ``obj``'s text attributes ``names`` (in place) and
    list the ones changed in ``metadata['sanitized_fields']``."""
    if "sanitized_fields" not in metadata:
        for name in names:
            value = getattr(obj, name)
            if value and _UNSTORABLE.search(value):
                break
        else:
            return  # the usual case: nothing to replace, nothing to list
    changed = [n for n in metadata.get("sanitized_fields", []) if n not in names]
    for name in names:
        cleaned, dirty = clean_text(getattr(obj, name))
        if dirty:
            setattr(obj, name, cleaned)
            changed.append(name)
    if changed:
        metadata["sanitized_fields"] = changed


def pending_metadata(
    trigger: str,
    scheduled_for: datetime | None,
    requested_by: str | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Metadata of an execution recorded PENDING (before the engine writes its own)."""
    metadata: dict[str, Any] = {**(extra or {}), "trigger": trigger}
    if scheduled_for is not None:
        metadata["scheduled_for"] = scheduled_for.isoformat()
    if requested_by is not None:
        metadata["requested_by"] = requested_by
    return metadata


def as_utc(value: datetime | None) -> datetime | None:
    """``value`` as aware UTC; a naive datetime is a bug and raises ``ValueError``."""
    if value is None or value.tzinfo is UTC:
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()} cannot be stored; use aware UTC")
    return value.astimezone(UTC)


_Record = TypeVar("_Record", JobExecutionResult, StepExecutionResult, AttemptRecord)


def _shallow_copy(record: _Record) -> _Record:
    """``copy.copy`` of a record dataclass without the pickle protocol's detour (these
    copies are made for every row the runner writes)."""
    out = object.__new__(type(record))
    out.__dict__.update(record.__dict__)
    return out


def _attempt_summary(attempt: AttemptRecord) -> AttemptRecord:
    out = _shallow_copy(attempt)
    out.steps = []
    out.path = list(attempt.path)
    return out


def storable_job(result: JobExecutionResult) -> JobExecutionResult:
    """A copy of ``result`` (without steps) safe to store: times in UTC, replaced text
    fields listed in ``metadata['sanitized_fields']``."""
    job = _shallow_copy(result)
    job.steps = []
    # Attempt summaries only (steps are stored on their own); copies, as the live result
    # goes on changing its current attempt.
    job.attempts = [_attempt_summary(a) for a in result.attempts]
    # A shallow copy: only top-level keys are ever set on it (nested values are not
    # changed once written), and deep copies cost more than the write itself.
    job.metadata = dict(result.metadata)
    job.start_time, job.end_time = as_utc(job.start_time), as_utc(job.end_time)
    sanitize_fields(job, ("job_name", "timezone", "error_message"), job.metadata)
    return job


def storable_step(step: StepExecutionResult, max_output_chars: int) -> StepExecutionResult:
    """A copy of ``step`` safe to store: times in UTC, text sanitised (``sanitized_fields``)
    and output capped at ``max_output_chars`` (``output_truncated``,
    ``output_original_chars``)."""
    out = _shallow_copy(step)
    out.metadata = dict(step.metadata)
    out.start_time, out.end_time = as_utc(out.start_time), as_utc(out.end_time)
    sanitize_fields(
        out, ("step_id", "step_name", "step_type", "output", "error_message"), out.metadata
    )
    if out.output is not None and len(out.output) > max_output_chars:
        out.metadata["output_truncated"] = True
        out.metadata["output_original_chars"] = len(out.output)
        out.output = out.output[:max_output_chars]
    return out
