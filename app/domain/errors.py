"""The spec's error hierarchy. Errors are small classes that carry data."""

from __future__ import annotations

import builtins
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One problem with one input field (``field`` is a dotted/indexed path)."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class ExecutionEngineError(Exception):
    """Base exception for execution engine errors"""


class SchedulingError(ExecutionEngineError):
    """Error during job scheduling"""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class DisabledJobError(SchedulingError):
    """A job with ``enabled: false`` was given to run now or at a set time: a disabled job
    does not run (a stored one may still be run by hand, ``POST /jobs/{job_id}/run``)."""

    def __init__(self, job_id: str, *, field: str = "enabled") -> None:
        self.job_id = job_id
        super().__init__(
            f"job {job_id!r} is disabled (enabled: false) and does not run, now or at a set "
            "time; set enabled to true (or leave it out)",
            field=field,
        )


class StepExecutionError(ExecutionEngineError):
    """Error during step execution"""

    def __init__(self, step_id: str, step_type: str, message: str) -> None:
        self.step_id = step_id
        self.step_type = step_type
        super().__init__(message)


class ConfigurationError(ExecutionEngineError):
    """Error in job or step configuration.

    ``errors`` lists every problem found, each naming its field.
    """

    def __init__(self, message: str | list[FieldError], errors: list[FieldError] | None = None):
        if isinstance(message, list):
            errors = message
            message = "; ".join(str(e) for e in errors) or "invalid configuration"
        self.errors: list[FieldError] = list(errors or [])
        super().__init__(message)


class TimeoutError(ExecutionEngineError, builtins.TimeoutError):
    """Execution timeout error (also a builtin ``TimeoutError``, so callers'
    ``except TimeoutError`` keeps working)."""


class CancellationError(ExecutionEngineError):
    """Job or step cancellation error"""


class ExecutionNotFoundError(ExecutionEngineError):
    """No execution with this id is known."""

    def __init__(self, execution_id: str) -> None:
        self.execution_id = execution_id
        super().__init__(f"execution {execution_id!r} not found")


class ExecutionFinishedError(ExecutionEngineError):
    """The execution already reached a terminal state."""

    def __init__(self, execution_id: str, status: str) -> None:
        self.execution_id = execution_id
        self.status = status
        super().__init__(f"execution {execution_id!r} already finished with status {status!r}")


class EngineNotRunningError(ExecutionEngineError):
    """The engine is not started (or is stopping) and accepts no work."""
