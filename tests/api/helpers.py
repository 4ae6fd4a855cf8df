"""Helpers of the API tests: settings, job bodies, polling with a deadline, problem checks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from app.settings import Settings

BASE_URL = "http://testserver"


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "poll_interval_seconds": 0.02,
        "schedule_grace_seconds": 1.0,
        "kill_grace_seconds": 0.5,
        "shutdown_grace_seconds": 5.0,
        "max_steps_per_job": 5,
        "max_body_bytes": 64 * 1024,
        "default_timeout": 60,
    }
    values.update(overrides)
    return Settings(**values)


def shell_job(job_id: str = "job-1", *scripts: str, **fields: Any) -> dict[str, Any]:
    """A job of shell steps ``s0, s1, ...`` running ``scripts`` (default: ``echo hi``)."""
    steps = [
        {"step_id": f"s{i}", "type": "shell", "script": script}
        for i, script in enumerate(scripts or ("echo hi",))
    ]
    return {"job_id": job_id, "job_name": f"Job {job_id}", "steps": steps, **fields}


async def wait_for(
    probe: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], timeout: float = 10.0
) -> Any:
    """Poll ``probe`` until ``done(value)``; fail after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            value = await probe()
            if done(value):
                return value
            await asyncio.sleep(0.02)


async def execution_status(client: httpx.AsyncClient, execution_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v2/executions/{execution_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """``response`` is an RFC 9457 problem with ``status``; its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"type", "title", "status", "detail", "instance", "errors"}
    assert body["status"] == status
    assert body["title"]
    assert "Traceback" not in response.text
    return body
