"""Domain layer: the spec's data structures, enums, errors and time maths. Imports nothing
from the rest of ``app``."""

from app.domain.enums import JobStatus, StepStatus
from app.domain.errors import (
    CancellationError,
    ConfigurationError,
    EngineNotRunningError,
    ExecutionEngineError,
    ExecutionFinishedError,
    ExecutionNotFoundError,
    FieldError,
    SchedulingError,
    StepExecutionError,
    TimeoutError,
)
from app.domain.models import (
    JobDefinition,
    JobExecutionResult,
    StepExecutionResult,
    set_step_validator,
)

__all__ = [
    "CancellationError",
    "ConfigurationError",
    "EngineNotRunningError",
    "ExecutionEngineError",
    "ExecutionFinishedError",
    "ExecutionNotFoundError",
    "FieldError",
    "JobDefinition",
    "JobExecutionResult",
    "JobStatus",
    "SchedulingError",
    "StepExecutionError",
    "StepExecutionResult",
    "StepStatus",
    "TimeoutError",
    "set_step_validator",
]
