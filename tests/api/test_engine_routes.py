"""Engine status, step types, health and readiness; 503 and 500 answers."""

from __future__ import annotations

import copy
import logging
import shutil
from unittest.mock import ANY

import httpx
import pytest

from app.api.service import ModernJobAPI
from app.domain.errors import StepExecutionError
from app.main import create_app
from app.steps.config_base import load_schemas
from tests.api.helpers import BASE_URL, assert_problem, make_settings, shell_job, wait_for


async def test_engine_status_shows_queues_and_running_executions(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/api/v2/jobs/execute", json=shell_job("tokyo", timezone="Asia/Tokyo"))
    running = await client.post(
        "/api/v2/jobs/execute",
        params={"wait": "false"},
        json=shell_job("berlin", "sleep 30", timezone="Europe/Berlin"),
    )
    execution_id = running.json()["execution_id"]

    response = await wait_for(
        lambda: client.get("/api/v2/execution/status"),
        lambda r: [e["execution_id"] for e in r.json()["active_executions"]] == [execution_id],
    )

    body = response.json()
    assert body["engine"]["status"] == "running"
    assert body["engine"]["healthy"] is True
    assert body["engine"]["active_workers"] == 1
    assert set(body["queues"]) == {"Asia/Tokyo", "Europe/Berlin"}
    assert body["queues"]["Asia/Tokyo"]["completed"] == 1
    assert body["queues"]["Europe/Berlin"]["active_immediate"] == 1
    assert body["active_executions"][0]["status"] == "running"
    await client.post(f"/api/v2/executions/{execution_id}/cancel")


async def test_step_types_list_every_type_with_its_schema(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v2/steps/types")

    assert response.status_code == 200
    types = {t["type"]: t for t in response.json()["step_types"]}
    assert set(types) >= {"sql", "powershell", "shell"}
    for name in ("sql", "powershell", "shell"):
        served, source = types[name]["config_schema"], copy.deepcopy(load_schemas()[name])
        # The source schema, with this server's limits (the test settings' defaults).
        for field in ("query", "script"):
            if field in source["properties"]:
                assert served["properties"][field]["maxLength"] == 100_000
                source["properties"][field]["maxLength"] = 100_000
        assert served["properties"]["timeout"]["maximum"] == 86_400
        source["properties"]["timeout"]["maximum"] = 86_400
        assert served == source
        assert types[name]["description"]
    assert "query" in types["sql"]["config_schema"]["required"]


async def test_health_and_ready(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    ready = await client.get("/ready")

    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200
    body = ready.json()
    assert body.pop("warnings") == ([] if shutil.which("pwsh") else [ANY])
    assert body == {"status": "ready", "engine_running": True, "store_reachable": True}


async def test_not_ready_when_the_store_is_unreachable(
    client: httpx.AsyncClient, job_api: ModernJobAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable() -> int:
        raise ConnectionError("database is down")

    monkeypatch.setattr(job_api.engine.store, "count_scheduled_runs", unreachable)

    problem = assert_problem(await client.get("/ready"), 503)
    assert "store is unreachable" in problem["detail"]
    assert (await client.get("/health")).status_code == 200


async def test_stopped_engine_answers_503(client: httpx.AsyncClient, job_api: ModernJobAPI) -> None:
    await job_api.engine.stop(wait_for_jobs=False)

    assert (await client.get("/health")).status_code == 200
    assert "stopped" in assert_problem(await client.get("/ready"), 503)["detail"]
    problem = assert_problem(await client.post("/api/v2/jobs/execute", json=shell_job()), 503)
    assert "accepts no new work" in problem["detail"]


async def test_routes_answer_503_before_startup() -> None:
    app = create_app(make_settings())  # lifespan not run: no engine
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        assert (await client.get("/health")).status_code == 200
        assert_problem(await client.get("/ready"), 503)
        assert_problem(await client.get("/api/v2/execution/status"), 503)


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("secret internal detail"),
        StepExecutionError("s", "x", "secret internal detail"),
    ],
    ids=["unexpected exception", "engine error with no HTTP meaning"],
)
async def test_unexpected_error_is_500_without_traceback(
    client: httpx.AsyncClient,
    job_api: ModernJobAPI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
) -> None:
    async def broken() -> None:
        raise error

    monkeypatch.setattr(job_api, "status", broken)

    with caplog.at_level(logging.ERROR, logger="app.api"):
        response = await client.get("/api/v2/execution/status")

    problem = assert_problem(response, 500)
    assert "secret internal detail" not in response.text
    assert problem["detail"] == "Internal server error."
    logged = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert logged and "secret internal detail" in str(logged[0])


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/v2/nothing-here"), 404)
    response = await client.delete("/api/v2/steps/types")

    assert_problem(response, 405)
    assert response.headers["allow"] == "GET"
