"""Step types registered by tests to drive the engine deterministically (pure asyncio).

``probe`` steps record concurrency and wait either a number of seconds (the workload of the
limits test) or on a named gate that the test opens.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, ClassVar

from app.domain.enums import StepStatus
from app.domain.errors import FieldError, StepExecutionError
from app.domain.models import StepExecutionResult
from app.steps.base import ExecutionStep
from app.steps.factory import StepFactory


class Probe:
    """Shared observations of every probe step."""

    def __init__(self) -> None:
        self.active_total = 0
        self.peak_total = 0
        self.active_by_tz: collections.Counter[str] = collections.Counter()
        self.peak_by_tz: collections.Counter[str] = collections.Counter()
        self.started: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
        self.gates: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
        self.cancelled: list[str] = []
        self.runs: collections.Counter[str] = collections.Counter()
        self.fail_first: dict[str, int] = {}


class ProbeStep(ExecutionStep):
    """Config: ``seconds`` (float) or ``gate`` (str); ``fail`` (bool); ``output`` (any)."""

    step_type = "probe"
    probe: ClassVar[Probe] = Probe()

    @classmethod
    def check_config(cls, step_config: Any, prefix: str = "") -> list[FieldError]:
        if not isinstance(step_config, dict) or not step_config.get("step_id"):
            return [FieldError(f"{prefix}.step_id" if prefix else "step_id", "is required")]
        return []

    async def execute(self) -> StepExecutionResult:
        p = self.probe
        tz = self.context.job.timezone
        key = f"{self.context.execution_id}:{self.step_id}"
        p.runs[self.step_id] += 1
        p.active_total += 1
        p.active_by_tz[tz] += 1
        p.peak_total = max(p.peak_total, p.active_total)
        p.peak_by_tz[tz] = max(p.peak_by_tz[tz], p.active_by_tz[tz])
        p.started[key].set()
        p.started[self.step_id].set()
        result = self.new_result()
        try:
            if "gate" in self.step_config:
                await p.gates[self.step_config["gate"]].wait()
            elif "seconds" in self.step_config:
                await asyncio.sleep(float(self.step_config["seconds"]))
        except asyncio.CancelledError:
            p.cancelled.append(key)
            raise
        finally:
            p.active_total -= 1
            p.active_by_tz[tz] -= 1
        remaining = p.fail_first.get(self.step_id, 0)
        if remaining > 0:
            p.fail_first[self.step_id] = remaining - 1
            raise StepExecutionError(self.step_id, "probe", "planned failure")
        if self.step_config.get("fail"):
            return self.finish(result, StepStatus.FAILED, error="probe asked to fail")
        params = self.resolved_parameters()
        value = self.step_config.get("output", params or None)
        self.context.set_step_output(self.step_id, value)
        return self.finish(result, StepStatus.SUCCESS, output=None if value is None else str(value))


def install_probe() -> Probe:
    ProbeStep.probe = Probe()
    StepFactory.register_step_type("probe", ProbeStep)
    return ProbeStep.probe


def uninstall_probe() -> None:
    StepFactory.unregister_step_type("probe")
