"""Bad requests answer 400 (or 413) problem details naming each bad field; never 422 or 500."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from app.main import create_app
from tests.api.helpers import BASE_URL, assert_problem, make_settings, shell_job

EXECUTE = "/api/v2/jobs/execute"
SCHEDULE = "/api/v2/jobs/schedule"


def job_with(**changes: Any) -> dict[str, Any]:
    job = shell_job("bad-input")
    for key, value in changes.items():
        if value is None:
            job.pop(key)
        else:
            job[key] = value
    return job


def with_step(step: dict[str, Any]) -> dict[str, Any]:
    return job_with(steps=[step])


def shell_step(**fields: Any) -> dict[str, Any]:
    return {"step_id": "s0", "type": "shell", **fields}


BAD_JOBS: list[tuple[str, dict[str, Any] | list[Any], str, str]] = [
    # (case, body, field, part of the message)
    ("missing job_id", job_with(job_id=None), "job_id", "required"),
    ("empty job_name", job_with(job_name=""), "job_name", "at least 1"),
    ("unknown timezone", job_with(timezone="Mars/Olympus_Mons"), "timezone", "IANA"),
    ("timezone directory", job_with(timezone="America"), "timezone", "IANA"),
    ("unknown step type", with_step({"step_id": "x", "type": "ftp"}), "steps[0].type", "ftp"),
    ("missing step type", with_step({"step_id": "x", "script": "ls"}), "steps[0].type", "required"),
    (
        "sql without query",
        with_step({"step_id": "q", "type": "sql", "connection_name": "warehouse"}),
        "steps[0].query",
        "required",
    ),
    (
        "sql without connection",
        with_step({"step_id": "q", "type": "sql", "query": "SELECT 1"}),
        "steps[0].connection_name",
        "required",
    ),
    ("shell with neither script", with_step(shell_step()), "steps[0]", "script"),
    (
        "shell with both scripts",
        with_step(shell_step(script="echo", script_path="/tmp/x.sh")),
        "steps[0].script_path",
        "not both",
    ),
    (
        "powershell with neither script",
        with_step({"step_id": "p", "type": "powershell"}),
        "steps[0]",
        "script",
    ),
    (
        "bad execution policy",
        with_step({"step_id": "p", "type": "powershell", "script": "1", "execution_policy": "X"}),
        "steps[0].execution_policy",
        "",
    ),
    ("negative retries", job_with(max_retries=-1), "max_retries", "greater than or equal"),
    ("retries as string", job_with(max_retries="3"), "max_retries", "integer"),
    ("enabled as number", job_with(enabled=1), "enabled", "boolean"),
    ("zero timeout", job_with(timeout_seconds=0), "timeout_seconds", "greater than"),
    ("steps as object", job_with(steps={"step_id": "s0"}), "steps", "list"),
    ("no steps", job_with(steps=[]), "steps", "at least 1"),
    (
        "step timeout as string",
        with_step(shell_step(script="ls", timeout="30")),
        "steps[0].timeout",
        "integer",
    ),
    (
        "bad step_id",
        with_step(shell_step(step_id="has space", script="ls")),
        "steps[0].step_id",
        "pattern",
    ),
    ("unknown top-level field", job_with(owner="me"), "owner", "unknown field"),
    (
        "unknown step field",
        with_step(shell_step(script="ls", shell="bash")),
        "steps[0].shell",
        "unknown field",
    ),
    (
        "duplicate step ids",
        job_with(steps=[shell_step(script="ls"), shell_step(script="ls")]),
        "steps[1].step_id",
        "duplicate",
    ),
    ("too many steps", shell_job("many", *["echo"] * 6), "steps", "at most 5 steps"),
    ("NUL in description", job_with(description="a\x00b"), "description", "NUL"),
    (
        "bad schedule_config",
        job_with(schedule_config={"type": "weekly"}),
        "schedule_config.type",
        "cron",
    ),
    (
        "bad cron expression",
        job_with(schedule_config={"type": "cron", "expression": "61 * * * *"}),
        "schedule_config.expression",
        "cron",
    ),
    ("body is a list", [shell_job()], "body", "valid dictionary"),
]


@pytest.mark.parametrize(
    ("body", "field", "message"), [c[1:] for c in BAD_JOBS], ids=[c[0] for c in BAD_JOBS]
)
async def test_invalid_job_names_the_field(
    client: httpx.AsyncClient, body: Any, field: str, message: str
) -> None:
    response = await client.post(EXECUTE, json=body)

    problem = assert_problem(response, 400)
    assert problem["instance"] == EXECUTE
    fields = {e["field"]: e["message"] for e in problem["errors"]}
    assert field in fields, problem["errors"]
    assert message.lower() in fields[field].lower()
    assert field in problem["detail"]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [c[1:] for c in BAD_JOBS if isinstance(c[1], dict)],
    ids=[c[0] for c in BAD_JOBS if isinstance(c[1], dict)],
)
async def test_invalid_job_in_a_schedule_request_is_under_job(
    client: httpx.AsyncClient, body: dict[str, Any], field: str, message: str
) -> None:
    response = await client.post(
        SCHEDULE, json={"job": body, "scheduled_time": "2099-01-01T00:00:00Z"}
    )

    problem = assert_problem(response, 400)
    fields = {e["field"]: e["message"] for e in problem["errors"]}
    assert f"job.{field}" in fields, problem["errors"]
    assert message.lower() in fields[f"job.{field}"].lower()


async def test_every_problem_is_reported_at_once(client: httpx.AsyncClient) -> None:
    body = {
        "job_name": "x",
        "max_retries": -1,
        "bogus": True,
        "steps": [{"step_id": "q", "type": "sql"}, {"step_id": "p", "type": "nope"}],
    }
    problem = assert_problem(await client.post(EXECUTE, json=body), 400)

    assert {e["field"] for e in problem["errors"]} >= {
        "job_id",
        "max_retries",
        "bogus",
        "steps[0].query",
        "steps[0].connection_name",
        "steps[1].type",
    }


@pytest.mark.parametrize(
    ("content", "content_type", "message"),
    [
        (b'{"job_id": "x", ', "application/json", "not valid JSON"),
        (b"", "application/json", "required"),
        (b"job_id=x", "application/x-www-form-urlencoded", "dictionary"),
    ],
    ids=["invalid JSON", "empty body", "form body"],
)
async def test_unparseable_body_is_400(
    client: httpx.AsyncClient, content: bytes, content_type: str, message: str
) -> None:
    response = await client.post(EXECUTE, content=content, headers={"content-type": content_type})

    problem = assert_problem(response, 400)
    assert problem["errors"][0]["field"] == "body"
    assert message.lower() in problem["errors"][0]["message"].lower()


async def test_bad_query_parameter_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(EXECUTE, params={"wait": "maybe"}, json=shell_job())

    problem = assert_problem(response, 400)
    assert [e["field"] for e in problem["errors"]] == ["wait"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"job": shell_job()}, "scheduled_time"),
        ({"scheduled_time": "2099-01-01T00:00:00Z"}, "job"),
        ({"job": shell_job(), "scheduled_time": "next tuesday"}, "scheduled_time"),
        ({"job": shell_job(), "scheduled_time": 1700000000}, "scheduled_time"),
        ({"job": shell_job(), "scheduled_time": "0001-01-01T00:00:00+05:00"}, "scheduled_time"),
        ({"job": shell_job(), "scheduled_time": "2099-01-01T00:00:00Z", "x": 1}, "x"),
    ],
    ids=["no time", "no job", "not ISO", "a number", "out of range", "unknown field"],
)
async def test_invalid_schedule_request(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(await client.post(SCHEDULE, json=body), 400)

    assert field in [e["field"] for e in problem["errors"]], problem["errors"]


# -- size limits (the test settings allow 64 KiB bodies and 5 steps) --------------------------
async def test_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    job = shell_job("big", "echo " + "x" * 70_000)
    response = await client.post(EXECUTE, json=job)

    problem = assert_problem(response, 413)
    assert "65536" in problem["detail"]


async def test_chunked_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    payload = json.dumps(shell_job("big", "echo " + "x" * 70_000)).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 8192):
            yield payload[start : start + 8192]

    response = await client.post(
        EXECUTE, content=chunks(), headers={"content-type": "application/json"}
    )

    assert "content-length" not in response.request.headers
    assert_problem(response, 413)


@pytest.mark.parametrize("settings", [{"max_body_bytes": 4 * 1024 * 1024}], indirect=True)
@pytest.mark.parametrize(
    ("make_step", "field"),
    [
        (
            lambda big: {"step_id": "q", "type": "sql", "connection_name": "c", "query": big},
            "query",
        ),
        (lambda big: {"step_id": "s", "type": "shell", "script": big}, "script"),
    ],
    ids=["query", "script"],
)
async def test_query_and_script_length_limits_are_400(
    client: httpx.AsyncClient, make_step: Callable[[str], dict[str, Any]], field: str
) -> None:
    job = job_with(steps=[make_step("x" * 1_000_001)])
    problem = assert_problem(await client.post(EXECUTE, json=job), 400)

    assert [e["field"] for e in problem["errors"]] == [f"steps[0].{field}"]
    assert "at most 1000000" in problem["errors"][0]["message"]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'"metadata": {"ratio": NaN}', "metadata.ratio"),
        (b'"metadata": {"big": -Infinity}', "metadata.big"),
        (b'"description": "\\ud800 lone surrogate"', "description"),
    ],
    ids=["NaN", "Infinity", "lone surrogate"],
)
async def test_values_json_or_a_database_cannot_carry_are_400(
    client: httpx.AsyncClient, raw: bytes, field: str
) -> None:
    body = (
        b'{"job_id": "j", "job_name": "J", '
        + raw
        + b', "steps": [{"step_id": "s", "type": "shell", "script": "echo"}]}'
    )
    response = await client.post(
        EXECUTE, content=body, headers={"content-type": "application/json"}
    )

    problem = assert_problem(response, 400)
    assert [e["field"] for e in problem["errors"]] == [field]


# -- what a SQL step's query may hold depends on its connection's database -------------------

SQL_CONNECTIONS = {
    "connections": {
        "lite": "sqlite+aiosqlite:///./never-opened.db",
        "pg": "postgresql+asyncpg://postgres@127.0.0.1:5432/never_opened",
        "maria": "mysql+aiomysql://root@127.0.0.1:3306/never_opened",
        "ms": "mssql+aioodbc://jobs:pw@127.0.0.1:1/sales?driver=FreeTDS",
        "ms_ro": {
            "url": "mssql+aioodbc://jobs:pw@127.0.0.1:1/sales?driver=FreeTDS",
            "read_only": True,
        },
    }
}
BATCHES = "SELECT 1 AS a\nGO\nSELECT 2 AS b\n"


def sql_job(connection: str, query: str = BATCHES, **fields: Any) -> dict[str, Any]:
    step = {"step_id": "q", "type": "sql", "connection_name": connection, "query": query}
    return job_with(steps=[{**step, **fields}])


@pytest.mark.parametrize("settings", [SQL_CONNECTIONS], indirect=True)
@pytest.mark.parametrize(
    ("connection", "name"), [("lite", "SQLite"), ("pg", "PostgreSQL"), ("maria", "MariaDB/MySQL")]
)
@pytest.mark.parametrize("route", ["execute", "store"])
async def test_a_go_line_is_400_outside_sql_server(
    client: httpx.AsyncClient, connection: str, name: str, route: str
) -> None:
    job = sql_job(connection)
    response = await (
        client.post(EXECUTE, json=job)
        if route == "execute"
        else client.post("/api/v2/jobs", json=job)
    )

    problem = assert_problem(response, 400)
    (error,) = problem["errors"]
    assert error["field"] == "steps[0].query"
    assert error["message"].startswith("line 2: GO separates T-SQL batches")
    assert f"on {name} it would become part of the statement" in error["message"]
    if route == "store":
        assert (await client.get("/api/v2/jobs/bad-input")).status_code == 404  # nothing kept


@pytest.mark.parametrize("settings", [SQL_CONNECTIONS], indirect=True)
async def test_a_second_statement_is_400_on_postgresql(client: httpx.AsyncClient) -> None:
    job = sql_job("pg", "INSERT INTO t VALUES (1);\nDELETE FROM t")

    problem = assert_problem(await client.post(EXECUTE, json=job), 400)

    assert [e["field"] for e in problem["errors"]] == ["steps[0].query"]
    assert (
        "more than one statement (another one starts on line 2" in problem["errors"][0]["message"]
    )


@pytest.mark.parametrize("settings", [SQL_CONNECTIONS], indirect=True)
async def test_go_batches_are_accepted_on_a_sql_server_connection(
    client: httpx.AsyncClient,
) -> None:
    job = sql_job("ms", BATCHES + "GO 3 -- again\nSELECT 3", transaction=False)

    response = await client.post("/api/v2/jobs", json=job)

    assert response.status_code == 201, response.text
    stored = (await client.get("/api/v2/jobs/bad-input")).json()
    assert stored["steps"][0]["transaction"] is False
    assert stored["warnings"] == []


@pytest.mark.parametrize("settings", [SQL_CONNECTIONS], indirect=True)
async def test_sql_server_problems_are_400_all_at_once(client: httpx.AsyncClient) -> None:
    job = job_with(
        steps=[
            {"step_id": "a", "type": "sql", "connection_name": "ms", "query": "SELECT 1\nGO x"},
            {
                "step_id": "b",
                "type": "sql",
                "connection_name": "ms_ro",
                "query": "SELECT 1",
                "transaction": False,
            },
            {"step_id": "c", "type": "sql", "connection_name": "lite", "query": "SELECT 1\ngo"},
        ]
    )

    problem = assert_problem(await client.post("/api/v2/jobs", json=job), 400)

    assert [e["field"] for e in problem["errors"]] == [
        "steps[0].query",
        "steps[1].transaction",
        "steps[2].query",
    ]
    assert problem["errors"][0]["message"].startswith("line 2: GO must stand alone")


async def test_a_stored_job_whose_connection_changed_database_warns(service_database: str) -> None:
    """Stored on SQL Server, read back after the connection became a SQLite one."""

    async def start(url: str) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(make_settings(connections={"x": url}))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
                yield http

    async for http in start(SQL_CONNECTIONS["connections"]["ms"]):
        assert (await http.post("/api/v2/jobs", json=sql_job("x"))).status_code == 201
    async for http in start("sqlite+aiosqlite:///./never-opened.db"):
        stored = (await http.get("/api/v2/jobs/bad-input")).json()

    assert [w["field"] for w in stored["warnings"]] == ["steps[0].query"]
    assert stored["warnings"][0]["message"].startswith("line 2: GO separates T-SQL batches")
