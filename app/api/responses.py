"""What the routes answer beyond a plain response model: executions as 200/400/202 with the
OpenAPI entries that describe them, and the operationId rule. Shared by every route module."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from app.api.errors import PROBLEM_MEDIA_TYPE
from app.api.openapi import PROBLEM_REF
from app.api.schemas import ExecutionAcceptedRead, ExecutionRead

#: Builds an execution's status URL from its id.
StatusUrl = Callable[[str], str]

EXECUTION_400: dict[str, Any] = {
    "description": "The job ran and did not succeed (`application/json`: the execution, "
    "`success: false`), or the request is invalid (`application/problem+json`: field errors).",
    "content": {
        # One schema per media type would do, but generated clients read only the first
        # JSON media type: this one lets them parse either body.
        "application/json": {
            "schema": {
                "oneOf": [{"$ref": "#/components/schemas/ExecutionRead"}, {"$ref": PROBLEM_REF}]
            }
        },
        PROBLEM_MEDIA_TYPE: {"schema": {"$ref": PROBLEM_REF}},
    },
}


def _links(operations: dict[str, str], parameter: str) -> dict[str, Any]:
    return {
        name: {
            "operationId": operation_id,
            "parameters": {parameter: f"$response.body#/{parameter}"},
            "description": description,
        }
        for name, (operation_id, description) in (
            (n, o.split(":", 1)) for n, o in operations.items()
        )
    }


#: OpenAPI links from an answer carrying ``execution_id`` to what can be done with it.
EXECUTION_LINKS = _links(
    {
        "GetExecution": "get_execution:Follow the execution.",
        "CancelExecution": "cancel_execution:Cancel the execution.",
    },
    "execution_id",
)
#: OpenAPI links from an answer carrying a stored job to what can be done with it.
JOB_LINKS = _links(
    {
        "GetJob": "get_job:Read the job.",
        "UpdateJob": "update_job:Change some fields of the job.",
        "RunJob": "run_job:Run the job now.",
        "GetNextRuns": "get_next_runs:The job's upcoming fires.",
        "DeleteJob": "delete_job:Delete the job.",
    },
    "job_id",
)

ACCEPTED_202: dict[str, Any] = {
    "model": ExecutionAcceptedRead,
    "description": "Started (`?wait=false`); follow it at the Location URL.",
    "links": EXECUTION_LINKS,
    "headers": {
        "Location": {
            "description": "URL of the execution (GET /api/v2/executions/{execution_id}).",
            "schema": {"type": "string"},
        }
    },
}


def operation_id(route: APIRoute) -> str:
    """operationId = the route function's name (``execute_job``, ``get_execution``, ...)."""
    return route.name


def default_status_url(execution_id: str) -> str:
    """Path of an execution's status resource (the routes pass absolute URLs)."""
    return f"/api/v2/executions/{execution_id}"


def status_url(request: Request) -> StatusUrl:
    """Absolute status URLs for the executions this request starts."""
    return lambda execution_id: str(request.url_for("get_execution", execution_id=execution_id))


def execution_read(data: Mapping[str, Any]) -> ExecutionRead:
    """An execution's ``to_dict()`` as its response model (the trigger, schedule and key ids
    come from its metadata when not set)."""
    data = dict(data)
    metadata = data.get("metadata") or {}
    data.setdefault("trigger", metadata.get("trigger"))
    data.setdefault("scheduled_for", metadata.get("scheduled_for"))
    data.setdefault("requested_by", metadata.get("requested_by"))
    data.setdefault("cancelled_by", metadata.get("cancelled_by"))
    return ExecutionRead.model_validate(data)


def accepted_response(accepted: ExecutionAcceptedRead) -> Response:
    """202 with the execution id and its Location."""
    return json_response(accepted, 202, {"Location": accepted.status_url})


def execution_response(result: ExecutionRead) -> Response:
    """200 when the execution succeeded, else 400, with the execution as the body."""
    return json_response(result, 200 if result.success else 400)


def json_response(
    model: BaseModel, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``model`` serialised by pydantic straight to JSON bytes (no dict and ``json.dumps``
    round on the way)."""
    return Response(
        model.model_dump_json(),
        status_code=status_code,
        headers=dict(headers) if headers else None,
        media_type="application/json",
    )
