"""POST /api/v2/jobs/schedule/batch through the real app on SQLite and PostgreSQL: per-item
answers, atomic (all or nothing) and non-atomic (per item) validation, the 1,000-item limit,
connection access per item, and that what is answered is what is stored."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.api.keys import key_entry, new_api_key
from app.main import create_app
from tests.api.helpers import BASE_URL, assert_problem, execution_status, make_settings, shell_job
from tests.conftest import temporary_pg_database

BATCH = "/api/v2/jobs/schedule/batch"
NEXT_YEAR = datetime.now(UTC).year + 1
KEYS = {name: new_api_key() for name in ("etl", "intruder")}


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture(scope="module")
def fresh_pg_url() -> Iterator[str]:
    """One PostgreSQL database for the module (its tests use job ids of their own)."""
    with temporary_pg_database() as url:
        yield url


@pytest.fixture
async def client(history_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    warehouse = f"sqlite+aiosqlite:///{tmp_path / 'warehouse.db'}"
    settings = make_settings(
        database_url=history_url,
        auto_migrate=True,
        max_body_bytes=2 * 1024 * 1024,
        api_keys=[
            key_entry(KEYS["etl"], "etl", ["run"]),
            key_entry(KEYS["intruder"], "intruder", ["run", "read"]),
        ],
        connections={"warehouse": {"url": warehouse, "allowed_keys": ["etl"]}},
    )
    app: FastAPI = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url=BASE_URL, headers=auth("etl")
        ) as http:
            yield http


def unique(prefix: str) -> str:
    return f"{prefix}-{datetime.now(UTC).timestamp():.6f}".replace(".", "-")


def item(job_id: str, when: str, **job: Any) -> dict[str, Any]:
    return {"job": shell_job(job_id, **job), "scheduled_time": when}


async def recorded(client: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    response = await client.get("/api/v2/executions", params={"job_id": job_id, "limit": 200})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_every_item_is_scheduled_and_stored_as_answered(client: httpx.AsyncClient) -> None:
    job_id = unique("batch")
    body = {
        "items": [
            item(job_id, f"{NEXT_YEAR}-07-01T09:30:00", timezone="Europe/Berlin"),
            item(job_id, f"{NEXT_YEAR}-01-15T08:30:00Z"),
            item(job_id, f"{NEXT_YEAR}-03-01T12:00:00+05:00", timezone="Asia/Tokyo"),
        ]
    }

    response = await client.post(BATCH, json=body)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["atomic"], answer["scheduled"], answer["failed"]) == (True, 3, 0)
    first, second, third = answer["items"]
    assert [a["index"] for a in answer["items"]] == [0, 1, 2]
    assert all(a["scheduled"] and a["errors"] == [] for a in answer["items"])
    assert first["scheduled_time_utc"] == f"{NEXT_YEAR}-07-01T07:30:00Z"
    assert first["scheduled_time_local"] == f"{NEXT_YEAR}-07-01T09:30:00+02:00"
    assert second["scheduled_time_utc"] == f"{NEXT_YEAR}-01-15T08:30:00Z"
    assert third["timezone"] == "Asia/Tokyo"
    assert third["scheduled_time_local"] == f"{NEXT_YEAR}-03-01T16:00:00+09:00"
    assert len({a["execution_id"] for a in answer["items"]}) == 3
    for a in answer["items"]:
        assert a["status_url"].endswith(f"/api/v2/executions/{a['execution_id']}")
        stored = await execution_status(client, a["execution_id"])
        assert stored["status"] == "pending"
        assert stored["trigger"] == "scheduled"
        assert datetime.fromisoformat(stored["scheduled_for"]) == datetime.fromisoformat(
            a["scheduled_time_utc"]
        )
    assert len(await recorded(client, job_id)) == 3


async def test_atomic_refuses_the_whole_batch_naming_each_bad_item(
    client: httpx.AsyncClient,
) -> None:
    job_id = unique("atomic")
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    body = {
        "items": [
            item(job_id, f"{NEXT_YEAR}-01-15T08:30:00Z"),
            item(job_id, past),
            {"job": {"job_id": job_id, "job_name": "x", "steps": []}, "scheduled_time": "soon"},
            item(job_id, f"{NEXT_YEAR}-01-16T08:30:00Z", timezone="Mars/Olympus"),
            "not an object",
        ]
    }

    problem = assert_problem(await client.post(BATCH, json=body), 400)

    fields = {e["field"] for e in problem["errors"]}
    assert "items[1].scheduled_time" in fields
    assert any(f.startswith("items[2].job.steps") for f in fields), fields
    assert "items[3].job.timezone" in fields
    assert any(f.startswith("items[4]") for f in fields), fields
    assert not any(f.startswith("items[0]") for f in fields)
    past_error = next(e for e in problem["errors"] if e["field"] == "items[1].scheduled_time")
    assert "in the past" in past_error["message"]
    assert await recorded(client, job_id) == []  # nothing written


async def test_non_atomic_schedules_the_good_items_and_answers_the_bad(
    client: httpx.AsyncClient,
) -> None:
    job_id = unique("partial")
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    body = {
        "atomic": False,
        "items": [
            item(job_id, f"{NEXT_YEAR}-01-15T08:30:00Z"),
            item(job_id, past),
            item(job_id, "not a time"),
            item(job_id, f"{NEXT_YEAR}-01-17T08:30:00Z"),
            item(job_id, f"{NEXT_YEAR}-01-18T08:30:00Z", enabled=False),
        ],
    }

    response = await client.post(BATCH, json=body)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["atomic"], answer["scheduled"], answer["failed"]) == (False, 2, 3)
    good = [a for a in answer["items"] if a["scheduled"]]
    bad = {a["index"]: a for a in answer["items"] if not a["scheduled"]}
    assert [a["index"] for a in good] == [0, 3]
    assert sorted(bad) == [1, 2, 4]
    assert bad[1]["errors"][0]["field"] == "items[1].scheduled_time"
    assert "in the past" in bad[1]["errors"][0]["message"]
    assert bad[2]["errors"][0]["field"] == "items[2].scheduled_time"
    assert "ISO 8601" in bad[2]["errors"][0]["message"]
    assert bad[4]["errors"][0]["field"] == "items[4].job.enabled"
    assert all(a["execution_id"] is None for a in bad.values())
    stored = await recorded(client, job_id)
    assert sorted(e["execution_id"] for e in stored) == sorted(a["execution_id"] for a in good)


@pytest.mark.parametrize("atomic", [True, False])
async def test_an_item_that_breaks_the_contract_refuses_the_batch(
    client: httpx.AsyncClient, atomic: bool
) -> None:
    """Per-item answers are for what depends on this server and the time; an item that is
    not a ScheduleCreate as the contract says is a 400, with every other problem too."""
    job_id = unique("malformed")
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    body = {
        "atomic": atomic,
        "items": [
            item(job_id, f"{NEXT_YEAR}-01-15T08:30:00Z"),
            {"job": shell_job(job_id), "scheduled_time": "2035-01-01T00:00:00Z", "extra": 1},
            item(job_id, past),
        ],
    }

    problem = assert_problem(await client.post(BATCH, json=body), 400)

    assert [e["field"] for e in problem["errors"]] == [
        "items[1].extra",
        "items[2].scheduled_time",
    ]
    assert await recorded(client, job_id) == []  # nothing written


@pytest.mark.parametrize("atomic", [True, False])
async def test_more_than_1000_items_is_400_naming_items(
    client: httpx.AsyncClient, atomic: bool
) -> None:
    job_id = unique("limit")
    body = {"atomic": atomic, "items": [item(job_id, f"{NEXT_YEAR}-01-15T08:30:00Z")] * 1001}

    problem = assert_problem(await client.post(BATCH, json=body), 400)

    assert problem["errors"][0]["field"] == "items"
    assert "1000" in problem["errors"][0]["message"]
    assert await recorded(client, job_id) == []


async def test_1000_items_are_scheduled_in_one_request(client: httpx.AsyncClient) -> None:
    job_id = unique("thousand")
    start = datetime(NEXT_YEAR, 2, 1, tzinfo=UTC)
    body = {
        "items": [
            item(job_id, (start + timedelta(minutes=i)).isoformat().replace("+00:00", "Z"))
            for i in range(1000)
        ]
    }

    response = await client.post(BATCH, json=body)

    assert response.status_code == 200, response.text
    assert response.json()["scheduled"] == 1000
    page = await client.get("/api/v2/executions", params={"job_id": job_id, "limit": 200})
    assert page.status_code == 200, page.text
    assert len(page.json()["items"]) == 200 and page.json()["next_cursor"]


async def test_empty_batch_and_a_body_over_the_limit_are_refused(
    client: httpx.AsyncClient,
) -> None:
    problem = assert_problem(await client.post(BATCH, json={"items": []}), 400)
    assert problem["errors"][0]["field"] == "items"

    big = shell_job("big", "echo " + "x" * 3000)
    body = {"items": [{"job": big, "scheduled_time": f"{NEXT_YEAR}-01-15T08:30:00Z"}] * 1000}
    assert_problem(await client.post(BATCH, json=body), 413)


async def test_connection_access_is_checked_per_item(client: httpx.AsyncClient) -> None:
    job_id = unique("access")
    sql = {
        "job_id": job_id,
        "job_name": "sql",
        "steps": [
            {"step_id": "q", "type": "sql", "connection_name": "warehouse", "query": "SELECT 1"}
        ],
    }
    when = f"{NEXT_YEAR}-01-15T08:30:00Z"
    body = {"items": [item(job_id, when), {"job": sql, "scheduled_time": when}]}

    problem = assert_problem(await client.post(BATCH, json=body, headers=auth("intruder")), 403)
    assert problem["errors"][0]["field"] == "items[1].job.steps[0].connection_name"
    assert await recorded(client, job_id) == []

    partial = await client.post(BATCH, json={**body, "atomic": False}, headers=auth("intruder"))
    assert partial.status_code == 200, partial.text
    answers = partial.json()["items"]
    assert [a["scheduled"] for a in answers] == [True, False]
    assert answers[1]["errors"][0]["field"] == "items[1].job.steps[0].connection_name"

    allowed = await client.post(BATCH, json=body, headers=auth("etl"))
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["scheduled"] == 2
