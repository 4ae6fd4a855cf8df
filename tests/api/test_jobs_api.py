"""Stored jobs, schedule previews and the execution history over HTTP."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import event

from app.api.service import ModernJobAPI
from app.domain import JobDefinition, JobExecutionResult, JobStatus
from app.domain.records import TRIGGER_NOW
from app.persistence import SqlExecutionStore
from tests.api.helpers import assert_problem, shell_job

JOBS = "/api/v2/jobs"


def recurring(job_id: str = "nightly", **schedule: Any) -> dict[str, Any]:
    config = {"type": "cron", "expression": "30 2 * * *", **schedule}
    return shell_job(job_id, timezone="America/New_York", schedule_config=config)


async def test_create_get_list_and_etag(client: httpx.AsyncClient) -> None:
    created = await client.post(JOBS, json=recurring())
    assert created.status_code == 201, created.text
    body = created.json()
    assert created.headers["ETag"] == '"1"'
    assert created.headers["Location"].endswith("/api/v2/jobs/nightly")
    assert body["version"] == 1 and body["misfire_policy"] == "run_once"
    assert body["overlap_policy"] == "skip"
    assert body["next_fire_at_local"].endswith(("-05:00", "-04:00"))
    assert "T02:30:00" in body["next_fire_at_local"] or "T03:00:00" in body["next_fire_at_local"]
    assert body["last_execution"] is None

    fetched = await client.get(f"{JOBS}/nightly")
    assert fetched.status_code == 200 and fetched.json()["job_id"] == "nightly"
    assert_problem(await client.post(JOBS, json=recurring()), 409)
    assert_problem(await client.get(f"{JOBS}/missing"), 404)

    await client.post(JOBS, json={**shell_job("other"), "enabled": False})
    listed = await client.get(JOBS, params={"enabled": "false"})
    assert [j["job_id"] for j in listed.json()["items"]] == ["other"]
    page1 = await client.get(JOBS, params={"limit": 1})
    page2 = await client.get(JOBS, params={"limit": 1, "cursor": page1.json()["next_cursor"]})
    assert [j["job_id"] for j in page1.json()["items"] + page2.json()["items"]] == [
        "nightly",
        "other",
    ]


async def test_concurrent_edits_are_refused_with_412(client: httpx.AsyncClient) -> None:
    await client.post(JOBS, json=recurring())
    first = await client.patch(
        f"{JOBS}/nightly", json={"description": "a"}, headers={"If-Match": '"1"'}
    )
    assert first.status_code == 200 and first.headers["ETag"] == '"2"'
    stale = await client.patch(
        f"{JOBS}/nightly", json={"description": "b"}, headers={"If-Match": '"1"'}
    )
    problem = assert_problem(stale, 412)
    assert "version 2" in problem["detail"]
    assert (await client.get(f"{JOBS}/nightly")).json()["description"] == "a"
    replaced = await client.put(
        f"{JOBS}/nightly", json={**recurring(), "job_name": "New"}, headers={"If-Match": '"2"'}
    )
    assert replaced.status_code == 200 and replaced.json()["version"] == 3
    assert_problem(await client.put(f"{JOBS}/nightly", json=recurring("other-id")), 400)
    assert_problem(await client.delete(f"{JOBS}/nightly", headers={"If-Match": '"1"'}), 412)


async def test_invalid_schedule_names_the_field(client: httpx.AsyncClient) -> None:
    for config, field in [
        ({"type": "cron", "expression": "61 * * * *"}, "schedule_config.expression"),
        ({"type": "cron", "expression": "0 0 30 2 *"}, "schedule_config.expression"),
        ({"type": "interval", "every_seconds": -5}, "schedule_config.every_seconds"),
        (
            {"type": "cron", "expression": "* * * * *", "misfire_policy": "sometimes"},
            "schedule_config.misfire_policy",
        ),
        (
            {"type": "cron", "expression": "* * * * *", "overlap_policy": "x"},
            "schedule_config.overlap_policy",
        ),
        ({"type": "yearly"}, "schedule_config.type"),
    ]:
        response = await client.post(JOBS, json={**shell_job("bad"), "schedule_config": config})
        problem = assert_problem(response, 400)
        assert field in [e["field"] for e in problem["errors"]], (config, problem)


async def test_enable_disable_and_next_runs(client: httpx.AsyncClient) -> None:
    await client.post(JOBS, json=recurring())
    runs = (await client.get(f"{JOBS}/nightly/next-runs", params={"count": 3})).json()
    assert runs["timezone"] == "America/New_York" and len(runs["runs"]) == 3
    assert all("02:30:00" in r["nominal_local"] for r in runs["runs"])
    disabled = await client.post(f"{JOBS}/nightly/disable")
    assert disabled.json()["enabled"] is False and disabled.json()["next_fire_at"] is None
    assert (await client.get(f"{JOBS}/nightly/next-runs")).json()["runs"] == []
    enabled = await client.post(f"{JOBS}/nightly/enable")
    assert enabled.json()["next_fire_at"] is not None and enabled.json()["version"] == 3


async def test_preview_flags_runs_moved_by_a_dst_gap(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v2/schedules/preview",
        json={
            "schedule_config": {"type": "cron", "expression": "30 2 * * *"},
            "timezone": "America/New_York",
            "after": "2026-03-07T12:00:00Z",
            "count": 2,
        },
    )
    assert response.status_code == 200, response.text
    runs = response.json()["runs"]
    assert runs[0]["at_local"] == "2026-03-08T03:00:00-04:00"
    assert runs[0]["nominal_local"] == "2026-03-08T02:30:00"
    assert runs[0]["moved_by_dst_gap"] is True
    assert runs[1]["at_utc"] == "2026-03-09T06:30:00Z"
    assert runs[1]["moved_by_dst_gap"] is False
    bad = await client.post(
        "/api/v2/schedules/preview",
        json={
            "schedule_config": {"type": "cron", "expression": "bad"},
            "after": "2026-01-01T00:00",
        },
    )
    fields = [e["field"] for e in assert_problem(bad, 400)["errors"]]
    assert "schedule_config.expression" in fields and "after" in fields


async def test_run_a_stored_job_and_see_it_in_history(client: httpx.AsyncClient) -> None:
    await client.post(JOBS, json=shell_job("manual", "echo ran"))
    ran = await client.post(f"{JOBS}/manual/run")
    assert ran.status_code == 200, ran.text
    assert ran.json()["steps"][0]["output"] == "ran\n"
    job = (await client.get(f"{JOBS}/manual")).json()
    assert job["last_execution"]["execution_id"] == ran.json()["execution_id"]
    history = (await client.get("/api/v2/executions", params={"job_id": "manual"})).json()
    assert [e["execution_id"] for e in history["items"]] == [ran.json()["execution_id"]]
    assert (await client.delete(f"{JOBS}/manual")).status_code == 204
    assert_problem(await client.get(f"{JOBS}/manual"), 404)
    kept = (await client.get("/api/v2/executions", params={"job_id": "manual"})).json()
    assert len(kept["items"]) == 1  # deleting a job keeps its history
    assert_problem(await client.post(f"{JOBS}/manual/run"), 404)


async def test_history_filters_and_pagination(client: httpx.AsyncClient) -> None:
    ids = []
    for n in range(5):
        response = await client.post(
            "/api/v2/jobs/execute", json=shell_job(f"h{n % 2}", "exit 0" if n % 2 else "exit 3")
        )
        ids.append(response.json()["execution_id"])
    failed = (await client.get("/api/v2/executions", params={"status": "failed"})).json()
    assert {e["job_id"] for e in failed["items"]} == {"h0"} and len(failed["items"]) == 3
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/api/v2/executions", params=params)).json()
        seen += [e["execution_id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))  # newest first, nothing missing or repeated
    assert_problem(
        await client.get("/api/v2/executions", params={"started_after": "yesterday"}), 400
    )
    assert_problem(
        await client.get("/api/v2/executions", params={"started_after": "2026-01-01T00:00:00"}), 400
    )
    assert_problem(await client.get("/api/v2/executions", params={"cursor": "zzz"}), 400)
    window = await client.get(
        "/api/v2/executions",
        params={"started_after": "2000-01-01T00:00:00Z", "started_before": "2000-01-02T00:00:00Z"},
    )
    assert window.json()["items"] == []


async def test_any_job_id_gets_a_valid_location(client: httpx.AsyncClient) -> None:
    job_id = "nächtlich 🌙 ok"  # found by Schemathesis: a Location header must be latin-1
    created = await client.post(JOBS, json=shell_job(job_id))
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    assert location.endswith("/api/v2/jobs/n%C3%A4chtlich%20%F0%9F%8C%99%20ok")
    fetched = await client.get(location)
    assert fetched.status_code == 200 and fetched.json()["job_id"] == job_id
    refused = await client.post(JOBS, json=shell_job("a/b"))
    assert [e["field"] for e in assert_problem(refused, 400)["errors"]] == ["job_id"]


# -- the listing's cost -----------------------------------------------------------------------
#: Set while the test's own request runs: the engine's background loops poll the same
#: database all the time, and their statements must not be counted.
_COUNTING: contextvars.ContextVar[bool] = contextvars.ContextVar("counting", default=False)


@contextmanager
def statements_of_this_task(store: SqlExecutionStore) -> Iterator[list[str]]:
    """The SQL statements the store runs for the current task (and the tasks it starts)."""
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if _COUNTING.get():
            seen.append(statement)

    engine = store.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    token = _COUNTING.set(True)
    try:
        yield seen
    finally:
        _COUNTING.reset(token)
        event.remove(engine, "before_cursor_execute", count)


async def add_jobs_with_history(
    client: httpx.AsyncClient, store: SqlExecutionStore, job_ids: list[str]
) -> dict[str, str]:
    """Store each job and record two finished executions of it; its newest execution id."""
    newest: dict[str, str] = {}
    for job_id in job_ids:
        body = shell_job(job_id)
        assert (await client.post(JOBS, json=body)).status_code == 201
        job = JobDefinition.from_dict(body)
        for n, status in enumerate((JobStatus.FAILED, JobStatus.SUCCESS)):
            execution_id = f"{job_id}-run-{n}"
            await store.record_pending(execution_id, job, trigger=TRIGGER_NOW)
            await store.record_job(
                JobExecutionResult(
                    execution_id=execution_id,
                    job_id=job_id,
                    job_name=job.job_name,
                    status=status,
                    timezone=job.timezone,
                    metadata={"trigger": TRIGGER_NOW},
                )
            )
            newest[job_id] = execution_id
    return newest


async def test_listing_jobs_costs_the_same_queries_for_any_number_of_jobs(
    client: httpx.AsyncClient, job_api: ModernJobAPI
) -> None:
    store = job_api.engine.store
    assert isinstance(store, SqlExecutionStore)  # SQLite in the API tests

    async def list_all() -> tuple[dict[str, str | None], int]:
        with statements_of_this_task(store) as statements:
            response = await client.get(JOBS, params={"limit": 500})
        assert response.status_code == 200, response.text
        assert response.json()["next_cursor"] is None
        last = {
            item["job_id"]: (item["last_execution"] or {}).get("execution_id")
            for item in response.json()["items"]
        }
        return last, len(statements)

    newest = await add_jobs_with_history(client, store, [f"few-{n:02d}" for n in range(3)])
    assert (await client.post(JOBS, json=shell_job("never-ran"))).status_code == 201
    last, with_few = await list_all()
    assert last == {**newest, "never-ran": None}

    newest |= await add_jobs_with_history(client, store, [f"many-{n:02d}" for n in range(10)])
    last, with_many = await list_all()
    assert last == {**newest, "never-ran": None}

    assert 0 < with_many == with_few, (with_few, with_many)
