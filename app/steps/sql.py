"""SqlStep (work in progress: being implemented)."""

from __future__ import annotations

from app.domain.models import StepExecutionResult
from app.steps.base import ExecutionStep
from app.steps.generated.sql import SqlStepConfig


class SqlStep(ExecutionStep):
    step_type = "sql"
    config_model = SqlStepConfig

    async def execute(self) -> StepExecutionResult:
        raise NotImplementedError
