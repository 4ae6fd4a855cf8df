"""POST /api/v2/import/sql-agent through the real app on SQLite and PostgreSQL: dry run, real
run (the jobs' next fires as SQL Server Agent's, an imported job run with its tokens bound),
all or none, on_conflict modes, 400s naming row and column, the admin scope."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.api.keys import key_entry, new_api_key
from app.main import create_app
from tests.api.helpers import BASE_URL, assert_problem, make_settings
from tests.support import msdb

KEYS = {"runner": new_api_key(), "admin": new_api_key()}
ENTRIES = [
    key_entry(KEYS["runner"], "runner", ["run"]),
    key_entry(KEYS["admin"], "admin", ["admin"]),
]
ADMIN = {"Authorization": f"Bearer {KEYS['admin']}"}
RUNNER = {"Authorization": f"Bearer {KEYS['runner']}"}
IMPORT = "/api/v2/import/sql-agent"
OPTIONS = {
    "timezone": "Europe/London",
    "connection_map": {"SQLPROD01/DW": "warehouse", "Ops": "ops"},
}


@pytest.fixture
async def client(history_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        database_url=history_url,
        auto_migrate=True,
        api_keys=ENTRIES,
        # The T-SQL of the fixture is for SQL Server (no server here: the port is closed; the
        # jobs are stored and previewed, not run); "work" is a real database for a run.
        connections={
            "warehouse": "mssql+aioodbc://etl:pw@127.0.0.1:1/DW?driver=FreeTDS",
            "ops": {
                "url": "mssql+aioodbc://etl:pw@127.0.0.1:1/Ops?driver=FreeTDS",
                "read_only": True,
            },
            "work": f"sqlite+aiosqlite:///{tmp_path / 'work.db'}",
        },
        max_steps_per_job=10,
        max_body_bytes=1024 * 1024,
        max_timeout_seconds=7200,
    )
    app: FastAPI = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=ADMIN) as http:
            yield http


def body(export: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    return {"export": export or msdb.export(), "options": {**OPTIONS, **options}}


async def job_ids(client: httpx.AsyncClient) -> list[str]:
    response = await client.get("/api/v2/jobs", params={"limit": 500})
    assert response.status_code == 200, response.text
    return [j["job_id"] for j in response.json()["items"]]


IMPORTED = ["archive-logs", "intraday-feed", "month-end-close", "nightly-etl"]


# -- dry run and real run ------------------------------------------------------------------
async def test_dry_run_answers_the_jobs_and_the_report_and_stores_nothing(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(IMPORT, json=body(dry_run=True))

    assert response.status_code == 200, response.text
    data = response.json()
    assert data["dry_run"] is True
    assert (data["created"], data["replaced"], data["skipped"], data["not_imported"]) == (
        4,
        0,
        0,
        1,
    )
    assert sorted(j["job_id"] for j in data["jobs"]) == IMPORTED
    assert {j["action"] for j in data["jobs"]} == {"create"}
    etl = next(j for j in data["jobs"] if j["job_id"] == "nightly-etl")
    assert etl["sql_agent_job_id"] == msdb.ETL and etl["sql_agent_name"] == "Nightly ETL"
    assert etl["definition"]["steps"][1]["retry_interval_seconds"] == 300
    assert etl["next_fire_at"] is not None
    ssis = [e for e in data["report"] if e["job"] == "SSIS package"]
    assert [(e["kind"], e["outcome"], e["source"], e["step"]) for e in ssis] == [
        ("subsystem", "job_not_imported", "sysjobsteps[8].subsystem", 1)
    ]
    assert await job_ids(client) == []


async def test_real_run_stores_the_jobs_with_sql_agents_schedules(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(IMPORT, json=body())

    assert response.status_code == 201, response.text
    assert response.json()["created"] == 4
    assert await job_ids(client) == IMPORTED
    stored = (await client.get("/api/v2/jobs/nightly-etl")).json()
    assert stored["version"] == 1 and stored["timezone"] == "Europe/London"
    assert [s["step_id"] for s in stored["steps"]] == ["step_1", "step_2", "step_3"]
    assert stored["steps"][1]["on_failure"] == "next"
    # Each batch commits as it runs on SQL Server, as in SQL Agent; not on a read_only one.
    assert [s["transaction"] for s in stored["steps"]] == [False, False, True]
    assert stored["metadata"]["sql_agent"]["job_id"] == msdb.ETL

    async def next_runs(job_id: str, after: str, count: int) -> list[str]:
        response = await client.get(
            f"/api/v2/jobs/{job_id}/next-runs", params={"after": after, "count": count}
        )
        assert response.status_code == 200, response.text
        return [r["at_utc"].replace("Z", "+00:00") for r in response.json()["runs"]]

    # What msdb's sysjobschedules.next_run_date / next_run_time say, and the fires after.
    assert await next_runs("nightly-etl", "2026-01-06T00:00:00Z", 4) == [
        "2026-01-07T01:30:00+00:00",
        "2026-01-09T01:30:00+00:00",
        "2026-01-19T01:30:00+00:00",
        "2026-01-21T01:30:00+00:00",
    ]
    assert await next_runs("intraday-feed", "2026-01-09T17:50:00Z", 3) == [
        "2026-01-09T18:00:00+00:00",
        "2026-01-12T08:00:00+00:00",
        "2026-01-12T08:15:00+00:00",
    ]
    assert await next_runs("month-end-close", "2026-03-01T00:00:00Z", 2) == [
        "2026-03-27T23:00:00+00:00",
        "2026-04-24T22:00:00+00:00",  # 23:00 BST
    ]
    archive = (await client.get("/api/v2/jobs/archive-logs")).json()
    assert archive["enabled"] is False and archive["next_fire_at"] is None


async def test_an_imported_job_runs_with_its_tokens_bound(client: httpx.AsyncClient) -> None:
    job = "11111111-2222-3333-4444-555555555555"
    export = {
        "sysjobs": [{"job_id": job, "name": "Token check", "enabled": 1, "start_step_id": 1}],
        "sysjobsteps": [
            {
                "job_id": job,
                "step_id": 1,
                "step_name": "Fails first",
                "subsystem": "TSQL",
                "database_name": "DW",
                "command": "SELECT * FROM no_such_table",
                "on_success_action": 3,
                "on_fail_action": 4,
                "on_fail_step_id": 3,
                "retry_attempts": 1,
                "retry_interval": 0,
            },
            {
                "job_id": job,
                "step_id": 2,
                "step_name": "Skipped",
                "subsystem": "CmdExec",
                "command": "exit 1",
                "on_success_action": 3,
                "on_fail_action": 2,
            },
            {
                "job_id": job,
                "step_id": 3,
                "step_name": "Name",
                "subsystem": "TSQL",
                "database_name": "dw",
                "command": "SELECT N'$(ESCAPE_SQUOTE(JOBNAME))' AS name, '12:30' AS at",
                "on_success_action": 3,
                "on_fail_action": 2,
            },
            {
                "job_id": job,
                "step_id": 4,
                "step_name": "Echo",
                "subsystem": "CmdExec",
                "command": "echo \"id=$(ESCAPE_NONE(JOBID))\" 'name=$(JOBNAME)'",
                "on_success_action": 1,
                "on_fail_action": 2,
            },
        ],
        "sysschedules": [],
        "sysjobschedules": [],
    }
    imported = await client.post(
        IMPORT, json=body(export, job_id_prefix="agent-", connection_map={"DW": "work"})
    )
    assert imported.status_code == 201, imported.text

    ran = await client.post("/api/v2/jobs/agent-token-check/run")

    assert ran.status_code == 200, ran.text
    result = ran.json()
    assert result["status"] == "success"
    assert result["metadata"]["path"] == ["step_1", "step_3", "step_4"]
    steps = {(s["step_id"], s["metadata"].get("step_attempt", 0)): s for s in result["steps"]}
    assert steps[("step_1", 0)]["status"] == "failed" and steps[("step_1", 1)]["status"] == "failed"
    assert steps[("step_2", 0)]["status"] == "skipped"
    assert steps[("step_3", 0)]["output"] == [{"name": "Token check", "at": "12:30"}]
    assert steps[("step_4", 0)]["output"] == "id=agent-token-check name=Token check\n"


# -- all or none, on_conflict ---------------------------------------------------------------
async def make_feed_job(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post(
        "/api/v2/jobs",
        json={
            "job_id": "intraday-feed",
            "job_name": "Made by hand",
            "steps": [{"step_id": "s", "type": "shell", "script": "echo hi"}],
        },
    )
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_on_conflict_fail_stores_nothing_and_names_the_job(
    client: httpx.AsyncClient,
) -> None:
    await make_feed_job(client)

    for dry_run in (True, False):
        response = await client.post(IMPORT, json=body(dry_run=dry_run))
        problem = assert_problem(response, 409)
        assert problem["errors"] == [
            {
                "field": "export.sysjobs[1].name",
                "message": "job_id 'intraday-feed' is taken (on_conflict is fail: nothing was "
                "stored; use skip or replace)",
            }
        ]
    assert await job_ids(client) == ["intraday-feed"]


async def test_on_conflict_skip_leaves_the_stored_job(client: httpx.AsyncClient) -> None:
    await make_feed_job(client)

    response = await client.post(IMPORT, json=body(on_conflict="skip"))

    assert response.status_code == 201, response.text
    data = response.json()
    assert (data["created"], data["skipped"]) == (3, 1)
    feed = next(j for j in data["jobs"] if j["job_id"] == "intraday-feed")
    assert feed["action"] == "skip" and feed["version"] is None
    stored = (await client.get("/api/v2/jobs/intraday-feed")).json()
    assert stored["job_name"] == "Made by hand" and stored["version"] == 1
    again = await client.post(IMPORT, json=body(on_conflict="skip"))
    assert again.status_code == 200 and again.json()["skipped"] == 4


async def test_on_conflict_replace_replaces_the_definition(client: httpx.AsyncClient) -> None:
    made = await make_feed_job(client)

    response = await client.post(IMPORT, json=body(on_conflict="replace"))

    assert response.status_code == 201, response.text
    assert (response.json()["created"], response.json()["replaced"]) == (3, 1)
    stored = (await client.get("/api/v2/jobs/intraday-feed")).json()
    assert stored["job_name"] == "Intraday feed" and stored["version"] == 2
    assert stored["created_at"] == made["created_at"]
    assert stored["schedules"][0]["schedule_config"]["repeat"]["every"] == 15


async def test_one_job_the_server_refuses_stores_none(client: httpx.AsyncClient) -> None:
    export = msdb.export()
    export["sysjobsteps"][3]["command"] = "SELECT 1 /* " + "x" * 200_000 + " */"

    response = await client.post(IMPORT, json=body(export))

    problem = assert_problem(response, 400)
    assert [e["field"] for e in problem["errors"]] == ["export.sysjobs[1].steps[0].query"]
    assert "V2_MAX_SCRIPT_CHARS" in problem["errors"][0]["message"]
    assert await job_ids(client) == []


# -- bad input -------------------------------------------------------------------------------
async def test_bad_rows_are_400s_naming_row_and_column(client: httpx.AsyncClient) -> None:
    export = msdb.export()
    export["sysjobsteps"][1]["on_fail_step_id"] = 7
    export["sysschedules"][2]["freq_type"] = 3
    export["sysschedules"][0]["active_start_date"] = 20260231
    export["sysjobs"][4]["start_step_id"] = 2

    response = await client.post(IMPORT, json=body(export, connection_map={"DW": "nope"}))

    problem = assert_problem(response, 400)
    assert {e["field"] for e in problem["errors"]} == {
        "export.sysjobsteps[1].on_fail_step_id",
        "export.sysschedules[2].freq_type",
        "export.sysschedules[0].active_start_date",
        "export.sysjobs[4].start_step_id",
        "options.connection_map.DW",
    }
    assert await job_ids(client) == []


async def test_missing_tables_and_bad_columns_are_400s(client: httpx.AsyncClient) -> None:
    export = msdb.export()
    del export["sysschedules"]
    export["sysjobsteps"][0]["step_id"] = "1"
    export["sysjobs"][0].pop("name")

    response = await client.post(
        IMPORT, json={"export": export, "options": {"timezone": "Mars/Base", "x": 1}}
    )

    problem = assert_problem(response, 400)
    assert {e["field"] for e in problem["errors"]} == {
        "export.sysschedules",
        "export.sysjobsteps[0].step_id",
        "export.sysjobs[0].name",
        "options.timezone",
        "options.x",
    }


async def test_the_admin_scope_is_required(client: httpx.AsyncClient) -> None:
    denied = await client.post(IMPORT, json=body(), headers=RUNNER)
    assert "'admin' scope" in assert_problem(denied, 403)["detail"]
    anonymous = await client.post(IMPORT, json=body(), headers={"Authorization": ""})
    assert_problem(anonymous, 401)
    assert await job_ids(client) == []


async def test_a_one_time_schedule_in_a_dst_gap_is_moved_and_reported(
    client: httpx.AsyncClient,
) -> None:
    export = msdb.export()
    export["sysschedules"][1].update(
        freq_type=1, active_start_date=20270328, active_start_time=13000
    )

    response = await client.post(IMPORT, json=body(export))

    assert response.status_code == 201, response.text
    feed = (await client.get("/api/v2/jobs/intraday-feed")).json()
    assert feed["schedules"][0]["schedule_config"]["at"] == "2027-03-28T02:00:00"
    assert feed["next_fire_at"] == "2027-03-28T01:00:00Z"
    [entry] = [e for e in response.json()["report"] if e["job"] == "Intraday feed"]
    assert (entry["outcome"], entry["schedule"], entry["source"]) == (
        "check",
        "Weekdays every 15 minutes",
        "sysschedules[1]",
    )


async def test_schema_and_cross_row_problems_come_in_one_400(client: httpx.AsyncClient) -> None:
    export = msdb.export()
    export["sysjobs"][0].pop("name")  # Nightly ETL's row is bad; its steps still count
    export["sysjobsteps"][3]["retry_attempts"] = "3"
    export["sysjobsteps"][4]["on_success_action"] = 4
    export["sysjobsteps"][4]["on_success_step_id"] = 9
    export["sysschedules"][1]["freq_type"] = 3
    export["sysjobschedules"][5]["schedule_id"] = 77

    response = await client.post(IMPORT, json=body(export))

    problem = assert_problem(response, 400)
    assert {e["field"] for e in problem["errors"]} == {
        "export.sysjobs[0].name",
        "export.sysjobsteps[3].retry_attempts",
        "export.sysjobsteps[4].on_success_step_id",
        "export.sysschedules[1].freq_type",
        "export.sysjobschedules[5].schedule_id",
    }
