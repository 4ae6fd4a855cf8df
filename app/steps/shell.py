"""ShellStep (work in progress: being implemented)."""

from __future__ import annotations

from app.domain.models import StepExecutionResult
from app.steps.base import ExecutionStep
from app.steps.generated.shell import ShellStepConfig


class ShellStep(ExecutionStep):
    step_type = "shell"
    config_model = ShellStepConfig

    async def execute(self) -> StepExecutionResult:
        raise NotImplementedError
