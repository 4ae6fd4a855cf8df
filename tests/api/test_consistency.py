"""What a client relies on being the same everywhere: one execution shape in the list and
the detail, one spelling per trigger, what ``enabled: false`` means, the limits that
``/steps/types`` advertises, and SQL rows as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from app.domain.enums import Trigger
from app.main import create_app
from tests.api.helpers import (
    BASE_URL,
    assert_problem,
    execution_status,
    make_settings,
    shell_job,
    wait_for,
)

EXECUTE = "/api/v2/jobs/execute"
SCHEDULE = "/api/v2/jobs/schedule"
EXECUTIONS = "/api/v2/executions"


async def listed(client: httpx.AsyncClient, execution_id: str) -> dict[str, Any] | None:
    response = await client.get(EXECUTIONS, params={"limit": 100})
    assert response.status_code == 200, response.text
    found = [e for e in response.json()["items"] if e["execution_id"] == execution_id]
    return found[0] if found else None


async def test_a_finished_execution_reads_the_same_in_the_list_and_the_detail(
    client: httpx.AsyncClient,
) -> None:
    job = shell_job("same", "echo one", "echo two", max_retries=1)
    execution_id = (await client.post(EXECUTE, json=job)).json()["execution_id"]

    detail = await execution_status(client, execution_id)
    item = await listed(client, execution_id)

    assert item == detail
    # A step run once carries no cached_from_attempt: it was not reused from anywhere.
    assert all("cached_from_attempt" not in s["metadata"] for s in detail["steps"])


async def test_a_reused_step_names_the_attempt_it_came_from_in_both_shapes(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    marker = tmp_path / "second"
    # s0 succeeds; s1 fails the first time only, so the retry reuses s0's result.
    flaky = f"if [ -e {marker} ]; then echo ok; else touch {marker}; exit 3; fi"
    job = shell_job("reuse", "echo first", flaky, max_retries=1, retry_delay_seconds=0)
    execution_id = (await client.post(EXECUTE, json=job)).json()["execution_id"]

    detail = await execution_status(client, execution_id)
    item = await listed(client, execution_id)

    assert detail["status"] == "success" and detail["retry_count"] == 1
    reused = detail["steps"][0]
    assert reused["metadata"]["cached"] is True
    assert reused["metadata"]["cached_from_attempt"] == 0
    assert reused["metadata"]["attempt"] == 1
    assert "cached_from_attempt" not in detail["steps"][1]["metadata"]
    assert item == detail


async def test_a_running_execution_shows_its_current_step_in_the_list_too(
    client: httpx.AsyncClient,
) -> None:
    job = shell_job("busy", "echo a", "echo started; sleep 30")
    started = await client.post(EXECUTE, params={"wait": "false"}, json=job)
    execution_id = started.json()["execution_id"]
    try:
        detail = await wait_for(
            lambda: execution_status(client, execution_id),
            lambda e: e["current_step"] == "s1",
        )
        item = await wait_for(
            lambda: listed(client, execution_id),
            lambda e: e is not None and [s["status"] for s in e["steps"]][-1:] == ["running"],
        )
        assert detail["status"] == item["status"] == "running"
        assert item["current_step"] == detail["current_step"] == "s1"
    finally:
        await client.post(f"{EXECUTIONS}/{execution_id}/cancel")
    ended = await wait_for(lambda: listed(client, execution_id), lambda e: e["status"] != "running")
    assert ended["current_step"] is None


async def test_trigger_is_one_enum_in_the_contract(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    trigger = spec["components"]["schemas"]["ExecutionRead"]["properties"]["trigger"]
    [enum_ref] = [s for s in trigger["anyOf"] if "$ref" in s]
    enum = spec["components"]["schemas"][enum_ref["$ref"].rsplit("/", 1)[1]]["enum"]
    assert (
        enum
        == [t.value for t in Trigger]
        == [
            "now",
            "queued",
            "scheduled",
            "schedule",
            "backfill",
        ]
    )
    for value in enum:
        assert f"`{value}`" in trigger["description"]

    ran = (await client.post(EXECUTE, json=shell_job("t"))).json()
    assert ran["trigger"] == "now"
    assert (await listed(client, ran["execution_id"]))["trigger"] == "now"  # type: ignore[index]


async def test_a_disabled_job_runs_neither_now_nor_at_a_set_time(
    client: httpx.AsyncClient,
) -> None:
    job = shell_job("off", enabled=False)

    for params in ({}, {"wait": "false"}):
        problem = assert_problem(await client.post(EXECUTE, params=params, json=job), 400)
        assert problem["type"].endswith("/job-disabled")
        assert [e["field"] for e in problem["errors"]] == ["enabled"]
    scheduled = await client.post(
        SCHEDULE, json={"job": job, "scheduled_time": "2035-01-15T09:30:00Z"}
    )
    problem = assert_problem(scheduled, 400)
    assert problem["type"].endswith("/job-disabled")
    assert [e["field"] for e in problem["errors"]] == ["job.enabled"]
    assert (await client.get(EXECUTIONS)).json()["items"] == []  # nothing was written


async def test_a_disabled_stored_job_can_still_be_run_by_hand(client: httpx.AsyncClient) -> None:
    stored = {**shell_job("held", "echo by hand"), "enabled": False}
    assert (await client.post("/api/v2/jobs", json=stored)).status_code == 201

    ran = await client.post("/api/v2/jobs/held/run")

    assert ran.status_code == 200, ran.text
    assert ran.json()["steps"][0]["output"] == "by hand\n"


@pytest.mark.parametrize(
    "settings", [{"max_script_chars": 200, "max_timeout_seconds": 900}], indirect=True
)
async def test_step_types_advertise_the_limits_the_server_enforces(
    client: httpx.AsyncClient,
) -> None:
    types = (await client.get("/api/v2/steps/types")).json()["step_types"]
    schemas = {t["type"]: t["config_schema"] for t in types}
    assert schemas["shell"]["properties"]["script"]["maxLength"] == 200
    assert schemas["sql"]["properties"]["query"]["maxLength"] == 200
    assert schemas["powershell"]["properties"]["script"]["maxLength"] == 200
    assert {s["properties"]["timeout"]["maximum"] for s in schemas.values()} == {900}

    fits = shell_job("fits", "echo " + "x" * 195)
    assert (await client.post(EXECUTE, json=fits)).status_code == 200
    too_long = shell_job("long", "echo " + "x" * 196)
    problem = assert_problem(await client.post(EXECUTE, json=too_long), 400)
    assert [e["field"] for e in problem["errors"]] == ["steps[0].script"]
    too_slow = {**shell_job("slow"), "steps": [{**shell_job()["steps"][0], "timeout": 901}]}
    problem = assert_problem(await client.post(EXECUTE, json=too_slow), 400)
    assert [e["field"] for e in problem["errors"]] == ["steps[0].timeout"]


async def test_sql_rows_are_json_and_a_select_affects_no_rows(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'rows.db'}"
    application = create_app(make_settings(connections={"db": url}))

    def sql(step_id: str, query: str) -> dict[str, Any]:
        return {"step_id": step_id, "type": "sql", "connection_name": "db", "query": query}

    steps = [
        sql("pick", "SELECT 1 AS n, 'a' AS s"),
        sql("make", "CREATE TABLE t (v int)"),
        sql("fill", "INSERT INTO t VALUES (1), (2)"),
        {"step_id": "echo", "type": "shell", "script": "echo text"},
    ]
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            job = {"job_id": "q", "job_name": "Q", "steps": steps}
            body = (await client.post(EXECUTE, json=job)).json()
            item = await listed(client, body["execution_id"])

    pick, make, fill, echo = body["steps"]
    assert pick["output"] == [{"n": 1, "s": "a"}]
    assert pick["metadata"]["affected_rows"] is None
    assert make["output"] is None
    assert fill["output"] is None and fill["metadata"]["affected_rows"] == 2
    assert echo["output"] == "text\n"
    assert item is not None and item["steps"] == body["steps"]
