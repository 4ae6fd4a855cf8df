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
