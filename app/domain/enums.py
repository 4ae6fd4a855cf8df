"""Status enums of the spec (values are the wire format)."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """Job execution status states"""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    PARTIAL_SUCCESS = "partial_success"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    RETRYING = "retrying"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_JOB


class Trigger(StrEnum):
    """How an execution came to be: the ``trigger`` of every execution, scheduled run,
    metric label and notification, spelled the same everywhere."""

    #: Run at once and awaited: ``POST /jobs/execute``, ``POST /jobs/{job_id}/run``,
    #: ``execute_job_now``.
    NOW = "now"
    #: Queued at once in its timezone's queue (``add_immediate_job``).
    QUEUED = "queued"
    #: A one-off run at a set time (``POST /jobs/schedule``, ``schedule_job``), and the
    #: retry of an execution interrupted by a node that died (``metadata.retry_of``).
    SCHEDULED = "scheduled"
    #: A fire of a stored job's recurring schedule (``schedule_config`` / ``schedules``).
    SCHEDULE = "schedule"
    #: A past fire of a stored job's schedule, run on request (``POST /jobs/{id}/backfill``).
    BACKFILL = "backfill"


class StepStatus(StrEnum):
    """Step execution status states"""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"

    @property
    def is_failure(self) -> bool:
        return self in (StepStatus.FAILED, StepStatus.TIMEOUT, StepStatus.CANCELLED)


_TERMINAL_JOB = frozenset(
    {
        JobStatus.SUCCESS,
        JobStatus.FAILED,
        JobStatus.PARTIAL_SUCCESS,
        JobStatus.CANCELLED,
        JobStatus.TIMEOUT,
    }
)
