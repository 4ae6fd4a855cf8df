"""POST /api/v2/jobs/execute: 200 on success, 400 with the execution when the job did not
succeed, 202 + Location with ?wait=false."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest

from tests.api.helpers import execution_status, shell_job, wait_for

EXECUTE = "/api/v2/jobs/execute"


async def test_success_returns_the_full_execution(client: httpx.AsyncClient) -> None:
    job = shell_job("greet", "echo hello", "echo world")
    job["timezone"] = "Europe/Berlin"
    response = await client.post(EXECUTE, json=job)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["success"] is True
    assert body["status"] == "success"
    assert body["job_id"] == "greet"
    assert body["timezone"] == "Europe/Berlin"
    assert body["trigger"] == "now"
    assert [s["step_id"] for s in body["steps"]] == ["s0", "s1"]
    assert [s["output"] for s in body["steps"]] == ["hello\n", "world\n"]
    for step in body["steps"]:
        assert step["status"] == "success"
        assert step["step_type"] == "shell"
        assert step["error_message"] is None
        started = datetime.fromisoformat(step["start_time"])
        ended = datetime.fromisoformat(step["end_time"])
        assert started.tzinfo is not None
        assert ended >= started
        assert step["duration_seconds"] >= 0
    assert datetime.fromisoformat(body["end_time"]) >= datetime.fromisoformat(body["start_time"])


async def test_failed_job_answers_400_with_the_execution(client: httpx.AsyncClient) -> None:
    job = shell_job("fails", "echo before", "echo 'disk full' >&2; exit 3", "echo never")
    response = await client.post(EXECUTE, json=job)

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["success"] is False
    assert body["status"] == "failed"
    assert [s["status"] for s in body["steps"]] == ["success", "failed", "skipped"]
    failed = body["steps"][1]
    assert "exit code 3" in failed["error_message"]
    assert "disk full" in failed["error_message"]
    assert body["error_message"]


async def test_partial_success_answers_400(client: httpx.AsyncClient) -> None:
    job = shell_job("partial", "exit 1", "echo still runs")
    job["steps"][0]["continue_on_failure"] = True
    response = await client.post(EXECUTE, json=job)

    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "partial_success"
    assert body["success"] is False
    assert [s["status"] for s in body["steps"]] == ["failed", "success"]


@pytest.mark.parametrize("settings", [{"default_timeout": 1}], indirect=True)
async def test_job_without_timeout_gets_the_server_default(client: httpx.AsyncClient) -> None:
    response = await client.post(EXECUTE, json=shell_job("slow", "sleep 30"))

    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "timeout"
    assert body["steps"][0]["status"] in ("timeout", "cancelled")
    assert body["duration_seconds"] < 10


async def test_wait_false_answers_202_with_location(client: httpx.AsyncClient) -> None:
    response = await client.post(EXECUTE, params={"wait": "false"}, json=shell_job("bg"))

    assert response.status_code == 202, response.text
    body = response.json()
    execution_id = body["execution_id"]
    assert body["status"] in ("pending", "running")
    location = response.headers["location"]
    assert location == f"http://testserver/api/v2/executions/{execution_id}"
    assert body["status_url"] == location

    final = await wait_for(
        lambda: execution_status(client, execution_id), lambda e: e["status"] == "success"
    )
    assert final["steps"][0]["output"] == "hi\n"
    followed = await client.get(location)
    assert followed.status_code == 200
    assert followed.json()["execution_id"] == execution_id
