"""The v2 routes (spec: ``/api/v2/...``) and the health probes. Each route is a few lines
that call ``ModernJobAPI``; errors are mapped in ``app.api.errors``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Path, Query, Request, Response, Security
from fastapi.routing import APIRoute
from pydantic import BaseModel

from app.api.deps import JobAPIDep
from app.api.errors import PROBLEM_MEDIA_TYPE, problem_responses
from app.api.openapi import PROBLEM_REF
from app.api.schemas import (
    EXAMPLE_FAILING_JOB,
    EXAMPLE_JOB,
    EngineStatusRead,
    ExecutionAcceptedRead,
    ExecutionRead,
    HealthRead,
    JobCreate,
    ReadinessRead,
    ScheduleCreate,
    ScheduleRead,
    StepTypeListRead,
)
from app.api.security import ExecutionKey, ReadKey, RunKey, key_id
from app.api.service import StatusUrl


def operation_id(route: APIRoute) -> str:
    """operationId = the route function's name (``execute_job``, ``get_execution``, ...)."""
    return route.name


v2_router = APIRouter(prefix="/api/v2", generate_unique_id_function=operation_id)
health_router = APIRouter(generate_unique_id_function=operation_id, tags=["health"])

ExecutionId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=100,
        description="The execution's id (from execute, schedule or a Location header).",
        examples=["3f2b8c1e9a7d4e6f8b0c1d2e3f4a5b6c"],
    ),
]

