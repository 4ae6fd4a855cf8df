"""Least privilege for connections: ``allowed_keys`` refuses other keys at submission (403
naming ``steps[i].connection_name``) and again when the step runs; a scheduled run keeps
its requester; ``read_only`` connections refuse writes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.api.keys import key_entry, new_api_key
from app.main import create_app
from tests.api.helpers import BASE_URL, assert_problem, make_settings, wait_for

KEYS = {name: new_api_key() for name in ("etl", "intruder", "boss")}
ENTRIES = [
    key_entry(KEYS["etl"], "etl", ["run"]),
    key_entry(KEYS["intruder"], "intruder", ["run"]),
    key_entry(KEYS["boss"], "boss", ["admin"]),
]
EXECUTE = "/api/v2/jobs/execute"
SCHEDULE = "/api/v2/jobs/schedule"


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


def connections(tmp_path: Path) -> dict[str, Any]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'warehouse.db'}"
    return {
        "warehouse": {"url": url, "allowed_keys": ["etl"]},
        "reporting": {"url": url, "read_only": True},
        "scratch": url,
    }


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    application = create_app(make_settings(api_keys=ENTRIES, connections=connections(tmp_path)))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield application, client


def sql_job(*connection_names: str, query: str = "SELECT 1 AS one") -> dict[str, Any]:
    return {
        "job_id": "least-privilege",
        "job_name": "Least privilege",
        "steps": [
            {"step_id": f"q{i}", "type": "sql", "connection_name": name, "query": query}
            for i, name in enumerate(connection_names)
        ],
    }


async def test_an_allowed_key_uses_the_connection(
    keyed: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, http = keyed
    response = await http.post(EXECUTE, json=sql_job("warehouse"), headers=auth("etl"))

    assert response.status_code == 200, response.text
    assert response.json()["steps"][0]["output"] == [{"one": 1}]


@pytest.mark.parametrize("name", ["intruder", "boss"])  # admin does not bypass allowed_keys
async def test_another_key_is_refused_naming_the_step(
    keyed: tuple[FastAPI, httpx.AsyncClient], name: str
) -> None:
    _, http = keyed
    response = await http.post(EXECUTE, json=sql_job("scratch", "warehouse"), headers=auth(name))

    problem = assert_problem(response, 403)
    assert [e["field"] for e in problem["errors"]] == ["steps[1].connection_name"]
    assert "'warehouse'" in problem["errors"][0]["message"]
    assert name in problem["errors"][0]["message"]


async def test_scheduling_is_refused_too(keyed: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, http = keyed
    body = {"job": sql_job("warehouse"), "scheduled_time": "2099-01-01T00:00:00Z"}

    problem = assert_problem(await http.post(SCHEDULE, json=body, headers=auth("intruder")), 403)

    assert [e["field"] for e in problem["errors"]] == ["job.steps[0].connection_name"]


async def test_a_scheduled_run_keeps_its_requester(
    keyed: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, http = keyed
    when = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    scheduled = await http.post(
        SCHEDULE, json={"job": sql_job("warehouse"), "scheduled_time": when}, headers=auth("etl")
    )
    assert scheduled.status_code == 200, scheduled.text

    async def status() -> dict[str, Any]:
        response = await http.get(
            f"/api/v2/executions/{scheduled.json()['execution_id']}", headers=auth("etl")
        )
        body: dict[str, Any] = response.json()
        return body

    final = await wait_for(status, lambda e: e["status"] in ("success", "failed"))
    assert final["status"] == "success", final
    assert final["requested_by"] == "etl"


async def test_the_step_checks_again_when_it_runs(
    keyed: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """Work that reaches the engine without the API's check (a stored job, a restart, a
    library caller) is still refused by the step."""
    application, _ = keyed
    api = application.state.job_api
    job = api._parse_job_data(sql_job("warehouse"))

    refused = await api.engine.execute_job_now(job, requested_by="intruder")
    anonymous = await api.engine.execute_job_now(job)
    allowed = await api.engine.execute_job_now(job, requested_by="etl")

    for result in (refused, anonymous):
        assert result.status.value == "failed"
        assert "may not use connection 'warehouse'" in (result.steps[0].error_message or "")
    assert allowed.status.value == "success"


async def test_open_mode_cannot_use_a_key_limited_connection(tmp_path: Path) -> None:
    application = create_app(make_settings(connections=connections(tmp_path)))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            refused = await http.post(EXECUTE, json=sql_job("warehouse"))
            fine = await http.post(EXECUTE, json=sql_job("scratch"))

    assert "without an API key" in assert_problem(refused, 403)["errors"][0]["message"]
    assert fine.status_code == 200, fine.text


async def test_a_read_only_connection_refuses_writes(
    keyed: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, http = keyed
    create = sql_job("scratch", query="CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    assert (await http.post(EXECUTE, json=create, headers=auth("etl"))).status_code == 200

    write = await http.post(
        EXECUTE, json=sql_job("reporting", query="INSERT INTO t VALUES (1)"), headers=auth("etl")
    )
    read = await http.post(
        EXECUTE, json=sql_job("reporting", query="SELECT count(*) AS n FROM t"), headers=auth("etl")
    )

    assert write.status_code == 400
    assert "readonly" in write.json()["steps"][0]["error_message"].lower()
    assert read.json()["steps"][0]["output"] == [{"n": 0}]
