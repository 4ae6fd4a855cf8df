"""The v2 routes (spec: ``/api/v2/...``) and the health probes. Each route is a few lines
that call ``ModernJobAPI``; errors are mapped in ``app.api.errors``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Request, Response

from app.api.batch_schemas import MAX_BATCH_ITEMS, ScheduleBatchCreate, ScheduleBatchRead
from app.api.dependencies import JobAPIDep
from app.api.errors import problem_responses
from app.api.queries import NoQuery, WaitQuery
from app.api.responses import (
    ACCEPTED_202,
    EXECUTION_400,
    EXECUTION_LINKS,
    accepted_response,
    execution_response,
    operation_id,
    status_url,
)
from app.api.schemas import (
    EXAMPLE_FAILING_JOB,
    EXAMPLE_JOB,
    EngineStatusRead,
    ExecutionRead,
    HealthRead,
    JobCreate,
    ReadinessRead,
    ScheduleCreate,
    ScheduleRead,
    StepTypeListRead,
)
from app.api.security import ExecutionKey, ReadKey, RunKey, key_id

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
        200: {"links": EXECUTION_LINKS},
        202: ACCEPTED_202,
        400: EXECUTION_400,
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
    query: WaitQuery,
) -> Response:
    if not query.wait:
        return accepted_response(
            await api.submit(job, status_url(request), requested_by=key_id(key))
        )
    return execution_response(await api.execute(job, requested_by=key_id(key)))


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
    responses={200: {"links": EXECUTION_LINKS}, **problem_responses(400, 413, 500, 503)},
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
    query: NoQuery,
) -> ScheduleRead:
    return await api.schedule(body, status_url(request), requested_by=key_id(key))


@v2_router.post(
    "/jobs/schedule/batch",
    tags=["jobs"],
    summary="Schedule many jobs",
    description=f"Schedules up to {MAX_BATCH_ITEMS:,} one-off runs, each item "
    "`{job, scheduled_time}` checked exactly as `POST /api/v2/jobs/schedule` checks one, "
    "and writes the accepted runs in one transaction. Answers item by item, in request "
    "order: an `execution_id`, or `errors` naming the item and its field "
    "(`items[3].scheduled_time`). With `atomic: true` (the default) one bad item refuses "
    "the whole request: **400** naming every bad item's fields (**403** when only "
    "connection access is wrong), nothing written. With `atomic: false` the good items are "
    "scheduled and the bad ones answered with their errors (**200**). More than "
    f"{MAX_BATCH_ITEMS:,} items is **400** naming `items`; a body over `V2_MAX_BODY_BYTES` "
    "is **413**. The request takes one slot of the rate limit.",
    response_model=ScheduleBatchRead,
    response_description="Every item's answer; the scheduled ones are written.",
    responses={**problem_responses(400, 403, 413, 500, 503)},
)
async def schedule_job_batch(
    body: Annotated[
        ScheduleBatchCreate,
        Body(
            openapi_examples={
                "atomic": {
                    "summary": "Two runs, all or nothing",
                    "value": {
                        "items": [
                            {"job": EXAMPLE_JOB, "scheduled_time": "2035-01-15T09:30:00"},
                            {"job": EXAMPLE_JOB, "scheduled_time": "2035-01-16T08:30:00Z"},
                        ]
                    },
                },
                "per_item": {
                    "summary": "Each item on its own (atomic: false)",
                    "value": {
                        "atomic": False,
                        "items": [
                            {"job": EXAMPLE_JOB, "scheduled_time": "2035-01-15T09:30:00"},
                            {"job": EXAMPLE_JOB, "scheduled_time": "2035-01-16T08:30:00Z"},
                        ],
                    },
                },
            }
        ),
    ],
    key: ExecutionKey,
    api: JobAPIDep,
    request: Request,
    query: NoQuery,
) -> ScheduleBatchRead:
    return await api.schedule_batch(body, status_url(request), requested_by=key_id(key))


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
async def get_execution(
    execution_id: ExecutionId, _: ReadKey, api: JobAPIDep, query: NoQuery
) -> ExecutionRead:
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
async def cancel_execution(
    execution_id: ExecutionId, key: RunKey, api: JobAPIDep, query: NoQuery
) -> ExecutionRead:
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
async def get_engine_status(_: ReadKey, api: JobAPIDep, query: NoQuery) -> EngineStatusRead:
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
async def list_step_types(_: ReadKey, api: JobAPIDep, query: NoQuery) -> StepTypeListRead:
    return api.step_types()


@health_router.get(
    "/health",
    summary="Liveness",
    description="200 while the process serves requests.",
    response_model=HealthRead,
    response_description="The process is serving.",
    responses=problem_responses(500),
)
async def health(query: NoQuery) -> HealthRead:
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
async def ready(api: JobAPIDep, query: NoQuery) -> ReadinessRead:
    return await api.readiness()
