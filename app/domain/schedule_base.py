"""Base class of the schedule models generated from ``schemas/schedule_config.json``.

Strict like the step models (``"3"`` is not an integer) and dumped by alias, so the
``from`` of a ``repeat`` (``from_`` in Python) is written back as ``from``. The generator
drops an object's ``examples``; this base class restores them from the same JSON file, so
the file stays the single source of the contract.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema


@cache
def schedule_json_schema() -> dict[str, Any]:
    """The JSON schema of ``schedule_config`` (the source the models are generated from)."""
    text = resources.files("app.domain").joinpath("schemas/schedule_config.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


class ScheduleConfigBase(BaseModel):
    """Common configuration of the generated schedule models."""

    model_config = ConfigDict(strict=True, serialize_by_alias=True, validate_by_name=False)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        source = schedule_json_schema()["$defs"].get(cls.__name__, {})
        if "examples" in source:
            target = handler.resolve_ref_schema(schema)
            target["examples"] = source["examples"]
        return schema
