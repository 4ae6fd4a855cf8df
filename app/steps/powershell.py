"""PowerShellStep (work in progress: being implemented)."""

from __future__ import annotations

from app.domain.models import StepExecutionResult
from app.steps.base import ExecutionStep
from app.steps.generated.powershell import PowerShellStepConfig


class PowerShellStep(ExecutionStep):
    step_type = "powershell"
    config_model = PowerShellStepConfig

    async def execute(self) -> StepExecutionResult:
        raise NotImplementedError
