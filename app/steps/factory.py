"""StepFactory: creates steps from configuration; the registry of step types."""

from __future__ import annotations

from typing import Any

from app.domain.errors import ConfigurationError, FieldError
from app.domain.models import set_step_validator
from app.steps.base import ExecutionStep
from app.steps.context import ExecutionContext
from app.steps.powershell import PowerShellStep
from app.steps.shell import ShellStep
from app.steps.sql import SqlStep


class StepFactory:
    """Factory for creating execution steps"""

    _step_types: dict[str, type[ExecutionStep]] = {
        "sql": SqlStep,
        "powershell": PowerShellStep,
        "shell": ShellStep,
    }

    @classmethod
    def create_step(cls, step_config: dict[str, Any], context: ExecutionContext) -> ExecutionStep:
        """
        Create step instance from configuration

        Raises:
            ValueError: If step type is not supported
            ConfigurationError: If step configuration is invalid
        """
        step_class = cls._class_for(step_config)
        errors = step_class.check_config(step_config)
        if errors:
            step_id = step_config.get("step_id") or "?"
            raise ConfigurationError(
                f"invalid configuration for step {step_id!r}: " + "; ".join(map(str, errors)),
                errors,
            )
        return step_class(step_config, context)

    @classmethod
    def register_step_type(cls, step_type: str, step_class: type[ExecutionStep]) -> None:
        """Register new step type (replaces an existing registration of the same name)."""
        if not isinstance(step_type, str) or not step_type.strip():
            raise ValueError("step_type must be a non-empty string")
        if not (isinstance(step_class, type) and issubclass(step_class, ExecutionStep)):
            raise TypeError("step_class must be a subclass of ExecutionStep")
        if not step_class.step_type:
            step_class.step_type = step_type
        cls._step_types[step_type] = step_class

    @classmethod
    def unregister_step_type(cls, step_type: str) -> None:
        cls._step_types.pop(step_type, None)

    @classmethod
    def get_available_step_types(cls) -> list[str]:
        """Get list of available step types"""
        return sorted(cls._step_types)

    @classmethod
    def get_step_schema(cls, step_type: str) -> dict[str, Any]:
        """JSON schema for a step type's configuration; ``ValueError`` if unknown."""
        return cls._lookup(step_type).get_config_schema()

    @classmethod
    def validate_step_config(cls, step_config: Any, prefix: str = "") -> list[FieldError]:
        """Every problem with one step's configuration, without creating it."""
        if not isinstance(step_config, dict):
            return [FieldError(prefix, "must be an object")]
        try:
            step_class = cls._class_for(step_config)
        except ValueError as exc:
            return [FieldError(f"{prefix}.type" if prefix else "type", str(exc))]
        return step_class.check_config(step_config, prefix)

    @classmethod
    def output_fields(cls, step_type: str) -> dict[str, bool] | None:
        """What a step of ``step_type`` outputs (see ``ExecutionStep.output_fields``)."""
        step_class = cls._step_types.get(step_type)
        return step_class.output_fields if step_class is not None else None

    @classmethod
    def _class_for(cls, step_config: Any) -> type[ExecutionStep]:
        if not isinstance(step_config, dict):
            raise ConfigurationError([FieldError("", "a step must be an object")])
        return cls._lookup(step_config.get("type"))

    @classmethod
    def _lookup(cls, step_type: Any) -> type[ExecutionStep]:
        step_class = cls._step_types.get(step_type) if isinstance(step_type, str) else None
        if step_class is None:
            known = ", ".join(cls.get_available_step_types())
            raise ValueError(f"unsupported step type {step_type!r} (available: {known})")
        return step_class


set_step_validator(StepFactory.validate_step_config)
