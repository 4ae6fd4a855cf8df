"""GET /api/v2/executions/{id} and POST /api/v2/executions/{id}/cancel."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx

from tests.api.helpers import assert_problem, execution_status, shell_job, wait_for

EXECUTE = "/api/v2/jobs/execute"
SCHEDULE = "/api/v2/jobs/schedule"


def cancel_url(execution_id: str) -> str:
    return f"/api/v2/executions/{execution_id}/cancel"


async def test_unknown_execution_is_404(client: httpx.AsyncClient) -> None:
    problem = assert_problem(await client.get("/api/v2/executions/does-not-exist"), 404)

    assert "does-not-exist" in problem["detail"]
    assert problem["instance"] == "/api/v2/executions/does-not-exist"


async def test_too_long_execution_id_is_400(client: httpx.AsyncClient) -> None:
    problem = assert_problem(await client.get("/api/v2/executions/" + "x" * 101), 400)

    assert problem["errors"][0]["field"] == "execution_id"


async def test_finished_execution_is_readable(client: httpx.AsyncClient) -> None:
    done = (await client.post(EXECUTE, json=shell_job("read-me", "echo out"))).json()

    execution = await execution_status(client, done["execution_id"])

    assert execution["status"] == "success"
    assert execution["steps"] == done["steps"]


async def test_cancel_unknown_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post(cancel_url("nope")), 404)


async def test_cancel_finished_is_409(client: httpx.AsyncClient) -> None:
    done = (await client.post(EXECUTE, json=shell_job("finished"))).json()

    problem = assert_problem(await client.post(cancel_url(done["execution_id"])), 409)

    assert "already finished" in problem["detail"]
    assert "success" in problem["detail"]


async def test_cancel_scheduled_execution(client: httpx.AsyncClient) -> None:
    when = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    scheduled = await client.post(
        SCHEDULE, json={"job": shell_job("later"), "scheduled_time": when}
    )
    execution_id = scheduled.json()["execution_id"]

    response = await client.post(cancel_url(execution_id))

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert (await execution_status(client, execution_id))["status"] == "cancelled"
    assert_problem(await client.post(cancel_url(execution_id)), 409)


async def test_cancel_running_execution_stops_it(client: httpx.AsyncClient) -> None:
    started = await client.post(
        EXECUTE, params={"wait": "false"}, json=shell_job("long", "echo started; sleep 30")
    )
    execution_id = started.json()["execution_id"]
    await wait_for(
        lambda: execution_status(client, execution_id),
        lambda e: e["status"] == "running" and [s["status"] for s in e["steps"]] == ["running"],
    )

    began = time.monotonic()
    response = await client.post(cancel_url(execution_id))

    assert response.status_code == 200, response.text
    assert time.monotonic() - began < 10
    body = response.json()
    assert body["status"] == "cancelled"
    assert body["success"] is False
    assert body["steps"][0]["status"] == "cancelled"


async def test_waiting_execute_request_sees_the_cancel(client: httpx.AsyncClient) -> None:
    waiting = asyncio.create_task(
        client.post(EXECUTE, json=shell_job("waited-on", "sleep 30")), name="execute-request"
    )
    status = await wait_for(
        lambda: client.get("/api/v2/execution/status"),
        lambda r: len(r.json()["active_executions"]) == 1,
    )
    execution_id = status.json()["active_executions"][0]["execution_id"]

    assert (await client.post(cancel_url(execution_id))).status_code == 200
    response = await waiting

    assert response.status_code == 400
    assert response.json()["status"] == "cancelled"
