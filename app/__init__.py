"""Job Scheduler V2: run SQL, PowerShell and shell jobs now, later or on a schedule.

Every class the spec names is importable from here (``from app import JobDefinition,
NewExecutionEngine, SqlStep, ModernJobAPI, ...``). The HTTP and database parts load on first
use, so ``import app`` alone does not pull in FastAPI or SQLAlchemy's ORM.
"""

from typing import TYPE_CHECKING, Any

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
from app.engine import NewExecutionEngine, TimezoneJobQueue
from app.steps import (
    ExecutionContext,
    ExecutionStep,
    PowerShellStep,
    ShellStep,
    SqlStep,
    StepFactory,
)

if TYPE_CHECKING:
    from app.api.service import ModernJobAPI
    from app.api.wiring import create_modern_job_routes
    from app.persistence.models import JobExecutionV2, StepExecutionV2

_LAZY = {
    "ModernJobAPI": "app.api.service",
    "create_modern_job_routes": "app.api.wiring",
    "JobExecutionV2": "app.persistence.models",
    "StepExecutionV2": "app.persistence.models",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'app' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "CancellationError",
    "ConfigurationError",
    "ExecutionContext",
    "ExecutionEngineError",
    "ExecutionStep",
    "JobDefinition",
    "JobExecutionResult",
    "JobExecutionV2",
    "JobStatus",
    "ModernJobAPI",
    "NewExecutionEngine",
    "PowerShellStep",
    "SchedulingError",
    "ShellStep",
    "SqlStep",
    "StepExecutionError",
    "StepExecutionResult",
    "StepExecutionV2",
    "StepFactory",
    "StepStatus",
    "TimeoutError",
    "TimezoneJobQueue",
    "create_modern_job_routes",
]
