"""Stored job definitions (recurring jobs) and the policies that govern their fires."""

from __future__ import annotations

import base64
import binascii
import copy
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from app.domain.errors import ConfigurationError, ExecutionEngineError, FieldError
from app.domain.models import JobDefinition

MISFIRE_POLICIES = ("run_once", "skip", "run_all")
OVERLAP_POLICIES = ("skip", "allow", "queue", "replace")
DEFAULT_MISFIRE_POLICY = "run_once"
DEFAULT_OVERLAP_POLICY = "skip"
#: ``run_all`` catches up at most this many missed fires; the rest are recorded missed.
RUN_ALL_CAP = 10


@dataclass
class StoredJob:
    """A job definition kept by the service, with its optimistic-lock version and the
    next instant its schedule fires (None: no schedule, disabled, or no more fires)."""

    job: JobDefinition
    version: int = 1
    next_fire_at: datetime | None = None
    last_fire_at: datetime | None = None

    @property
    def job_id(self) -> str:
        return self.job.job_id

    def copy(self) -> StoredJob:
        return copy.deepcopy(self)


@dataclass
class JobQuery:
    enabled: bool | None = None
    timezone: str | None = None
    limit: int = 50
    cursor: str | None = None


@dataclass
class JobPage:
    items: list[StoredJob] = field(default_factory=list)
    next_cursor: str | None = None


class JobExistsError(ExecutionEngineError):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"a job with job_id {job_id!r} already exists")


class JobsExistError(ExecutionEngineError):
    """Jobs to store together whose job_ids are taken (nothing was stored). ``errors`` may
    name where each came from (the caller's field paths)."""

    def __init__(self, job_ids: list[str], errors: list[FieldError] | None = None) -> None:
        self.job_ids = sorted(job_ids)
        self.errors: list[FieldError] = list(errors or [])
        super().__init__(
            "jobs with these job_ids already exist: " + ", ".join(map(repr, self.job_ids))
        )


class OnConflict(StrEnum):
    """What storing several jobs at once does with a job_id that is already stored."""

    FAIL = "fail"  # store none of them (JobsExistError)
    SKIP = "skip"  # leave the stored job as it is
    REPLACE = "replace"  # replace its definition (created_at kept, version + 1)


@dataclass(frozen=True)
class JobWrite:
    """A job to store with the next instant its schedule fires."""

    job: JobDefinition
    next_fire_at: datetime | None


@dataclass
class JobsWritten:
    """What one ``write_jobs`` did, in the order of the writes."""

    created: list[StoredJob] = field(default_factory=list)
    replaced: list[StoredJob] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class JobNotFoundError(ExecutionEngineError):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id!r} not found")


class ScheduleNotFoundError(ExecutionEngineError):
    """A job has no named schedule of that name."""

    def __init__(self, job_id: str, name: str) -> None:
        self.job_id = job_id
        self.name = name
        super().__init__(f"job {job_id!r} has no schedule named {name!r}")


class VersionConflictError(ExecutionEngineError):
    """A write based on a stale version (optimistic concurrency)."""

    def __init__(self, job_id: str, expected: int, actual: int) -> None:
        self.job_id = job_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"job {job_id!r} is at version {actual}, not {expected}: it changed since you read it"
        )


def schedule_policies(config: dict[str, Any] | None) -> tuple[str, str]:
    """(misfire_policy, overlap_policy) of a schedule_config, with defaults."""
    config = config or {}
    return (
        str(config.get("misfire_policy", DEFAULT_MISFIRE_POLICY)),
        str(config.get("overlap_policy", DEFAULT_OVERLAP_POLICY)),
    )


def job_policies(job: JobDefinition) -> tuple[str, str]:
    """(misfire_policy, overlap_policy) of a job: they apply to the whole job, so the job's
    schedules agree on them (checked when it is stored); the first that sets one wins."""
    configs = [job.schedule_config] if job.schedule_config else []
    configs += [s.get("schedule_config") or {} for s in job.schedules or []]
    misfire = next((c["misfire_policy"] for c in configs if "misfire_policy" in c), None)
    overlap = next((c["overlap_policy"] for c in configs if "overlap_policy" in c), None)
    return (
        str(misfire or DEFAULT_MISFIRE_POLICY),
        str(overlap or DEFAULT_OVERLAP_POLICY),
    )


def encode_job_cursor(job_id: str) -> str:
    return base64.urlsafe_b64encode(job_id.encode()).decode().rstrip("=")


def decode_job_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return base64.urlsafe_b64decode(padded.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ConfigurationError(
            [FieldError("cursor", "is not a cursor this API returned")]
        ) from None
