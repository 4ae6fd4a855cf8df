"""Job Scheduler V2: run SQL, PowerShell and shell jobs now, later or on a schedule."""

from app.domain import (
    CancellationError,
    ConfigurationError,
    ExecutionEngineError,
    JobDefinition,
    JobExecutionResult,
    JobStatus,
    SchedulingError,
    StepExecutionError,
    StepExecutionResult,
    StepStatus,
    TimeoutError,
)
from app.steps import (
    ExecutionContext,
    ExecutionStep,
    PowerShellStep,
    ShellStep,
    SqlStep,
    StepFactory,
)

__all__ = [
    "CancellationError",
    "ConfigurationError",
    "ExecutionContext",
    "ExecutionEngineError",
    "ExecutionStep",
    "JobDefinition",
    "JobExecutionResult",
    "JobStatus",
    "PowerShellStep",
    "SchedulingError",
    "ShellStep",
    "SqlStep",
    "StepExecutionError",
    "StepExecutionResult",
    "StepFactory",
    "StepStatus",
    "TimeoutError",
]
