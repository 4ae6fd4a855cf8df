"""The lifespan starts the engine and stops it with a grace: running jobs finish or are
cancelled and recorded, their processes are gone, and no task is left behind."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx

from app.domain.enums import JobStatus
from app.main import create_app
from app.persistence import SqlExecutionStore
from tests.api.helpers import BASE_URL, execution_status, make_settings, shell_job, wait_for


def other_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


async def start_job(client: httpx.AsyncClient, script: str) -> str:
    response = await client.post(
        "/api/v2/jobs/execute", params={"wait": "false"}, json=shell_job("bg", script)
    )
    assert response.status_code == 202, response.text
    execution_id: str = response.json()["execution_id"]
    await wait_for(
        lambda: execution_status(client, execution_id), lambda e: e["status"] == "running"
    )
    return execution_id


async def test_shutdown_cancels_jobs_still_running_after_the_grace(
    tmp_path: Path, service_database: str
) -> None:
    app = create_app(make_settings(shutdown_grace_seconds=0.3))
    pid_file = tmp_path / "pid"
    tasks_before = set(other_tasks())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            execution_id = await start_job(client, f"echo $$ > {pid_file}; sleep 60")
        began = time.monotonic()
    stopped_after = time.monotonic() - began

    assert stopped_after < 10
    async with SqlExecutionStore(service_database) as store:  # what the database kept
        recorded = await store.get_execution(execution_id)
    assert recorded is not None
    assert recorded.status is JobStatus.CANCELLED
    assert recorded.end_time is not None
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive, "the job's shell process survived the shutdown"
    assert set(other_tasks()) <= tasks_before
    assert app.state.job_api is None


async def test_shutdown_lets_a_job_finish_within_the_grace(service_database: str) -> None:
    app = create_app(make_settings(shutdown_grace_seconds=10))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            execution_id = await start_job(client, "sleep 0.3; echo finished")

    async with SqlExecutionStore(service_database) as store:  # what the database kept
        recorded = await store.get_execution(execution_id)
    assert recorded is not None
    assert recorded.status is JobStatus.SUCCESS
    assert recorded.steps[0].output == "finished\n"
