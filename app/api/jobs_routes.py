"""Stored jobs (``/api/v2/jobs/...``), schedule previews and the execution history list.

Concurrency: every job answer carries ``ETag: "<version>"``; a PUT, PATCH, DELETE, enable or
disable with ``If-Match: "<version>"`` is refused with 412 when the job changed meanwhile.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, Header, Path, Request, Response
from fastapi.responses import JSONResponse

from app.api.dependencies import JobAPIDep, StoredJobsDep
from app.api.errors import InvalidRequestError, problem_responses
from app.api.jobs_schemas import (
    EXAMPLE_RECURRING_JOB,
    BackfillCreate,
    BackfillRead,
    ExecutionPageRead,
    JobPageRead,
    JobPatch,
    JobRead,
    NextRunsRead,
    RunCreate,
    SchedulePreviewCreate,
)
from app.api.queries import ExecutionListQuery, JobListQuery, NextRunsQuery, NoQuery, WaitQuery
from app.api.responses import (
    ACCEPTED_202,
    EXECUTION_400,
    EXECUTION_LINKS,
    JOB_LINKS,
    accepted_response,
    execution_response,
    json_response,
    operation_id,
    status_url,
)
from app.api.schemas import ExecutionAcceptedRead, ExecutionRead, JobCreate, Problem
from app.api.security import AdminKey, ExecutionKey, ReadKey, key_id
from app.domain.errors import FieldError

jobs_router = APIRouter(prefix="/api/v2", generate_unique_id_function=operation_id)

JobId = Annotated[str, Path(min_length=1, max_length=100, description="The job's job_id.")]
_404 = {"model": Problem, "description": "No job with this job_id."}
_412 = {"model": Problem, "description": "If-Match names an older version: re-read the job."}
_JOB_HEADERS = {
    "ETag": {"description": 'The job\'s version, e.g. `"3"`.', "schema": {"type": "string"}}
}
# What a route that changes a stored job answers besides its 200.
_JOB_CHANGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"headers": _JOB_HEADERS, "links": JOB_LINKS},
    404: _404,
    412: _412,
    **problem_responses(400, 413, 500, 503),
}


def expected_version(
    if_match: Annotated[
        str | None,
        Header(
            description='The version you read (`ETag`), e.g. `"3"`: refused with 412 if the '
            "job changed since."
        ),
    ] = None,
) -> int | None:
    """The version ``If-Match`` names (None without one, or with ``*``)."""
    if if_match is None or if_match.strip() == "*":
        return None
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise InvalidRequestError([FieldError("If-Match", 'must be a version such as "3"')])
    return int(text)


ExpectedVersion = Annotated[int | None, Depends(expected_version)]


def job_response(job: JobRead, status: int = 200, request: Request | None = None) -> Response:
    """The job with its version as ETag (and, when created, its Location)."""
    headers = {"ETag": f'"{job.version}"'}
    if status == 201 and request is not None:
        # Path parameters are not percent-encoded by url_for; a job_id may be any text.
        headers["Location"] = str(request.url_for("get_job", job_id=quote(job.job_id, safe="")))
    return json_response(job, status, headers)


@jobs_router.post(
    "/jobs",
    tags=["job definitions"],
    summary="Create a stored job",
    description="Stores a job definition, optionally with a recurring `schedule_config` "
    "(cron, interval or once, evaluated in the job's timezone; see the README's DST policy) "
    "and its `misfire_policy` / `overlap_policy`. Answers 201 with the job, its version "
    "(ETag) and its next fire time; 409 if the job_id exists.",
    status_code=201,
    response_model=JobRead,
    responses={
        201: {"headers": _JOB_HEADERS, "links": JOB_LINKS},
        409: {"model": Problem, "description": "A job with this job_id exists."},
        **problem_responses(400, 413, 500, 503),
    },
)
async def create_job(
    job: Annotated[
        JobCreate,
        Body(
            openapi_examples={
                "recurring": {
                    "summary": "A weekday job at 02:30 local time",
                    "value": EXAMPLE_RECURRING_JOB,
                }
            }
        ),
    ],
    key: AdminKey,
    jobs: StoredJobsDep,
    request: Request,
    query: NoQuery,
) -> Response:
    return job_response(await jobs.create(job, requested_by=key_id(key)), 201, request)


@jobs_router.get(
    "/jobs",
    tags=["job definitions"],
    summary="List stored jobs",
    description="Jobs ordered by job_id, filtered by `enabled` and `timezone`; pass "
    "`next_cursor` back as `cursor` for the next page.",
    response_model=JobPageRead,
    responses=problem_responses(400, 500, 503),
)
async def list_jobs(_: ReadKey, jobs: StoredJobsDep, query: JobListQuery) -> JobPageRead:
    return await jobs.list_jobs(query.to_query())


@jobs_router.get(
    "/jobs/{job_id}",
    tags=["job definitions"],
    summary="Get a stored job",
    description="The job with its version (also as ETag), next fire time (UTC and local) "
    "and last execution.",
    response_model=JobRead,
    responses={
        200: {"headers": _JOB_HEADERS, "links": JOB_LINKS},
        404: _404,
        **problem_responses(400, 500, 503),
    },
)
async def get_job(job_id: JobId, _: ReadKey, jobs: StoredJobsDep, query: NoQuery) -> Response:
    return job_response(await jobs.get(job_id))


@jobs_router.put(
    "/jobs/{job_id}",
    tags=["job definitions"],
    summary="Replace a stored job",
    description="Replaces the whole definition (the body's job_id must match the path). "
    "The next fire is recomputed from the schedule.",
    response_model=JobRead,
    responses=_JOB_CHANGE_RESPONSES,
)
async def replace_job(
    job_id: JobId,
    job: Annotated[
        JobCreate,
        Body(
            openapi_examples={
                "recurring": {"summary": "The whole definition", "value": EXAMPLE_RECURRING_JOB}
            }
        ),
    ],
    key: AdminKey,
    jobs: StoredJobsDep,
    version: ExpectedVersion,
    query: NoQuery,
) -> Response:
    return job_response(
        await jobs.replace(job_id, job, requested_by=key_id(key), expected_version=version)
    )


@jobs_router.patch(
    "/jobs/{job_id}",
    tags=["job definitions"],
    summary="Change some fields of a stored job",
    description="Changes only the fields given; the result is validated as a whole.",
    response_model=JobRead,
    responses=_JOB_CHANGE_RESPONSES,
)
async def update_job(
    job_id: JobId,
    changes: Annotated[
        JobPatch,
        Body(
            openapi_examples={
                "disable": {"summary": "Disable the job", "value": {"enabled": False}},
                "every 15 minutes": {
                    "summary": "Change the schedule",
                    "value": {"schedule_config": {"type": "interval", "every_seconds": 900}},
                },
            }
        ),
    ],
    key: AdminKey,
    jobs: StoredJobsDep,
    version: ExpectedVersion,
    query: NoQuery,
) -> Response:
    return job_response(
        await jobs.patch(job_id, changes, requested_by=key_id(key), expected_version=version)
    )


@jobs_router.delete(
    "/jobs/{job_id}",
    tags=["job definitions"],
    summary="Delete a stored job",
    description="Deletes the definition and stops its schedule; its execution history stays.",
    status_code=204,
    response_class=Response,
    responses={404: _404, 412: _412, **problem_responses(400, 500, 503)},
)
async def delete_job(
    job_id: JobId, _: AdminKey, jobs: StoredJobsDep, version: ExpectedVersion, query: NoQuery
) -> Response:
    await jobs.delete(job_id, expected_version=version)
    return Response(status_code=204)


@jobs_router.post(
    "/jobs/{job_id}/enable",
    tags=["job definitions"],
    summary="Enable a stored job",
    description="Its schedule fires again from the next fire time after now.",
    response_model=JobRead,
    responses=_JOB_CHANGE_RESPONSES,
)
async def enable_job(
    job_id: JobId, _: AdminKey, jobs: StoredJobsDep, version: ExpectedVersion, query: NoQuery
) -> Response:
    return job_response(await jobs.set_enabled(job_id, True, expected_version=version))


@jobs_router.post(
    "/jobs/{job_id}/disable",
    tags=["job definitions"],
    summary="Disable a stored job",
    description="Stops future fires; running executions are not affected.",
    response_model=JobRead,
    responses=_JOB_CHANGE_RESPONSES,
)
async def disable_job(
    job_id: JobId, _: AdminKey, jobs: StoredJobsDep, version: ExpectedVersion, query: NoQuery
) -> Response:
    return job_response(await jobs.set_enabled(job_id, False, expected_version=version))


ScheduleName = Annotated[
    str, Path(min_length=1, max_length=100, description="The name of one of the job's schedules.")
]


@jobs_router.post(
    "/jobs/{job_id}/schedules/{name}/enable",
    tags=["job definitions"],
    summary="Enable one schedule of a stored job",
    description="The named schedule fires again (if the job is enabled); the others are "
    "unchanged. Idempotent.",
    response_model=JobRead,
    responses=_JOB_CHANGE_RESPONSES,
)
async def enable_job_schedule(
    job_id: JobId,
    name: ScheduleName,
    _: AdminKey,
    jobs: StoredJobsDep,
    version: ExpectedVersion,
    query: NoQuery,
) -> Response:
    return job_response(
        await jobs.set_schedule_enabled(job_id, name, True, expected_version=version)
    )


@jobs_router.post(
    "/jobs/{job_id}/schedules/{name}/disable",
    tags=["job definitions"],
    summary="Disable one schedule of a stored job",
    description="The named schedule stops firing; the job's other schedules keep firing.",
    response_model=JobRead,
    responses=_JOB_CHANGE_RESPONSES,
)
async def disable_job_schedule(
    job_id: JobId,
    name: ScheduleName,
    _: AdminKey,
    jobs: StoredJobsDep,
    version: ExpectedVersion,
    query: NoQuery,
) -> Response:
    return job_response(
        await jobs.set_schedule_enabled(job_id, name, False, expected_version=version)
    )


@jobs_router.post(
    "/jobs/{job_id}/run",
    tags=["job definitions"],
    summary="Run a stored job now",
    description="Runs the stored job now, as `POST /api/v2/jobs/execute` does: 200 with the "
    "execution when it succeeds, 400 with the execution when it does not, or 202 with "
    '`?wait=false` (or `"wait": false`). An optional body steers the run: parameter '
    "overrides, the step to start at, the logical date of its run tokens. The run follows "
    'the job\'s overlap_policy (409 when `skip` and it is running) unless `"overlap": '
    '"allow"` is sent by an admin key. The overrides and start step are recorded in the '
    "execution's metadata.",
    response_model=ExecutionRead,
    responses={
        200: {"links": EXECUTION_LINKS},
        202: ACCEPTED_202,
        400: EXECUTION_400,
        404: _404,
        409: {
            "model": Problem,
            "description": "The job is running and its overlap_policy is skip.",
        },
        **problem_responses(403, 413, 500, 503),
    },
)
async def run_job(
    job_id: JobId,
    key: ExecutionKey,
    jobs: StoredJobsDep,
    request: Request,
    query: WaitQuery,
    body: Annotated[
        RunCreate | None,
        Body(
            openapi_examples={
                "plain": {"summary": "Run it as it is stored", "value": {}},
                "steered": {
                    "summary": "Re-run the load of one day, from the load step",
                    "value": {
                        "parameters": {"load": {"day": "2026-11-30"}},
                        "start_step_id": "load",
                        "logical_date": "2026-11-30",
                        "wait": False,
                    },
                },
            }
        ),
    ] = None,
) -> Response:
    result = await jobs.run(job_id, body, key=key, wait=query.wait, status_url=status_url(request))
    if isinstance(result, ExecutionAcceptedRead):
        return accepted_response(result)
    return execution_response(result)


@jobs_router.post(
    "/jobs/{job_id}/backfill",
    tags=["schedules"],
    summary="Run a stored job for each fire of its schedule in a range",
    description="Makes one run per fire of the job's schedule between `from` and `to`, each "
    "with that fire's `scheduled_for` and `logical_date` (run tokens). Runs are keyed by "
    "(job_id, scheduled_for): with `only_missing` (default) a fire that already has a run is "
    "left out, so repeating a backfill makes nothing new. The runs wait in the job's "
    "timezone queue (at most its concurrency at a time, in fire order). 202 with the runs "
    "made; 200 when there is nothing to run or with `dry_run`, which creates nothing. A "
    "range of more than 10,000 fires, more runs than `max_runs`, or `to` before `from` is a "
    "400.",
    response_model=BackfillRead,
    responses={
        202: {"model": BackfillRead, "description": "The runs were made."},
        404: _404,
        **problem_responses(400, 403, 413, 500, 503),
    },
)
async def backfill_job(
    job_id: JobId,
    body: Annotated[
        BackfillCreate,
        Body(
            openapi_examples={
                "week": {
                    "summary": "Every fire of a week, skipping those that ran",
                    "value": {"from": "2026-11-23", "to": "2026-11-29", "only_missing": True},
                },
                "dry": {
                    "summary": "What would run, without running it",
                    "value": {
                        "from": "2026-11-01T00:00:00Z",
                        "to": "2026-11-30T23:59:59Z",
                        "dry_run": True,
                    },
                },
            }
        ),
    ],
    key: ExecutionKey,
    jobs: StoredJobsDep,
    query: NoQuery,
) -> Response:
    plan = await jobs.backfill(job_id, body, requested_by=key_id(key))
    made = plan.runs and not plan.dry_run
    return JSONResponse(plan.model_dump(mode="json"), status_code=202 if made else 200)


@jobs_router.get(
    "/jobs/{job_id}/next-runs",
    tags=["schedules"],
    summary="Upcoming fires of a stored job",
    description="The next `count` fire instants of the job's schedule, each in UTC and in "
    "the job's timezone with its offset, flagged when a DST gap moved it. Empty when the job "
    "is disabled or has no schedule.",
    response_model=NextRunsRead,
    responses={404: _404, **problem_responses(400, 500, 503)},
)
async def get_next_runs(
    job_id: JobId,
    _: ReadKey,
    jobs: StoredJobsDep,
    query: NextRunsQuery,
) -> NextRunsRead:
    return await jobs.next_runs(job_id, query.count, after=query.after)


@jobs_router.post(
    "/schedules/preview",
    tags=["schedules"],
    summary="Preview a schedule",
    description="Stateless: the next `count` fires of a `schedule_config` in `timezone` "
    "after `after` (default now), each in UTC and local time, flagged when a DST gap moved "
    "it, when its local time repeats (fall-back), and when a business calendar excludes or "
    "moves it; with `schedules`, merged and named by source.",
    response_model=NextRunsRead,
    responses=problem_responses(400, 413, 500, 503),
)
async def preview_schedule(
    preview: Annotated[
        SchedulePreviewCreate,
        Body(
            openapi_examples={
                "gap": {
                    "summary": "A 02:30 job on the day New York springs forward",
                    "value": {
                        "schedule_config": {"type": "cron", "expression": "30 2 * * *"},
                        "timezone": "America/New_York",
                        "after": "2026-03-07T00:00:00Z",
                        "count": 3,
                    },
                }
            }
        ),
    ],
    _: ReadKey,
    jobs: StoredJobsDep,
    query: NoQuery,
) -> NextRunsRead:
    return await jobs.preview(preview)


@jobs_router.get(
    "/executions",
    tags=["executions"],
    summary="List executions (history)",
    description="Recorded executions, newest first, filtered by job, status, timezone and "
    "start-time range (`started_after` inclusive, `started_before` exclusive, ISO 8601 with "
    "an offset); pass `next_cursor` back as `cursor` for the next page. Served from the "
    "database, so it includes runs from before a restart.",
    response_model=ExecutionPageRead,
    responses=problem_responses(400, 500, 503),
)
async def list_executions(
    _: ReadKey, api: JobAPIDep, query: ExecutionListQuery
) -> ExecutionPageRead:
    return await api.list_executions(query.to_query())


__all__: list[Any] = ["jobs_router"]
