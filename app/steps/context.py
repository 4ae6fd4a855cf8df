"""ExecutionContext: what the steps of one execution share."""

from __future__ import annotations

import asyncio
import copy
import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from app.domain.errors import StepExecutionError
from app.domain.models import JobDefinition
from app.domain.timeutil import to_local, utc_now
from app.steps.resources import StepResources

REFERENCE_KEY = "$from"
_TOKEN = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_\-:]*)|\[(-?\d+)\]")
_MISSING = object()

#: Names of the run tokens, ``{"$from": "run.<name>"}``.
RUN_TOKENS = (
    "execution_id",
    "job_id",
    "scheduled_for",
    "scheduled_for_local",
    "logical_date",
    "attempt",
    "trigger",
    "requested_by",
)
#: Run tokens a shell or PowerShell step also gets as environment variables.
RUN_ENVIRONMENT = {
    "JOBSCHEDULER_EXECUTION_ID": "execution_id",
    "JOBSCHEDULER_JOB_ID": "job_id",
    "JOBSCHEDULER_SCHEDULED_FOR": "scheduled_for",
    "JOBSCHEDULER_LOGICAL_DATE": "logical_date",
}


class ParameterReferenceError(LookupError):
    """A ``{"$from": ...}`` reference that cannot be resolved."""


def parse_reference(path: str) -> list[str | int]:
    """Split ``steps.count_rows.rows[0].n`` into ``["steps", "count_rows", "rows", 0, "n"]``.

    Grammar: ``root ( "." name | "[" int "]" )*`` with ``root`` one of ``steps``, ``job`` or
    ``run`` (``run.<token>``, one of ``RUN_TOKENS``). No expressions are evaluated.
    """
    if not isinstance(path, str) or not path:
        raise ParameterReferenceError("reference must be a non-empty string")
    tokens: list[str | int] = []
    pos = 0
    while pos < len(path):
        match = _TOKEN.match(path, pos)
        if match is None or (pos == 0 and path.startswith(".")):
            raise ParameterReferenceError(f"cannot parse reference {path!r} at character {pos + 1}")
        name, index = match.groups()
        tokens.append(name if name is not None else int(index))
        pos = match.end()
    if tokens[0] not in ("steps", "job", "run") or len(tokens) < 2:
        raise ParameterReferenceError(
            f"reference {path!r} must start with 'steps.<step_id>', 'job.<field>' or 'run.<token>'"
        )
    if tokens[0] == "run" and (len(tokens) != 2 or tokens[1] not in RUN_TOKENS):
        raise ParameterReferenceError(
            f"reference {path!r}: run tokens are run.<name> with name one of "
            + ", ".join(RUN_TOKENS)
        )
    return tokens


