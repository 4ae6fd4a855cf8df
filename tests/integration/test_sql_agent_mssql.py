"""An imported SQL Server Agent job run on a real SQL Server: T-SQL with GO batches, a token
bound as a parameter, a colon kept as text. Runs when ``V2_TEST_MSSQL_URL`` is set (see
``tests/integration/test_mssql.py``); there is no SQL Server on the project's machines, so it
is skipped with that reason there. Everything before the server is tested without one in
``tests/api/test_sql_agent_import_api.py``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import httpx
import pytest

from app.main import create_app
from tests.api.helpers import BASE_URL, make_settings

MSSQL_URL = os.environ.get("V2_TEST_MSSQL_URL", "")
pytestmark = pytest.mark.skipif(
    not MSSQL_URL, reason="V2_TEST_MSSQL_URL is not set: no SQL Server to run an imported job on"
)
JOB = "0D9E8F7A-0000-4000-8000-00000000A001"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(connections={"ms": MSSQL_URL}, max_body_bytes=1024 * 1024))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            yield http


def step(step_id: int, command: str, **columns: object) -> dict[str, object]:
    return {
        "job_id": JOB,
        "step_id": step_id,
        "step_name": f"Step {step_id}",
        "subsystem": "TSQL",
        "database_name": "tempdb",
        "command": command,
        "on_success_action": 3,
        "on_fail_action": 2,
        **columns,
    }


async def test_an_imported_t_sql_job_runs_on_sql_server(client: httpx.AsyncClient) -> None:
    export = {
        "sysjobs": [{"job_id": JOB, "name": "Live import", "enabled": 1, "start_step_id": 1}],
        "sysjobsteps": [
            step(
                1,
                "CREATE TABLE #runs (name nvarchar(128), at varchar(8));\n"
                "INSERT INTO #runs VALUES (N'$(ESCAPE_SQUOTE(JOBNAME))', '12:30');\nGO\n"
                "SELECT name, at, ':x' AS colon FROM #runs;",
            ),
            step(2, "SELECT $(ESCAPE_NONE(JOBID)) AS job_id;", on_success_action=1),
        ],
        "sysschedules": [],
        "sysjobschedules": [],
    }
    imported = await client.post(
        "/api/v2/import/sql-agent",
        json={"export": export, "options": {"timezone": "UTC", "connection_map": {"tempdb": "ms"}}},
    )
    assert imported.status_code == 201, imported.text

    ran = await client.post("/api/v2/jobs/live-import/run")

    assert ran.status_code == 200, ran.text
    result = ran.json()
    assert result["status"] == "success", result
    first, second = result["steps"]
    assert first["output"] == [{"name": "Live import", "at": "12:30", "colon": ":x"}]
    assert second["output"] == [{"job_id": "live-import"}]
