"""Base class of the step models generated from ``schemas/*.json``.

datamodel-code-generator turns a top-level ``anyOf: [{required: [a]}, {required: [b]}]`` into
one model per branch, which cannot take part in a discriminated union. The generator script
therefore strips that rule before generating, and this base class restores it from the very
same JSON file: it is enforced on validation and re-emitted in the JSON schema (so OpenAPI
shows it). The JSON files stay the single source of truth.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    GetJsonSchemaHandler,
    ValidatorFunctionWrapHandler,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from app.domain.errors import FieldError
from app.domain.field_paths import with_extra_problems


@cache
def load_schemas() -> dict[str, dict[str, Any]]:
    """Step type -> its JSON schema, read from the package's ``schemas`` folder."""
    files: dict[str, dict[str, Any]] = {}
    folder = resources.files("app.steps").joinpath("schemas")
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".json"):
            files[entry.name] = json.loads(entry.read_text(encoding="utf-8"))
    out: dict[str, dict[str, Any]] = {}
    for schema in files.values():
        step_type = schema.get("properties", {}).get("type", {}).get("const")
        if step_type is not None:  # not a part shared by the step types (goto.json)
            out[step_type] = _inline_refs(schema, files)
    return out


def _inline_refs(value: Any, files: dict[str, dict[str, Any]]) -> Any:
    """``value`` with each ``{"$ref": "<file>.json"}`` replaced by that file's schema, so a
    step type's schema stands alone."""
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str) and ref in files:
            part = {k: v for k, v in files[ref].items() if k not in ("$schema", "$id")}
            return _inline_refs(part, files)
        return {k: _inline_refs(v, files) for k, v in value.items()}
    if isinstance(value, list):
        return [_inline_refs(v, files) for v in value]
    return value


def _any_of_for_title(title: str) -> list[list[str]]:
    for schema in load_schemas().values():
        if schema.get("title") == title:
            return [list(branch.get("required", [])) for branch in schema.get("anyOf", [])]
    return []


class StepConfigBase(BaseModel):
    """Common behaviour of generated step configuration models."""

    __required_any_of__: ClassVar[list[list[str]]] = []

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.__required_any_of__ = _any_of_for_title(cls.__name__)

    @model_validator(mode="wrap")
    @classmethod
    def _check_required_any_of(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # Also when other fields are invalid: a missing step_id does not hide a missing script.
        model = with_extra_problems(data, handler, cls._any_of_problems)
        if cls._any_of_problems(
            {n: getattr(model, n, None) for r in cls.__required_any_of__ for n in r}
        ):
            raise ValueError(cls._any_of_message())
        return model

    @classmethod
    def _any_of_problems(cls, data: Any) -> list[FieldError]:
        rules = cls.__required_any_of__
        if not rules or not isinstance(data, dict):
            return []
        if any(all(data.get(name) is not None for name in branch) for branch in rules):
            return []
        return [FieldError("", cls._any_of_message())]

    @classmethod
    def _any_of_message(cls) -> str:
        options = " or ".join("+".join(branch) for branch in cls.__required_any_of__)
        return f"one of {options} is required"

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        rules = cls.__required_any_of__
        if rules:
            target = handler.resolve_ref_schema(schema)
            target["anyOf"] = [{"required": list(branch)} for branch in rules]
        return schema