class ExecutionContext:
    """Shared execution context for job steps"""

    def __init__(
        self,
        job: JobDefinition,
        execution_id: str,
        *,
        resources: StepResources | None = None,
        requested_by: str | None = None,
    ) -> None:
        """
        Initialize execution context

        Args:
            job: Job definition being executed
            execution_id: Unique execution identifier
            resources: server-side connections, executables and limits
            requested_by: id of the API key that started the execution (``"schedule"`` for
                a recurring fire, None without keys): decides which connections it may use
        """
        self.job = job
        self.execution_id = execution_id
        self.resources = resources or StepResources()
        self.requested_by = requested_by
        self.attempt = 0
        # What the run tokens tell (set by the engine's runner when the execution starts).
        self.trigger: str | None = None
        self.scheduled_for: datetime | None = None
        self.logical_date: str | None = None
        self._outputs: dict[str, Any] = {}
        self._metadata: dict[str, Any] = {}
        self._cancelled = asyncio.Event()

    # -- spec API -------------------------------------------------------------------------
    def get_job_metadata(self) -> dict[str, Any]:
        """Get job metadata"""
        return copy.deepcopy(self.job.metadata)

    def set_step_output(self, step_id: str, output: Any) -> None:
        """Store step output for use by subsequent steps"""
        self._outputs[step_id] = output

    def get_step_output(self, step_id: str) -> Any:
        """Get output from previous step (None when the step produced none)"""
        return self._outputs.get(step_id)

    def get_connection(self, connection_name: str) -> AsyncEngine:
        """Get database connection (a pooled async engine) by name"""
        return self.resources.connections.get_engine(connection_name)

    def add_execution_metadata(self, key: str, value: Any) -> None:
        """Add metadata to execution result"""
        self._metadata[key] = value

    def is_cancelled(self) -> bool:
        """Check if execution has been cancelled"""
        return self._cancelled.is_set()

    # -- engine side ------------------------------------------------------------------------
    @property
    def execution_metadata(self) -> dict[str, Any]:
        return dict(self._metadata)

    def request_cancel(self) -> None:
        self._cancelled.set()

    async def wait_cancelled(self) -> None:
        await self._cancelled.wait()

    # -- run tokens -------------------------------------------------------------------------
    def run_tokens(self) -> dict[str, Any]:
        """The values of ``run.<name>``: ids, dates and times as strings, attempt an int.

        ``scheduled_for`` is the time the run was due (for an ad-hoc run, when it was asked
        for), in UTC; ``scheduled_for_local`` the same instant in the job's timezone with its
        offset; ``logical_date`` the date of that instant there unless the run was given one.
        """
        when = self.scheduled_for or utc_now()
        local = to_local(when, self.job.timezone)
        return {
            "execution_id": self.execution_id,
            "job_id": self.job.job_id,
            "scheduled_for": when.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "scheduled_for_local": local.isoformat(),
            "logical_date": self.logical_date or local.date().isoformat(),
            "attempt": self.attempt,
            "trigger": self.trigger,
            "requested_by": self.requested_by,
        }

    def run_environment(self) -> dict[str, str]:
        """``JOBSCHEDULER_*`` environment variables of a process step (``RUN_ENVIRONMENT``)."""
        tokens = self.run_tokens()
        return {name: str(tokens[token]) for name, token in RUN_ENVIRONMENT.items()}

    # -- references -------------------------------------------------------------------------
    def resolve_reference(self, path: str) -> Any:
        """Value at ``path`` (see ``parse_reference``); raises ``ParameterReferenceError``."""
        tokens = parse_reference(path)
        root, first, rest = tokens[0], tokens[1], tokens[2:]
        if root == "steps":
            if first not in self._outputs:
                raise ParameterReferenceError(
                    f"{path!r}: step {first!r} has no output (it has not run before this step, "
                    "failed, or does not exist)"
                )
            value: Any = self._outputs[first]
        elif root == "run":
            return self.run_tokens()[str(first)]
        else:
            job = self.job.to_dict()
            if first not in job:
                raise ParameterReferenceError(f"{path!r}: the job has no field {first!r}")
            value = job[first]
        walked = f"{root}.{first}"
        for token in rest:
            value = _step_into(value, token, walked, path)
            walked += f"[{token}]" if isinstance(token, int) else f".{token}"
        return value

    def resolve_parameters(self, parameters: Any, *, step_id: str, step_type: str) -> Any:
        """Copy of ``parameters`` with every ``{"$from": path}`` replaced by its value."""
        try:
            return self._resolve(parameters)
        except ParameterReferenceError as exc:
            raise StepExecutionError(step_id, step_type, f"bad parameter reference: {exc}") from exc

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, dict):
            if REFERENCE_KEY in value:
                if len(value) != 1:
                    raise ParameterReferenceError(
                        f"an object with {REFERENCE_KEY!r} must have no other keys: {value!r}"
                    )
                return copy.deepcopy(self.resolve_reference(value[REFERENCE_KEY]))
            return {k: self._resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._resolve(v) for v in value]
        return value


def _step_into(value: Any, token: str | int, walked: str, path: str) -> Any:
    if isinstance(token, int):
        if not isinstance(value, list | tuple):
            raise ParameterReferenceError(f"{path!r}: {walked} is not a list")
        if not -len(value) <= token < len(value):
            raise ParameterReferenceError(
                f"{path!r}: {walked} has {len(value)} items, no [{token}]"
            )
        return value[token]
    if not isinstance(value, dict):
        raise ParameterReferenceError(f"{path!r}: {walked} is not an object")
    result = value.get(token, _MISSING)
    if result is _MISSING:
        raise ParameterReferenceError(f"{path!r}: {walked} has no key {token!r}")
    return result
