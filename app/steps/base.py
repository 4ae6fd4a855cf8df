"""ExecutionStep: the abstract base of every step type."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import ValidationError

from app.domain.enums import StepStatus
from app.domain.errors import FieldError
from app.domain.field_paths import field_errors_from_pydantic
from app.domain.models import StepExecutionResult
from app.domain.timeutil import utc_now
from app.steps.config_base import StepConfigBase, load_schemas
from app.steps.context import ExecutionContext

DEFAULT_STEP_TIMEOUT = 300


class ExecutionStep(ABC):
    """Abstract base class for all execution steps"""

    #: The type identifier (``"sql"``, ``"powershell"``, ...), set by each subclass.
    step_type: ClassVar[str] = ""
    #: What the step outputs for ``{"$from": ...}`` references: key -> whether it is a
    #: container (list/object, may be stepped into) or a single value. None: not declared.
    output_fields: ClassVar[dict[str, bool] | None] = None
    #: Generated pydantic model that validates this type's configuration (optional).
    config_model: ClassVar[type[StepConfigBase] | None] = None

    def __init__(self, step_config: dict[str, Any], context: ExecutionContext):
        """
        Initialize step

        Args:
            step_config: Step configuration from job definition
            context: Execution context with shared data
        """
        self.step_config = step_config
        self.context = context
        self.step_id = str(step_config.get("step_id") or "")
        self.step_name = str(step_config.get("step_name") or self.step_id)
        self.continue_on_failure = bool(step_config.get("continue_on_failure", False))
        self._task: asyncio.Task[Any] | None = None
        self._cancel_requested = False

    # -- configuration ------------------------------------------------------------------------
    @classmethod
    def check_config(cls, step_config: Any, prefix: str = "") -> list[FieldError]:
        """Every problem with ``step_config`` for this type, fields prefixed by ``prefix``."""
        if not isinstance(step_config, dict):
            return [FieldError(prefix, "must be an object")]
        if cls.config_model is None:
            errors = []
            if not isinstance(step_config.get("step_id"), str) or not step_config["step_id"]:
                errors.append(FieldError(_join(prefix, "step_id"), "is required"))
            return errors
        errors = _model_problems(cls.config_model, step_config, prefix)
        return errors if errors else cls.extra_checks(step_config, prefix)

    @classmethod
    def extra_checks(cls, step_config: dict[str, Any], prefix: str) -> list[FieldError]:
        """Rules beyond the JSON schema (override in subclasses)."""
        return []

    @classmethod
    def get_config_schema(cls) -> dict[str, Any]:
        """JSON schema of this type's configuration."""
        schema = load_schemas().get(cls.step_type)
        if schema is not None:
            return schema
        if cls.config_model is not None:
            return cls.config_model.model_json_schema()
        return {
            "type": "object",
            "properties": {"step_id": {"type": "string"}, "type": {"const": cls.step_type}},
            "required": ["step_id", "type"],
        }

    def validate_config(self) -> list[str]:
        """
        Validate step configuration

        Returns:
            List of validation errors (empty if valid)
        """
        return [str(e) for e in self.check_config(self.step_config)]

    # -- execution ------------------------------------------------------------------------------
    @abstractmethod
    async def execute(self) -> StepExecutionResult:
        """
        Execute the step

        Returns:
            Step execution result

        Raises:
            StepExecutionError: If step execution fails
        """

    def get_step_type(self) -> str:
        """Get step type identifier"""
        return self.step_type or str(self.step_config.get("type", ""))

    def get_timeout(self) -> int:
        """Get step timeout in seconds"""
        value = self.step_config.get("timeout", DEFAULT_STEP_TIMEOUT)
        return int(value) if isinstance(value, int) and value > 0 else DEFAULT_STEP_TIMEOUT

    def supports_cancel(self) -> bool:
        """Check if step supports cancellation"""
        return True

    async def cancel(self) -> bool:
        """
        Cancel step execution

        Returns:
            True if cancelled successfully (a running ``execute`` was interrupted)
        """
        self._cancel_requested = True
        task = self._task
        if task is None or task.done():
            return False
        task.cancel()
        return True

    async def run(self) -> StepExecutionResult:
        """Run ``execute`` as the cancellable unit (the engine calls this)."""
        self._task = asyncio.current_task()
        try:
            return await self.execute()
        finally:
            self._task = None

    # -- helpers for subclasses -----------------------------------------------------------------
    def new_result(self) -> StepExecutionResult:
        return StepExecutionResult(
            step_id=self.step_id,
            step_name=self.step_name,
            step_type=self.get_step_type(),
            status=StepStatus.RUNNING,
            start_time=utc_now(),
        )

    def finish(
        self,
        result: StepExecutionResult,
        status: StepStatus,
        *,
        output: str | None = None,
        error: str | None = None,
        **metadata: Any,
    ) -> StepExecutionResult:
        result.output = output
        result.error_message = error
        result.metadata.update(metadata)
        result.finish(status, utc_now())
        return result

    def resolved_parameters(self) -> dict[str, Any]:
        params = self.step_config.get("parameters") or {}
        resolved = self.context.resolve_parameters(
            params, step_id=self.step_id, step_type=self.get_step_type()
        )
        assert isinstance(resolved, dict)
        return resolved


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


#: (model, prefix, frozen config) -> its problems. A job's step configurations are validated
#: where the job enters and again each time a step is created to run.
_MODEL_PROBLEMS: dict[tuple[Any, ...], tuple[FieldError, ...]] = {}
_MODEL_PROBLEMS_MAX = 4096
#: A configuration holding a longer text (a script, a query) is checked each time instead:
#: the cache keeps what it holds alive, and 4,096 scripts of ``V2_MAX_SCRIPT_CHARS`` would
#: be gigabytes. Checking such a step costs little beside running it.
_CACHED_TEXT_MAX = 4096
_JSON_SCALARS = (str, int, float, bool, type(None))


def _model_problems(
    model: type[StepConfigBase], step_config: dict[str, Any], prefix: str
) -> list[FieldError]:
    """What ``model`` finds wrong with ``step_config``, cached by the configuration's
    contents (never by its identity: a dict can change between two checks)."""
    frozen = _frozen(step_config)
    key = (model, prefix, frozen) if frozen is not None else None
    if key is not None:
        hit = _MODEL_PROBLEMS.get(key)
        if hit is not None:
            return list(hit)
    try:
        model.model_validate(step_config)
        errors: list[FieldError] = []
    except ValidationError as exc:
        errors = field_errors_from_pydantic(
            exc.errors(include_url=False, include_input=False), prefix, whole=""
        )
    if key is not None:
        if len(_MODEL_PROBLEMS) >= _MODEL_PROBLEMS_MAX:
            _MODEL_PROBLEMS.clear()
        _MODEL_PROBLEMS[key] = tuple(errors)
    return errors


def _frozen(value: Any) -> Any:
    """A hashable image of a JSON value that tells apart what validation may (``1``,
    ``1.0``, ``True``, ``"1"``; a list from a tuple); None for anything else (not cached)."""
    kind = type(value)
    if kind is dict:
        items = []
        for k, v in value.items():
            frozen = _frozen(v)
            if type(k) is not str or frozen is None:
                return None
            items.append((k, frozen))
        return (dict, tuple(items))
    if kind is list:
        parts = []
        for v in value:
            frozen = _frozen(v)
            if frozen is None:
                return None
            parts.append(frozen)
        return (list, tuple(parts))
    if kind is str and len(value) > _CACHED_TEXT_MAX:
        return None
    if kind in _JSON_SCALARS:
        return (kind, value)
    return None
