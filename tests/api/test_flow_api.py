"""Job flow over HTTP, on SQLite and PostgreSQL: a goto poll loop, step retries and the
attempts of an execution, and manual runs of a stored job steered by a body (overrides, start
step, logical date, overlap)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.api.keys import key_entry, new_api_key
from app.main import create_app
from tests.api.helpers import BASE_URL, assert_problem, make_settings, wait_for

KEYS = {"runner": new_api_key(), "admin": new_api_key()}
ENTRIES = [
    key_entry(KEYS["runner"], "runner", ["run"]),
    key_entry(KEYS["admin"], "admin", ["admin"]),
]
RUNNER = {"Authorization": f"Bearer {KEYS['runner']}"}
ADMIN = {"Authorization": f"Bearer {KEYS['admin']}"}
JOBS = "/api/v2/jobs"


@pytest.fixture
def work_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'work.db'}"


@pytest.fixture
async def client(history_url: str, work_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        database_url=history_url,
        auto_migrate=True,
        api_keys=ENTRIES,
        connections={"work": work_url},
        max_steps_per_job=10,
        queue_max_concurrent=2,
    )
    app: FastAPI = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            yield http


async def admin_sql(url: str, *statements: str) -> None:
    db = create_async_engine(url)
    try:
        async with db.begin() as conn:
            for sql in statements:
                await conn.execute(text(sql))
    finally:
        await db.dispose()


def sh(step_id: str, script: str, **config: Any) -> dict[str, Any]:
    return {"step_id": step_id, "type": "shell", "script": script, **config}


def sql(step_id: str, query: str, **config: Any) -> dict[str, Any]:
    return {"step_id": step_id, "type": "sql", "connection_name": "work", "query": query, **config}


def job(job_id: str, steps: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {"job_id": job_id, "job_name": job_id, "steps": steps, **fields}


async def store_and_run(
    client: httpx.AsyncClient, body: dict[str, Any], run: dict[str, Any] | None = None
) -> httpx.Response:
    created = await client.post(JOBS, json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    return await client.post(f"{JOBS}/{body['job_id']}/run", json=run, headers=RUNNER)


def statuses(steps: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(s["step_id"], s["status"]) for s in steps]


async def test_a_goto_loop_polls_a_table_until_a_row_appears(
    client: httpx.AsyncClient, work_url: str
) -> None:
    await admin_sql(
        work_url,
        "CREATE TABLE polls (n INTEGER)",
        "CREATE TABLE ready (n INTEGER)",
        "CREATE TRIGGER arrive AFTER INSERT ON polls WHEN (SELECT count(*) FROM polls) >= 2 "
        "BEGIN INSERT INTO ready VALUES (7); END",
    )
    check = "SELECT CASE WHEN EXISTS (SELECT 1 FROM ready) THEN 1 ELSE json('no row') END AS ok"
    response = await store_and_run(
        client,
        job(
            "poll",
            [
                sh("prepare", "echo preparing"),
                sql("check", check, on_success={"goto": "load"}, on_failure={"goto": "wait"}),
                sql("wait", "INSERT INTO polls VALUES (1)", on_success={"goto": "check"}),
                sql("load", "SELECT n FROM ready"),
                sh("report", "echo done", on_success="quit_success"),
            ],
        ),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    path = ["prepare", "check", "wait", "check", "wait", "check", "load", "report"]
    assert body["status"] == "success" and body["metadata"]["path"] == path
    assert [s["step_id"] for s in body["steps"]] == path
    stored = (await client.get(f"/api/v2/executions/{body['execution_id']}", headers=RUNNER)).json()
    assert statuses(stored["steps"]) == statuses(body["steps"])
    assert [a["path"] for a in stored["attempts"]] == [path]
    assert [s["metadata"]["run"] for s in stored["steps"] if s["step_id"] == "check"] == [0, 1, 2]


async def test_routing_problems_are_400s_naming_each_field(client: httpx.AsyncClient) -> None:
    bad = job(
        "bad",
        [
            sh("a", "true", on_failure={"goto": "nowhere"}, retry_attempts=-1),
            sh("spin", "true", on_success={"goto": "spin"}, on_failure={"goto": "spin"}),
        ],
    )
    problem = assert_problem(await client.post(JOBS, json=bad, headers=ADMIN), 400)
    fields = {e["field"] for e in problem["errors"]}
    assert "job.steps[0].retry_attempts" in fields or "steps[0].retry_attempts" in fields
    problem = assert_problem(
        await client.post(
            JOBS,
            json={**bad, "steps": [{**bad["steps"][0], "retry_attempts": 0}, bad["steps"][1]]},
            headers=ADMIN,
        ),
        400,
    )
    assert {(e["field"], e["message"]) for e in problem["errors"]} >= {
        ("steps[0].on_failure.goto", "no step has step_id 'nowhere'"),
    }
    assert any(e["field"] == "steps[1].on_failure" for e in problem["errors"])
    assert (await client.get(f"{JOBS}/bad", headers=RUNNER)).status_code == 404


async def test_a_step_that_fails_twice_then_succeeds_and_every_attempt_is_kept(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    counter = tmp_path / "n"
    flaky = (
        f'n=$(cat "{counter}" 2>/dev/null || echo 0); n=$((n+1)); echo "$n" > "{counter}"; '
        'echo "try $n"; [ "$n" -ge 3 ]'
    )
    response = await store_and_run(
        client, job("flaky", [sh("load", flaky, retry_attempts=2), sh("after", "echo ok")])
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert statuses(body["steps"]) == [
        ("load", "failed"),
        ("load", "failed"),
        ("load", "success"),
        ("after", "success"),
    ]
    stored = (await client.get(f"/api/v2/executions/{body['execution_id']}", headers=RUNNER)).json()
    (attempt,) = stored["attempts"]
    assert attempt["attempt"] == 0 and attempt["status"] == "success"
    assert [s["output"] for s in attempt["steps"][:3]] == ["try 1\n", "try 2\n", "try 3\n"]
    assert [s["metadata"]["step_attempt"] for s in attempt["steps"][:3]] == [0, 1, 2]


async def test_job_retries_show_each_attempt_and_the_last_at_the_top(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    marker = tmp_path / "m"
    script = f'[ -e "{marker}" ] || {{ touch "{marker}"; echo boom >&2; exit 9; }}'
    response = await store_and_run(client, job("retry", [sh("a", script)], max_retries=1))
    body = response.json()
    assert body["status"] == "success" and body["retry_count"] == 1
    listed = await client.get("/api/v2/executions", params={"job_id": "retry"}, headers=RUNNER)
    (item,) = listed.json()["items"]
    for execution in (body, item):
        assert [(a["attempt"], a["status"]) for a in execution["attempts"]] == [
            (0, "failed"),
            (1, "success"),
        ]
        assert execution["attempts"][0]["error_message"].startswith("step 'a' failed")
        assert statuses(execution["attempts"][0]["steps"]) == [("a", "failed")]
        assert statuses(execution["steps"]) == [("a", "success")]


async def test_a_manual_run_is_steered_by_its_body(client: httpx.AsyncClient) -> None:
    steps = [
        sh("extract", "echo extract"),
        sh(
            "load",
            'echo "$DAY $MODE $JOBSCHEDULER_LOGICAL_DATE"',
            parameters={"DAY": {"$from": "run.logical_date"}, "MODE": "full"},
        ),
        sh("report", "echo report"),
    ]
    body = {
        "parameters": {"load": {"MODE": "delta"}},
        "start_step_id": "load",
        "logical_date": "2026-11-30",
    }
    response = await store_and_run(client, job("steer", steps), body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert statuses(result["steps"]) == [
        ("load", "success"),
        ("report", "success"),
        ("extract", "skipped"),
    ]
    assert result["steps"][0]["output"] == "2026-11-30 delta 2026-11-30\n"
    stored = (
        await client.get(f"/api/v2/executions/{result['execution_id']}", headers=RUNNER)
    ).json()
    assert stored["metadata"]["parameter_overrides"] == {"load": {"MODE": "delta"}}
    assert stored["metadata"]["start_step_id"] == "load"
    assert stored["metadata"]["logical_date"] == "2026-11-30"
    # The stored job is unchanged: a plain run uses its own parameter.
    plain = await client.post(f"{JOBS}/steer/run", headers=RUNNER)
    assert plain.json()["steps"][1]["output"].split()[1] == "full"


async def test_a_bad_run_body_is_one_400_listing_every_problem(client: httpx.AsyncClient) -> None:
    await client.post(
        JOBS, json=job("j", [sh("a", "echo a", parameters={"X": "1"})]), headers=ADMIN
    )
    response = await client.post(
        f"{JOBS}/j/run",
        json={
            "parameters": {"nope": {"X": "2"}, "a": {"Y": "3"}},
            "start_step_id": "missing",
            "logical_date": "2026-02-30",
        },
        headers=RUNNER,
    )
    problem = assert_problem(response, 400)
    assert {e["field"] for e in problem["errors"]} == {
        "parameters.nope",
        "parameters.a.Y",
        "start_step_id",
        "logical_date",
    }
    listed = await client.get("/api/v2/executions", params={"job_id": "j"}, headers=RUNNER)
    assert listed.json()["items"] == []  # nothing was started
    shape = assert_problem(
        await client.post(f"{JOBS}/j/run", json={"wait": "no", "extra": 1}, headers=RUNNER), 400
    )
    assert {e["field"] for e in shape["errors"]} == {"body.wait", "body.extra"} or len(
        shape["errors"]
    ) == 2


async def test_a_manual_run_follows_the_overlap_policy_unless_an_admin_allows(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    hold = sh("hold", f'while [ ! -e "{gate}" ]; do sleep 0.05; done')
    created = await client.post(JOBS, json=job("busy", [hold]), headers=ADMIN)
    assert created.json()["overlap_policy"] == "skip"
    first = await client.post(f"{JOBS}/busy/run", json={"wait": False}, headers=RUNNER)
    assert first.status_code == 202, first.text
    first_id = first.json()["execution_id"]

    async def status() -> str:
        got = await client.get(f"/api/v2/executions/{first_id}", headers=RUNNER)
        return str(got.json()["status"])

    await wait_for(status, lambda s: s == "running")
    refused = assert_problem(await client.post(f"{JOBS}/busy/run", headers=RUNNER), 409)
    assert first_id in refused["detail"]
    forbidden = assert_problem(
        await client.post(f"{JOBS}/busy/run", json={"overlap": "allow"}, headers=RUNNER), 403
    )
    assert [e["field"] for e in forbidden["errors"]] == ["overlap"]
    second = await client.post(
        f"{JOBS}/busy/run", json={"overlap": "allow", "wait": False}, headers=ADMIN
    )
    assert second.status_code == 202, second.text
    gate.touch()
    for execution_id in (first_id, second.json()["execution_id"]):
        done = await wait_for(
            lambda eid=execution_id: client.get(f"/api/v2/executions/{eid}", headers=RUNNER),
            lambda r: r.json()["status"] == "success",
        )
        assert done.json()["requested_by"] in ("runner", "admin")
    allowed = (
        await client.get(f"/api/v2/executions/{second.json()['execution_id']}", headers=RUNNER)
    ).json()
    assert allowed["metadata"]["overlap"] == "allow"


def nightly_london(job_id: str = "nightly") -> dict[str, Any]:
    """A daily 02:30 Europe/London job that records the day it loads (a token bound as an SQL
    parameter) and takes a moment, so runs let loose at once would overlap."""
    return job(
        job_id,
        [
            sql(
                "load",
                "INSERT INTO loads (day, due, execution) VALUES (:day, :due, :eid)",
                parameters={
                    "day": {"$from": "run.logical_date"},
                    "due": {"$from": "run.scheduled_for"},
                    "eid": {"$from": "run.execution_id"},
                },
            ),
            sh("settle", "sleep 0.2"),
        ],
        timezone="Europe/London",
        schedule_config={"type": "cron", "expression": "30 2 * * *"},
    )


async def test_a_week_of_backfill_across_the_dst_change_runs_each_day_once(
    client: httpx.AsyncClient, work_url: str
) -> None:
    await admin_sql(work_url, "CREATE TABLE loads (day TEXT, due TEXT, execution TEXT)")
    created = await client.post(JOBS, json=nightly_london(), headers=ADMIN)
    assert created.status_code == 201, created.text
    week = {"from": "2026-10-22", "to": "2026-10-28"}  # BST ends on Sunday the 25th

    dry = await client.post(
        f"{JOBS}/nightly/backfill", json={**week, "dry_run": True}, headers=RUNNER
    )
    assert dry.status_code == 200, dry.text
    planned = dry.json()["runs"]
    days = [f"2026-10-{d}" for d in range(22, 29)]
    assert [r["logical_date"] for r in planned] == days
    assert all(r["execution_id"] is None for r in planned)
    due = [r["scheduled_for"] for r in planned]
    assert due[2] == "2026-10-24T01:30:00Z" and due[3] == "2026-10-25T02:30:00Z"
    assert {r["scheduled_for_local"][11:19] for r in planned} == {"02:30:00"}
    listed = await client.get("/api/v2/executions", params={"job_id": "nightly"}, headers=RUNNER)
    assert listed.json()["items"] == []  # a dry run makes nothing

    made = await client.post(f"{JOBS}/nightly/backfill", json=week, headers=RUNNER)
    assert made.status_code == 202, made.text
    ids = [r["execution_id"] for r in made.json()["runs"]]
    assert len(set(ids)) == 7 and made.json()["already_ran"] == []

    async def finished() -> list[dict[str, Any]]:
        got = await client.get(
            "/api/v2/executions", params={"job_id": "nightly", "limit": 50}, headers=RUNNER
        )
        return [e for e in got.json()["items"] if e["status"] not in ("pending", "running")]

    done = await wait_for(finished, lambda items: len(items) == 7, timeout=30)
    assert {e["status"] for e in done} == {"success"}
    assert {e["trigger"] for e in done} == {"backfill"}
    assert {e["metadata"]["logical_date"] for e in done} == set(days)
    status = (await client.get("/api/v2/execution/status", headers=RUNNER)).json()
    assert 1 <= status["engine"]["peak_workers"] <= 2  # through the queue, two at a time

    again = await client.post(f"{JOBS}/nightly/backfill", json=week, headers=RUNNER)
    assert again.status_code == 200, again.text
    assert again.json()["runs"] == [] and len(again.json()["already_ran"]) == 7
    rows = await select_rows(work_url, "SELECT day, due FROM loads ORDER BY day")
    assert [r[0] for r in rows] == days  # each logical date once
    assert rows[3][1] == "2026-10-25T02:30:00Z"


async def test_backfill_limits_are_400s(client: httpx.AsyncClient) -> None:
    await client.post(JOBS, json=nightly_london(), headers=ADMIN)
    minutely = {
        **nightly_london("minutely"),
        "schedule_config": {
            "type": "interval",
            "every_seconds": 60,
            "start_at": "2026-01-01T00:00:00Z",
        },
    }
    await client.post(JOBS, json=minutely, headers=ADMIN)
    await client.post(JOBS, json=job("adhoc", [sh("a", "true")]), headers=ADMIN)
    url = f"{JOBS}/nightly/backfill"

    backwards = assert_problem(
        await client.post(url, json={"from": "2026-10-28", "to": "2026-10-22"}, headers=RUNNER), 400
    )
    assert [e["field"] for e in backwards["errors"]] == ["to"]
    naive = assert_problem(
        await client.post(
            url, json={"from": "2026-10-22T00:00:00", "to": "someday"}, headers=RUNNER
        ),
        400,
    )
    assert [e["field"] for e in naive["errors"]] == ["from", "to"]
    too_many = assert_problem(
        await client.post(
            f"{JOBS}/minutely/backfill",
            json={"from": "2026-10-01", "to": "2026-10-08"},
            headers=RUNNER,
        ),
        400,
    )
    assert "more than 10000 fires" in too_many["errors"][0]["message"]
    over = assert_problem(
        await client.post(
            url, json={"from": "2026-10-01", "to": "2026-10-31", "max_runs": 5}, headers=RUNNER
        ),
        400,
    )
    assert over["errors"][0]["field"] == "max_runs"
    assert_problem(
        await client.post(
            f"{JOBS}/adhoc/backfill",
            json={"from": "2026-10-01", "to": "2026-10-02"},
            headers=RUNNER,
        ),
        400,
    )
    assert_problem(
        await client.post(
            f"{JOBS}/nope/backfill", json={"from": "2026-10-01", "to": "2026-10-02"}, headers=RUNNER
        ),
        404,
    )
    listed = await client.get("/api/v2/executions", headers=RUNNER)
    # Nothing half made (the minutely job's own schedule fires, of course).
    assert [e for e in listed.json()["items"] if e["trigger"] == "backfill"] == []


async def select_rows(url: str, sql_text: str) -> list[Any]:
    db = create_async_engine(url)
    try:
        async with db.connect() as conn:
            return [tuple(r) for r in (await conn.execute(text(sql_text))).all()]
    finally:
        await db.dispose()
