"""Configurable limits: query / script length (V2_MAX_SCRIPT_CHARS), the timeout ceiling
(V2_MAX_TIMEOUT_SECONDS), with body size and steps per job; each refusal names the field."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from app.settings import Settings
from tests.api.helpers import assert_problem, make_settings, shell_job

EXECUTE = "/api/v2/jobs/execute"
SCHEDULE = "/api/v2/jobs/schedule"
LIMITS = {"max_script_chars": 50, "max_timeout_seconds": 120, "default_timeout": 60}


def fields(response: httpx.Response, status: int = 400) -> dict[str, str]:
    return {e["field"]: e["message"] for e in assert_problem(response, status)["errors"]}


@pytest.mark.parametrize("settings", [LIMITS], indirect=True)
async def test_long_scripts_and_queries_are_refused(client: httpx.AsyncClient) -> None:
    job: dict[str, Any] = shell_job("long", "echo " + "x" * 46)  # 51 characters
    job["steps"].append(
        {"step_id": "q", "type": "sql", "connection_name": "db", "query": "SELECT " + "1" * 50}
    )

    found = fields(await client.post(EXECUTE, json=job))

    # (and the server has no connection "db")
    assert set(found) == {"steps[0].script", "steps[1].query", "steps[1].connection_name"}
    assert "at most 50 (V2_MAX_SCRIPT_CHARS)" in found["steps[0].script"]
    ok = await client.post(EXECUTE, json=shell_job("short", "echo " + "x" * 45))
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("settings", [LIMITS], indirect=True)
async def test_timeouts_above_the_ceiling_are_refused(client: httpx.AsyncClient) -> None:
    job = shell_job("slow", timeout_seconds=121)
    job["steps"][0]["timeout"] = 3600

    found = fields(await client.post(EXECUTE, json=job))
    scheduled = fields(
        await client.post(SCHEDULE, json={"job": job, "scheduled_time": "2099-01-01T00:00:00Z"})
    )

    assert set(found) == {"timeout_seconds", "steps[0].timeout"}
    assert "at most 120 seconds (the server's V2_MAX_TIMEOUT_SECONDS)" in found["timeout_seconds"]
    assert set(scheduled) == {"job.timeout_seconds", "job.steps[0].timeout"}
    ok = await client.post(EXECUTE, json=shell_job("fine", timeout_seconds=120))
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    "settings", [{"max_steps_per_job": 2, "max_body_bytes": 2048}], indirect=True
)
async def test_body_size_and_steps_per_job(client: httpx.AsyncClient) -> None:
    too_many = await client.post(EXECUTE, json=shell_job("many", "echo", "echo", "echo"))
    too_big = await client.post(EXECUTE, json=shell_job("big", "echo " + "x" * 4000))

    assert "at most 2 steps" in fields(too_many)["steps"]
    assert_problem(too_big, 413)


def test_the_default_timeout_must_fit_under_the_ceiling() -> None:
    with pytest.raises(ValidationError, match="V2_MAX_TIMEOUT_SECONDS"):
        make_settings(default_timeout=7200, max_timeout_seconds=3600)


def test_documented_defaults() -> None:
    settings = Settings()

    assert settings.max_script_chars == 100_000
    assert settings.max_timeout_seconds == 86_400
    assert settings.rate_limit_per_minute == 60
    assert settings.script_roots == []
    assert settings.api_keys is None and settings.api_keys_file is None