_EXECUTION_400: dict[str, Any] = {
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

_ACCEPTED_202: dict[str, Any] = {
    "model": ExecutionAcceptedRead,
    "description": "Started (`?wait=false`); follow it at the Location URL.",
    "headers": {
        "Location": {
            "description": "URL of the execution (GET /api/v2/executions/{execution_id}).",
            "schema": {"type": "string"},
        }
    },
}


def _status_url(request: Request) -> StatusUrl:
    return lambda execution_id: str(request.url_for("get_execution", execution_id=execution_id))


@v2_router.post(
    "/jobs/execute",
    tags=["jobs"],
    summary="Execute a job now",
    description="Runs the job immediately (it does not wait in its timezone queue) and "
    "answers with the full execution result: every step with its status, times, duration, "
    "output and error. **200** when the job succeeds; **400** with the same execution body "
    "(`success: false`) when it failed, partly failed, timed out or was cancelled, and 400 "
    "problem details when the request is invalid. With `?wait=false` it answers **202** at "
    "once with the `execution_id` and a `Location` to follow.",
    response_model=ExecutionRead,
    response_description="The job succeeded: the full execution result.",
    responses={
        202: _ACCEPTED_202,
        400: _EXECUTION_400,
        **problem_responses(413, 500, 503),
    },
)
async def execute_job(
    job: Annotated[
        JobCreate,
        Body(
            openapi_examples={
                "hello": {"summary": "One shell step that succeeds", "value": EXAMPLE_JOB},
                "failing": {
                    "summary": "A step that fails (400, later steps skipped)",
                    "value": EXAMPLE_FAILING_JOB,
                },
            }
        ),
    ],
    key: ExecutionKey,
    api: JobAPIDep,
    request: Request,
    wait: Annotated[
        bool, Query(description="Wait for the result (default) or answer 202 at once.")
    ] = True,
) -> Response:
    if not wait:
        return accepted_response(
            await api.submit(job, _status_url(request), requested_by=key_id(key))
        )
    return execution_response(await api.execute(job, requested_by=key_id(key)))


def accepted_response(accepted: ExecutionAcceptedRead) -> Response:
    """202 with the execution id and its Location."""
    headers = {"Location": accepted.status_url}
    return _json(accepted, 202, headers)


def execution_response(result: ExecutionRead) -> Response:
    """200 when the execution succeeded, else 400, with the execution as the body."""
    return _json(result, 200 if result.success else 400)


def _json(model: BaseModel, status_code: int, headers: dict[str, str] | None = None) -> Response:
    """``model`` serialised by pydantic straight to JSON bytes (no dict and ``json.dumps``
    round on the way)."""
    return Response(
        model.model_dump_json(),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


@v2_router.post(
    "/jobs/schedule",
    tags=["jobs"],
    summary="Schedule a job",
    description="Schedules the job to run once at `scheduled_time`. A time with an offset "
    "is an instant; a time without one is wall-clock time in the job's timezone. Answers "
    "with the `execution_id` and the instant in UTC and in the job's timezone. **400** for "
    "an invalid job, a time in the past, or a local time that does not exist (DST gap).",
    response_model=ScheduleRead,
    response_description="Scheduled: the execution id and the instant in UTC and local time.",
    responses=problem_responses(400, 413, 500, 503),
)
async def schedule_job(
    body: Annotated[
        ScheduleCreate,
        Body(
            openapi_examples={
                "local": {
                    "summary": "Wall-clock time in the job's timezone",
                    "value": {"job": EXAMPLE_JOB, "scheduled_time": "2035-01-15T09:30:00"},
                },
                "instant": {
                    "summary": "An instant (UTC)",
                    "value": {"job": EXAMPLE_JOB, "scheduled_time": "2035-01-15T08:30:00Z"},
                },
            }
        ),
    ],
    key: ExecutionKey,
    api: JobAPIDep,
    request: Request,
) -> ScheduleRead:
    return await api.schedule(body, _status_url(request), requested_by=key_id(key))


@v2_router.get(
    "/executions/{execution_id}",
    tags=["executions"],
    summary="Get an execution",
    description="The execution's status and the steps of its latest attempt, whether it is "
    "scheduled, queued, running or finished.",
    response_model=ExecutionRead,
    response_description="The execution.",
    responses=problem_responses(400, 404, 500, 503),
)
async def get_execution(execution_id: ExecutionId, _: ReadKey, api: JobAPIDep) -> ExecutionRead:
    return await api.get_execution(execution_id)


@v2_router.post(
    "/executions/{execution_id}/cancel",
    tags=["executions"],
    summary="Cancel an execution",
    description="Cancels a scheduled, queued or running execution. A running one is stopped "
    "for real (query cancelled, process group killed) and recorded `cancelled` before the "
    "answer, which is the execution afterwards. **404** when unknown, **409** when it "
    "already finished.",
    response_model=ExecutionRead,
    response_description="Cancelled: the execution afterwards.",
    responses=problem_responses(400, 404, 409, 413, 500, 503),
)
async def cancel_execution(execution_id: ExecutionId, key: RunKey, api: JobAPIDep) -> ExecutionRead:
    return await api.cancel(execution_id, cancelled_by=key_id(key))


@v2_router.get(
    "/execution/status",
    tags=["engine"],
    summary="Engine status",
    description="Engine health, every timezone queue's status (depth, active, limits, "
    "outcome counts) and the executions running now.",
    response_model=EngineStatusRead,
    response_description="Engine health, queues and running executions.",
    responses=problem_responses(500, 503),
)
async def get_engine_status(_: ReadKey, api: JobAPIDep) -> EngineStatusRead:
    return await api.status()


@v2_router.get(
    "/steps/types",
    tags=["engine"],
    summary="List step types",
    description="Every step type the engine runs, with the JSON schema of its configuration.",
    response_model=StepTypeListRead,
    response_description="The step types and their configuration schemas.",
    responses=problem_responses(500, 503),
)
async def list_step_types(_: ReadKey, api: JobAPIDep) -> StepTypeListRead:
    return api.step_types()


@health_router.get(
    "/health",
    summary="Liveness",
    description="200 while the process serves requests.",
    response_model=HealthRead,
    response_description="The process is serving.",
    responses=problem_responses(500),
)
async def health() -> HealthRead:
    return HealthRead()


@health_router.get(
    "/ready",
    summary="Readiness",
    description="200 when the engine is running and its execution store (the database) "
    "answers; 503 otherwise.",
    response_model=ReadinessRead,
    response_description="Ready to take work.",
    responses=problem_responses(500, 503),
)
async def ready(api: JobAPIDep) -> ReadinessRead:
    return await api.readiness()


def include_routes(app: FastAPI) -> None:
    """Mount every route of the service on ``app`` (also used by create_modern_job_routes)."""
    from app.api.events_routes import events_router
    from app.api.jobs_routes import jobs_router
    from app.api.security import scope_by_method

    app.include_router(v2_router)
    app.include_router(events_router)
    # Routes that declare no scope of their own get one by method (GET: read, .../run: run,
    # other writes: admin); those that do are left to their own.
    app.include_router(jobs_router, dependencies=[Security(scope_by_method)])
    app.include_router(health_router)
