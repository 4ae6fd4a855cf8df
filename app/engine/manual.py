"""Manual runs of a stored job that can be steered: parameter overrides, a start step, a
logical date, and the job's overlap policy (which an admin may lift with ``overlap: allow``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from app.domain.errors import ConfigurationError, ExecutionEngineError, FieldError
from app.domain.jobs import schedule_policies
from app.domain.models import JobDefinition
from app.engine.runner import RunOptions

if TYPE_CHECKING:
    from app.engine.engine import NewExecutionEngine


class OverlapError(ExecutionEngineError):
    """A manual run refused by the job's overlap policy ``skip`` while it runs."""

    def __init__(self, job_id: str, active: str) -> None:
        self.job_id = job_id
        self.active = active
        super().__init__(
            f"job {job_id!r} is still queued or running (execution {active}) and its "
            "overlap_policy is skip; wait for it, or pass overlap: allow with an admin key"
        )


@dataclass
class RunRequest:
    """What a manual run asks for (all optional)."""

    #: step_id -> parameter name -> value: replaces those parameters of those steps only.
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    start_step_id: str | None = None
    logical_date: str | None = None
    #: ``"allow"`` runs it whatever the job's overlap policy (the caller checks the scope).
    overlap: str | None = None

    def record(self) -> dict[str, Any]:
        """What the execution's metadata keeps of the request."""
        out: dict[str, Any] = {}
        if self.parameters:
            out["parameter_overrides"] = copy.deepcopy(self.parameters)
        if self.start_step_id is not None:
            out["start_step_id"] = self.start_step_id
        if self.overlap is not None:
            out["overlap"] = self.overlap
        return out


def steer(job: JobDefinition, request: RunRequest) -> JobDefinition:
    """A copy of ``job`` with the request's parameter overrides in place; every problem of
    the request is one ``ConfigurationError``."""
    errors: list[FieldError] = []
    steered = copy.deepcopy(job)
    by_id = {str(s.get("step_id")): s for s in steered.steps if isinstance(s, dict)}
    for step_id, values in request.parameters.items():
        config = by_id.get(step_id)
        if config is None:
            errors.append(FieldError(f"parameters.{step_id}", f"no step has step_id {step_id!r}"))
            continue
        current = config.get("parameters")
        current = current if isinstance(current, dict) else {}
        for name, value in values.items():
            if name not in current:
                known = ", ".join(sorted(map(str, current))) or "none"
                errors.append(
                    FieldError(
                        f"parameters.{step_id}.{name}",
                        f"step {step_id!r} has no parameter {name!r} (it has: {known})",
                    )
                )
            else:
                current[name] = copy.deepcopy(value)
    if request.start_step_id is not None and request.start_step_id not in by_id:
        errors.append(FieldError("start_step_id", f"no step has step_id {request.start_step_id!r}"))
    if request.logical_date is not None and not _is_date(request.logical_date):
        errors.append(FieldError("logical_date", "must be a date YYYY-MM-DD"))
    if request.overlap not in (None, "allow"):
        errors.append(FieldError("overlap", 'must be "allow"'))
    if errors:
        raise ConfigurationError(errors)
    # An override may break the step's own rules (a NUL in an environment variable, ...).
    problems = steered.validation_errors()
    if problems:
        raise ConfigurationError(
            [FieldError(f"parameters ({p.field})", p.message) for p in problems]
        )
    return steered


async def admit(
    engine: NewExecutionEngine, job: JobDefinition, request: RunRequest, requested_by: str | None
) -> RunOptions:
    """Apply the job's overlap policy to a manual run (``skip``: refuse while it runs,
    ``replace``: cancel the running ones, ``queue``: run after them, ``allow``) and say how
    the run is steered."""
    _, policy = schedule_policies(job.schedule_config)
    if request.overlap == "allow":
        policy = "allow"
    active = engine.active_execution_ids(job.job_id)
    serial = False
    if active and policy == "skip":
        raise OverlapError(job.job_id, active[0])
    if active and policy == "replace":
        for execution_id in active:
            await engine.cancel_job(execution_id, cancelled_by=requested_by)
    if policy == "queue":
        serial = True
    return RunOptions(
        start_step_id=request.start_step_id,
        logical_date=request.logical_date,
        serial=serial,
        record=request.record(),
    )


def _is_date(value: str) -> bool:
    if len(value) != 10:
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True
