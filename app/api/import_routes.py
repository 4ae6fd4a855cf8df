"""``POST /api/v2/import/sql-agent``: SQL Server Agent jobs from an msdb export
(``app.api.sql_agent_import``; README "Moving from SQL Server Agent")."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Response

from app.api.dependencies import JobAPIDep
from app.api.errors import problem_responses
from app.api.queries import NoQuery
from app.api.responses import operation_id
from app.api.schemas import Problem
from app.api.security import AdminKey, key_id
from app.api.sql_agent_import import (
    EXAMPLE_IMPORT,
    SqlAgentImportCreate,
    SqlAgentImportRead,
    SqlAgentImportService,
)

import_router = APIRouter(prefix="/api/v2", generate_unique_id_function=operation_id)


async def get_importer(api: JobAPIDep) -> SqlAgentImportService:
    return SqlAgentImportService(api.engine, api.parser)


ImporterDep = Annotated[SqlAgentImportService, Depends(get_importer)]


@import_router.post(
    "/import/sql-agent",
    tags=["jobs"],
    summary="Import SQL Server Agent jobs",
    description="Maps an msdb export (`sysjobs`, `sysjobsteps`, `sysschedules`, "
    "`sysjobschedules`, as the README's `FOR JSON PATH` query writes them) to stored jobs "
    "and stores them in one transaction: all or none. The answer lists the jobs and a "
    "`report` of everything not carried over as it was, each entry naming its job, step or "
    "schedule. `options.dry_run` answers the same without storing anything. **201** when "
    "jobs were stored, **200** for a dry run or when every job was skipped; **400** names "
    "every bad row and column of the export at once; **409** (on_conflict `fail`) names the "
    "jobs whose job_id is taken.",
    response_model=SqlAgentImportRead,
    responses={
        201: {"model": SqlAgentImportRead, "description": "Jobs were stored."},
        409: {"model": Problem, "description": "job_ids are taken (on_conflict fail)."},
        **problem_responses(400, 401, 403, 413, 500, 503),
    },
)
async def import_sql_agent(
    body: Annotated[
        SqlAgentImportCreate,
        Body(openapi_examples={"preview": {"summary": "A dry run", "value": EXAMPLE_IMPORT}}),
    ],
    key: AdminKey,
    importer: ImporterDep,
    response: Response,
    query: NoQuery,
) -> SqlAgentImportRead:
    result = await importer.run(body, requested_by=key_id(key))
    response.status_code = 201 if result.created + result.replaced and not result.dry_run else 200
    return result
