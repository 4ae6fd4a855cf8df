"""Job definitions as they enter: parsed, validated and checked against this server.

``JobParser.parse`` validates like the HTTP API (strict types, known step types, limits), then
the domain rules, then what this server can run (connections that exist, ``$from``
references to earlier steps, script roots, script length, timeout ceiling); every problem is
reported in one ``ConfigurationError`` (with the domain's rules even when the request does
not match the schema, see ``job_rules``).
``check_connection_access`` answers 403 for connections the API key may not use;
``warnings`` says what is accepted but will not work here (PowerShell without ``pwsh``).
"""

from __future__ import annotations

import copy
import math
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from app.api.errors import PermissionDeniedError, configuration_error, prefixed
from app.api.schemas import JobCreate
from app.domain.errors import ConfigurationError, FieldError
from app.domain.models import JobDefinition
from app.engine.notifications import NotificationPolicy
from app.steps.factory import StepFactory
from app.steps.paths import confine_step_paths
from app.steps.references import reference_errors
from app.steps.resources import StepResources
from app.steps.sql_checks import step_problems

DEFAULT_MAX_STEPS_PER_JOB = 100
DEFAULT_MAX_SCRIPT_CHARS = 100_000
DEFAULT_MAX_TIMEOUT_SECONDS = 86_400
#: Step fields whose length V2_MAX_SCRIPT_CHARS limits.
SCRIPT_FIELDS = ("query", "script")

JobInput = JobCreate | Mapping[str, Any]


