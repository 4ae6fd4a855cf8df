"""The OpenAPI document as the API really behaves, and the offline Swagger UI settings.

FastAPI documents a 422 for every route and puts every declared response model under
``application/json``. This service answers validation errors with 400 and every error with
``application/problem+json``, so the generated document is adjusted once, when built.

One more adjustment keeps generated clients whole: a step schema's top-level
``anyOf: [{required: [script]}, {required: [script_path]}]`` makes openapi-python-client see
the whole model as a union of untyped branches (it drops the model). The same rule wrapped as
``allOf: [{anyOf: [...]}]`` means exactly the same in JSON Schema and keeps the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from app.api.errors import PROBLEM_MEDIA_TYPE, RESPONSE_DESCRIPTIONS, RESPONSE_HEADERS
from app.api.security import route_requirements

PROBLEM_REF = "#/components/schemas/Problem"

TAGS_METADATA: list[dict[str, Any]] = [
    {"name": "jobs", "description": "Run a job now or at a set time."},
    {"name": "executions", "description": "Follow and cancel executions."},
    {"name": "engine", "description": "Engine status and the step types it runs."},
    {
        "name": "calendars",
        "description": "Business calendars (holiday lists) that schedules skip or move around.",
    },
    {"name": "health", "description": "Liveness and readiness probes."},
]

API_DESCRIPTION = """\
Runs jobs — an ordered list of SQL, PowerShell and shell steps bound to an IANA timezone — now
or at a set time, on an asyncio engine with per-timezone queues.

* Every error answers `application/problem+json` (RFC 9457) with a list of field `errors`;
  validation errors answer **400**.
* Authenticate with an API key: `Authorization: Bearer <key>` (the **Authorize** button).
  Scopes nest: `read` (status, history, step types, job lists) ⊂ `run` (execute, schedule,
  cancel, run a job) ⊂ `admin` (create, change, delete jobs). **401** without a valid key,
  **403** without the scope, **429** (`Retry-After`) past the executions-per-minute limit.
* A `scheduled_time` with an offset is an instant; without one it is wall-clock time in the
  job's timezone (a time skipped by DST is refused, a repeated one means its first occurrence).
"""

SWAGGER_UI_PARAMETERS: dict[str, Any] = {
    "displayOperationId": True,
    "defaultModelsExpandDepth": 0,
}


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the adjusted document (idempotent)."""
    if getattr(app.state, "openapi_adjusted", False):
        return
    app.state.openapi_adjusted = True
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = adjust_openapi(build(), route_requirements(app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def adjust_openapi(
    schema: dict[str, Any],
    requirements: dict[tuple[str, str], tuple[bool, bool]] | None = None,
) -> dict[str, Any]:
    """``requirements``: (method, path) -> (needs an API key, rate limited); such operations
    get their 401 / 403 / 429 answers declared."""
    for path, path_item in schema.get("paths", {}).items():
        for method, operation in path_item.items():
            if not isinstance(operation, dict):
                continue
            responses = operation.get("responses", {})
            responses.pop("422", None)
            guarded, limited = (requirements or {}).get((method, path), (False, False))
            for status in (401, 403) * guarded + (429,) * limited:
                responses.setdefault(str(status), _problem_response(status))
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    _problem_media_type(response)
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for component in components.values():
        _wrap_required_any_of(component)
    return schema


def _wrap_required_any_of(component: dict[str, Any]) -> None:
    branches = component.get("anyOf")
    if (
        component.get("type") == "object"
        and isinstance(branches, list)
        and all(isinstance(b, dict) and set(b) == {"required"} for b in branches)
    ):
        component.setdefault("allOf", []).append({"anyOf": component.pop("anyOf")})


def _problem_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": RESPONSE_DESCRIPTIONS[status],
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": PROBLEM_REF}}},
    }
    if status in RESPONSE_HEADERS:
        response["headers"] = RESPONSE_HEADERS[status]
    return response


def _problem_media_type(response: dict[str, Any]) -> None:
    content = response.get("content", {})
    body = content.get("application/json")
    if body is not None and body.get("schema") == {"$ref": PROBLEM_REF}:
        content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
