"""The trivial step type the benchmarks register: returns success at once, no I/O."""

from __future__ import annotations

from app.domain.enums import StepStatus
from app.domain.models import StepExecutionResult
from app.steps.base import ExecutionStep
from app.steps.factory import StepFactory

NOOP = "bench_noop"


class NoopStep(ExecutionStep):
    """Config: ``step_id`` only. Succeeds immediately."""

    step_type = NOOP

    async def execute(self) -> StepExecutionResult:
        return self.finish(self.new_result(), StepStatus.SUCCESS)


def install_noop() -> None:
    StepFactory.register_step_type(NOOP, NoopStep)


def noop_job(job_id: str = "bench-noop", steps: int = 1) -> dict[str, object]:
    """A job definition (dict) of ``steps`` noop steps."""
    return {
        "job_id": job_id,
        "job_name": job_id,
        "timezone": "UTC",
        "timeout_seconds": 3600,
        "steps": [{"step_id": f"s{i:02d}", "type": NOOP} for i in range(steps)],
    }


def sql_job(job_id: str, steps: int = 1, connection: str = "bench") -> dict[str, object]:
    """A job definition (dict) of ``steps`` ``SELECT 1`` SQL steps on ``connection``."""
    return {
        "job_id": job_id,
        "job_name": job_id,
        "timezone": "UTC",
        "steps": [
            {
                "step_id": f"q{i:02d}",
                "type": "sql",
                "connection_name": connection,
                "query": "SELECT 1",
            }
            for i in range(steps)
        ],
    }