@dataclass
class JobParser:
    """Turns request data into a JobDefinition this server can run."""

    resources: StepResources
    default_timeout: int
    max_steps_per_job: int = DEFAULT_MAX_STEPS_PER_JOB
    max_script_chars: int = DEFAULT_MAX_SCRIPT_CHARS
    max_timeout_seconds: int = DEFAULT_MAX_TIMEOUT_SECONDS
    #: Which notification destinations this server allows (none by default).
    notifications: NotificationPolicy = field(default_factory=NotificationPolicy)
    #: Whether ``resources.powershell_executable`` exists on this machine (looked up once).
    pwsh_available: bool = field(init=False)

    def __post_init__(self) -> None:
        self.pwsh_available = shutil.which(self.resources.powershell_executable) is not None

    def parse(self, job_data: JobInput, *, prefix: str = "") -> JobDefinition:
        """A valid JobDefinition, or one ``ConfigurationError`` listing every problem (field
        paths under ``prefix``, e.g. ``job``)."""
        try:
            if isinstance(job_data, JobCreate):
                model = job_data
            else:
                model = JobCreate.model_validate(
                    dict(job_data) if isinstance(job_data, Mapping) else job_data
                )
        except ValidationError as exc:
            raise configuration_error(exc, prefix) from None
        data = model.model_dump(mode="json", exclude_unset=True)
        if data.get("timeout_seconds") is None:
            data["timeout_seconds"] = self.default_timeout
        errors = unstorable_values(model.model_dump(exclude_unset=True))
        if len(model.steps) > self.max_steps_per_job:
            errors.append(
                FieldError(
                    "steps",
                    f"at most {self.max_steps_per_job} steps per job (got {len(model.steps)})",
                )
            )
        try:
            if errors:
                raise ConfigurationError(errors)
            for step in data.get("steps") or ():
                if isinstance(step, dict) and step.get("step_id") and not step.get("step_name"):
                    step["step_name"] = step["step_id"]  # as an execution shows it
            job = JobDefinition.from_dict(data)
            job.validate()
            policy = self.policy_errors(job)
            if policy:
                raise ConfigurationError(policy)
        except ConfigurationError as exc:
            raise (prefixed(exc, prefix) if prefix else exc) from None
        return job

    def warnings(self, job: JobDefinition) -> list[FieldError]:
        """Why a stored job will fail on this server as it is now: PowerShell steps without
        ``pwsh``, connections removed from V2_CONNECTIONS since the job was stored."""
        out: list[FieldError] = []
        known = self.resources.connections.names()
        for i, step in enumerate(job.steps):
            if step.get("type") == "powershell" and not self.pwsh_available:
                out.append(FieldError(f"steps[{i}]", self.pwsh_missing()))
            name = step.get("connection_name")
            if isinstance(name, str) and name not in known:
                out.append(
                    FieldError(
                        f"steps[{i}].connection_name",
                        f"connection {name!r} is not configured on this server "
                        "(V2_CONNECTIONS): this step fails until it is",
                    )
                )
            out.extend(self._dialect_problems(step, i))
        return out

    def _dialect_problems(self, step: dict[str, Any], i: int) -> list[FieldError]:
        """What the step's query may not hold on its connection's database (a ``GO`` line
        outside SQL Server, a second statement, ``transaction: false`` on a read-only SQL
        Server connection); nothing for unknown connections and other step types."""
        name = step.get("connection_name")
        if step.get("type") != "sql" or not isinstance(name, str):
            return []
        if name not in self.resources.connections.names():
            return []
        cfg = self.resources.connections.config(name)
        return step_problems(step, cfg.family, read_only=cfg.read_only, where=f"steps[{i}]")

    def pwsh_missing(self) -> str:
        """The warning for PowerShell steps on a server without ``pwsh``."""
        return (
            f"PowerShell is not installed on this server "
            f"({self.resources.powershell_executable!r} not found, V2_POWERSHELL_EXECUTABLE): "
            "PowerShell steps fail until it is"
        )

    def server_schema(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        """A step type's JSON schema with this server's limits in place of the contract's
        ceilings: the query/script length (V2_MAX_SCRIPT_CHARS) and the step timeout
        (V2_MAX_TIMEOUT_SECONDS) that ``policy_errors`` enforces."""
        out = copy.deepcopy(dict(schema))
        properties = out.get("properties") or {}
        for name in SCRIPT_FIELDS:
            prop = properties.get(name)
            if isinstance(prop, dict):
                prop["maxLength"] = min(
                    prop.get("maxLength", self.max_script_chars), self.max_script_chars
                )
        timeout = properties.get("timeout")
        if isinstance(timeout, dict):
            timeout["maximum"] = min(
                timeout.get("maximum", self.max_timeout_seconds), self.max_timeout_seconds
            )
        return out

    def policy_errors(self, job: JobDefinition) -> list[FieldError]:
        """What this server can run: connections it has (V2_CONNECTIONS), ``$from``
        references to earlier steps in a form their type outputs, paths inside
        V2_SCRIPT_ROOTS, query/script length (V2_MAX_SCRIPT_CHARS), timeouts
        (V2_MAX_TIMEOUT_SECONDS), notification destinations it allows."""
        errors: list[FieldError] = self.notifications.errors(job)
        known = self.resources.connections.names()
        for i, step in enumerate(job.steps):
            name = step.get("connection_name")
            if isinstance(name, str) and name not in known:
                listed = ", ".join(repr(n) for n in known) or "none configured"
                errors.append(
                    FieldError(
                        f"steps[{i}].connection_name",
                        f"unknown connection {name!r} on this server (known: {listed}; "
                        "V2_CONNECTIONS)",
                    )
                )
            errors.extend(self._dialect_problems(step, i))
        errors.extend(reference_errors(job.steps, StepFactory.output_fields))
        ceiling = self.max_timeout_seconds
        if job.timeout_seconds > ceiling:
            errors.append(
                FieldError(
                    "timeout_seconds",
                    f"must be at most {ceiling} seconds (the server's V2_MAX_TIMEOUT_SECONDS)",
                )
            )
        roots = self.resources.script_roots
        for i, step in enumerate(job.steps):
            where = f"steps[{i}]"
            timeout = step.get("timeout")
            if isinstance(timeout, int) and timeout > ceiling:
                errors.append(
                    FieldError(
                        f"{where}.timeout",
                        f"must be at most {ceiling} seconds (the server's V2_MAX_TIMEOUT_SECONDS)",
                    )
                )
            for name in SCRIPT_FIELDS:
                text = step.get(name)
                if isinstance(text, str) and len(text) > self.max_script_chars:
                    errors.append(
                        FieldError(
                            f"{where}.{name}",
                            f"is {len(text)} characters long; the server accepts at most "
                            f"{self.max_script_chars} (V2_MAX_SCRIPT_CHARS)",
                        )
                    )
            working_directory, script_path = step.get("working_directory"), step.get("script_path")
            if isinstance(working_directory, str) or isinstance(script_path, str):
                _, _, problems = confine_step_paths(
                    working_directory if isinstance(working_directory, str) else None,
                    script_path if isinstance(script_path, str) else None,
                    roots,
                    prefix=where,
                )
                errors.extend(FieldError(p.field, p.message) for p in problems)
        return errors

    def check_connection_access(
        self, job: JobDefinition, requested_by: str | None, *, prefix: str = ""
    ) -> None:
        """``PermissionDeniedError`` (403) naming ``steps[i].connection_name`` for every step
        on a connection whose ``allowed_keys`` do not list ``requested_by``.

        Checked again when each SQL step runs. Unknown connection names are left to the
        step (it fails naming the known ones).
        """
        registry = self.resources.connections
        known = set(registry.names())
        errors: list[FieldError] = []
        for i, step in enumerate(job.steps):
            name = step.get("connection_name")
            if not isinstance(name, str) or name not in known:
                continue
            config = registry.config(name)
            if not config.allows(requested_by):
                field = f"steps[{i}].connection_name"
                errors.append(
                    FieldError(
                        f"{prefix}.{field}" if prefix else field,
                        config.access_denied_message(requested_by),
                    )
                )
        if errors:
            raise PermissionDeniedError("; ".join(map(str, errors)), errors)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def unstorable_values(data: Any, path: str = "") -> list[FieldError]:
    """Values JSON, UTF-8 or a database cannot carry: NUL characters, lone surrogates, and
    NaN/Infinity (which Python's JSON parser accepts although they are not JSON)."""
    where = path or "body"
    if isinstance(data, str):
        if "\x00" in data or _LONE_SURROGATE.search(data):
            return [FieldError(where, "must not contain NUL characters or lone surrogates")]
        return []
    if isinstance(data, float) and not math.isfinite(data):
        return [FieldError(where, "must be a finite number (NaN and Infinity are not JSON)")]
    if isinstance(data, dict):
        out: list[FieldError] = []
        for key, value in data.items():
            out.extend(unstorable_values(key, where))
            out.extend(unstorable_values(value, f"{path}.{key}" if path else str(key)))
        return out
    if isinstance(data, list):
        return [e for i, item in enumerate(data) for e in unstorable_values(item, f"{path}[{i}]")]
    return []
