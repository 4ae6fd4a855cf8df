"""ModernJobAPI (spec): its synchronous methods from plain threads, and
create_modern_job_routes on an app of someone else's."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.api import ModernJobAPI, create_modern_job_routes
from app.api.deps import build_engine
from app.settings import Settings
from tests.api.helpers import BASE_URL, assert_problem, make_settings, shell_job


def run_in_plain_thread(work: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Run ``work`` in a new thread that has no event loop; its result or its exception."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                outcome["had_loop"] = False
            else:
                outcome["had_loop"] = True
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="plain-sync-caller")
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the synchronous call did not return"
    assert outcome["had_loop"] is False
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_sync_methods_work_from_a_plain_thread() -> None:
    def work() -> dict[str, Any]:
        with ModernJobAPI(settings=make_settings()) as api:
            future = datetime.now(UTC) + timedelta(days=1)
            return {
                "ok": api.execute_job_immediately(shell_job("sync", "echo from a thread")),
                "failed": api.execute_job_immediately(shell_job("sync-fail", "exit 4")),
                "invalid": api.execute_job_immediately({"job_name": "no id", "steps": []}),
                "scheduled": api.schedule_job(shell_job("sync-later"), future),
                "gap": api.schedule_job(
                    shell_job("gap", timezone="Europe/Berlin"), datetime(2030, 3, 31, 2, 30)
                ),
                "status": api.get_execution_status(),
                "types": api.get_available_step_types(),
                "engine_running": api.engine.is_running,
                "api": api,
            }

    out = run_in_plain_thread(work)

    assert out["ok"]["success"] is True
    assert out["ok"]["steps"][0]["output"] == "from a thread\n"
    assert out["failed"]["success"] is False
    assert out["failed"]["status"] == "failed"
    assert out["invalid"]["success"] is False
    assert {e["field"] for e in out["invalid"]["errors"]} == {"job_id", "steps"}
    assert out["scheduled"]["success"] is True
    assert out["scheduled"]["execution_id"]
    assert out["gap"]["success"] is False
    assert out["gap"]["errors"][0]["field"] == "scheduled_time"
    assert out["status"]["success"] is True
    assert out["status"]["engine"]["status"] == "running"
    assert "UTC" in out["status"]["queues"]
    assert {t["type"] for t in out["types"]["step_types"]} >= {"sql", "powershell", "shell"}
    assert out["engine_running"] is True
    assert out["api"].engine.is_running is False  # closed: engine stopped, loop thread gone
    assert not [t for t in threading.enumerate() if t.name == "modern-job-api-loop"]


def test_default_constructor_builds_the_engine_from_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("V2_MAX_WORKERS", "3")
    monkeypatch.setenv("V2_DEFAULT_TIMEOUT", "42")
    monkeypatch.setenv("V2_MAX_STEPS_PER_JOB", "2")

    api = ModernJobAPI()

    assert (api.engine.max_workers, api.engine.default_timeout) == (3, 42)
    assert api.max_steps_per_job == 2
    assert api._parse_job_data(shell_job()).timeout_seconds == 42


async def test_sync_method_on_the_engines_own_loop_raises_instead_of_deadlocking() -> None:
    api = ModernJobAPI(build_engine(make_settings()), settings=make_settings())
    await api.start()
    try:
        with pytest.raises(RuntimeError, match="await the async methods"):
            api.get_execution_status()
        # ... and from another thread the same call reaches this loop and works.
        result = await asyncio.to_thread(api.execute_job_immediately, shell_job())
        assert result["success"] is True
    finally:
        await api.stop()


@contextlib.asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield client


async def test_create_modern_job_routes_on_an_existing_app() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def own_lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("host started")
        yield
        events.append("host stopped")

    host = FastAPI(lifespan=own_lifespan)

    @host.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    settings = make_settings()
    api = create_modern_job_routes(host, ModernJobAPI(build_engine(settings), settings=settings))

    assert host.state.job_api is api
    assert not api.engine.is_running
    async with running(host) as client:
        assert api.engine.is_running
        assert (await client.get("/hello")).json() == {"hello": "world"}
        executed = await client.post("/api/v2/jobs/execute", json=shell_job())
        assert executed.status_code == 200
        assert executed.json()["success"] is True
        assert_problem(await client.post("/api/v2/jobs/execute", json={}), 400)
        assert (await client.get("/ready")).status_code == 200
    assert not api.engine.is_running
    assert events == ["host started", "host stopped"]
    operation_ids = {
        op["operationId"] for item in host.openapi()["paths"].values() for op in item.values()
    }
    assert {"execute_job", "schedule_job", "get_execution", "cancel_execution"} <= operation_ids


async def test_create_modern_job_routes_builds_its_api_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("V2_MAX_WORKERS", "2")
    host = FastAPI()

    api = create_modern_job_routes(host)

    assert isinstance(api, ModernJobAPI)
    assert api.engine.max_workers == 2
    async with running(host) as client:
        response = await client.get("/api/v2/execution/status")
        assert response.json()["engine"]["max_workers"] == 2


def test_settings_limits_reach_the_api() -> None:
    settings = Settings(max_steps_per_job=7, shutdown_grace_seconds=1.5)
    api = ModernJobAPI(build_engine(settings), settings=settings)

    assert (api.max_steps_per_job, api.shutdown_grace_seconds) == (7, 1.5)
