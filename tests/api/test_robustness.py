"""Issue 12, items 1-4: no 500 from input, every problem at once, stored jobs checked against
this server, unknown query parameters refused and filters validated."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.main import create_app
from tests.api.helpers import assert_problem, make_settings, shell_job

CONTRACT = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
WAREHOUSE = {"warehouse": "sqlite+aiosqlite:///:memory:"}


def fields(response: httpx.Response) -> dict[str, str]:
    return {e["field"]: e["message"] for e in assert_problem(response, 400)["errors"]}


# -- 1. no 500 from input ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "query",
    [
        "started_before=9999-12-31T23:59:59-14:00",
        "started_after=0001-01-01T00:00:00%2B14:00",
        "started_after=2020-01-01T00:00:00%2B23:00",
        "started_after=2020-01-01T00:00:00",
        "started_before=tomorrow",
        "started_before=0.5",
    ],
)
async def test_instants_out_of_range_name_the_parameter(
    client: httpx.AsyncClient, query: str
) -> None:
    response = await client.get(f"/api/v2/executions?{query}")

    body = assert_problem(response, 400)
    assert body["type"].endswith("/invalid-request")
    assert [e["field"] for e in body["errors"]] == [query.split("=")[0]]


async def test_a_schedule_starting_in_year_9999_ends_there(client: httpx.AsyncClient) -> None:
    config = {"type": "cron", "expression": "0 0 * * *", "start_at": "9999-12-31T00:00:00"}

    preview = await client.post(
        "/api/v2/schedules/preview",
        json={"schedule_config": config, "timezone": "UTC", "count": 3},
    )
    after_the_end = await client.post(
        "/api/v2/schedules/preview",
        json={
            "schedule_config": {"type": "cron", "expression": "0 0 * * *"},
            "after": "9999-12-31T00:00:00Z",
            "timezone": "UTC",
            "count": 3,
        },
    )

    assert preview.status_code == 200, preview.text
    assert [r["at_utc"] for r in preview.json()["runs"]] == ["9999-12-31T00:00:00Z"]
    assert after_the_end.status_code == 200, after_the_end.text
    assert after_the_end.json()["runs"] == []


async def test_a_stored_job_starting_in_year_9999_answers_its_next_runs(
    client: httpx.AsyncClient,
) -> None:
    config = {"type": "cron", "expression": "0 0 * * *", "start_at": "9999-12-31T00:00:00"}
    created = await client.post("/api/v2/jobs", json=shell_job("far", schedule_config=config))
    assert created.status_code == 201, created.text

    runs = await client.get("/api/v2/jobs/far/next-runs?count=5")

    assert runs.status_code == 200, runs.text
    assert [r["at_utc"] for r in runs.json()["runs"]] == ["9999-12-31T00:00:00Z"]


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"type": "interval", "every_seconds": 10**17}, "schedule_config.every_seconds"),
        ({"type": "once", "at": "9999-12-31T23:59:59-14:00"}, "schedule_config.at"),
        (
            {"type": "cron", "expression": "0 0 * * *", "start_at": "0001-01-01T00:00:00+14:00"},
            "schedule_config.start_at",
        ),
    ],
)
async def test_dates_and_periods_beyond_the_calendar_name_the_field(
    client: httpx.AsyncClient, config: dict[str, Any], field: str
) -> None:
    preview = await client.post(
        "/api/v2/schedules/preview", json={"schedule_config": config, "timezone": "UTC"}
    )
    stored = await client.post("/api/v2/jobs", json=shell_job("edge", schedule_config=config))

    assert field in fields(preview)
    assert field in fields(stored)


async def test_a_scheduled_time_beyond_the_calendar_names_the_field(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/api/v2/jobs/schedule",
        json={"job": shell_job("late"), "scheduled_time": "9999-12-31T23:59:59-14:00"},
    )

    assert "scheduled_time" in fields(response)


# -- 2. every problem at once -------------------------------------------------------------------
async def test_a_step_without_id_and_script_reports_both(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v2/jobs/execute", json={"job_id": "j", "job_name": "j", "steps": [{"type": "shell"}]}
    )

    found = fields(response)
    assert "steps[0].step_id" in found
    assert any(f.startswith("steps[0]") and f != "steps[0].step_id" for f in found), found


async def test_an_unknown_field_does_not_hide_a_bad_cron(client: httpx.AsyncClient) -> None:
    job = shell_job("both", bogus=1, schedule_config={"type": "cron", "expression": "99 * * * *"})

    found = fields(await client.post("/api/v2/jobs", json=job))

    assert found["bogus"] == "unknown field"
    assert "schedule_config.expression" in found


async def test_an_unknown_query_parameter_and_a_bad_body_are_reported_together(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/api/v2/jobs?colour=red", json={"job_id": "x"})

    found = fields(response)
    assert found["colour"] == "unknown query parameter"
    assert {"job_name", "steps"} <= set(found)


# -- 3. stored jobs checked against this server ---------------------------------------------------
@pytest.mark.parametrize("settings", [{"connections": WAREHOUSE}], indirect=True)
async def test_a_connection_the_server_does_not_have_is_refused(
    client: httpx.AsyncClient,
) -> None:
    job = {
        "job_id": "typo",
        "job_name": "typo",
        "steps": [
            {"step_id": "q", "type": "sql", "connection_name": "warehous", "query": "SELECT 1"}
        ],
    }

    for response in (
        await client.post("/api/v2/jobs", json=job),
        await client.post("/api/v2/jobs/execute", json=job),
    ):
        message = fields(response)["steps[0].connection_name"]
        assert "'warehous'" in message and "'warehouse'" in message
    assert (await client.get("/api/v2/jobs/typo")).status_code == 404


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        ("steps.nope.stdout", "no earlier step 'nope'"),
        ("steps.s1.stdout", "does not run before this step"),
        ("steps.s0.rows", "a shell step outputs exit_code, stderr, stdout; not 'rows'"),
        ("steps.s0.stdout.first", "single value"),
        ("job.colour", "a job has no field 'colour'"),
        ("stepz.s0", "must start with"),
    ],
)
async def test_bad_references_are_refused_when_stored(
    client: httpx.AsyncClient, reference: str, problem: str
) -> None:
    job = shell_job("refs", "echo a", "echo b")
    job["steps"][1]["step_id"] = "s1"
    job["steps"][0]["parameters"] = {"N": 1}
    job["steps"][1]["parameters"] = {"X": {"$from": "steps.s0.stdout"}}
    if reference == "steps.s1.stdout":
        job["steps"][0]["parameters"] = {"N": {"$from": reference}}
    else:
        job["steps"][1]["parameters"] = {"X": {"$from": reference}}

    found = fields(await client.post("/api/v2/jobs", json=job))

    (message,) = [m for f, m in found.items() if f.endswith(".$from")]
    assert problem in message


async def test_good_references_are_accepted(client: httpx.AsyncClient) -> None:
    job = shell_job("good-refs", "echo a", "echo b")
    job["steps"][1]["parameters"] = {
        "OUT": {"$from": "steps.s0.stdout"},
        "CODE": [{"$from": "steps.s0.exit_code"}, {"$from": "job.job_name"}],
    }

    response = await client.post("/api/v2/jobs", json=job)

    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "settings", [{"powershell_executable": "/nonexistent/pwsh"}], indirect=True
)
async def test_powershell_without_pwsh_is_stored_with_a_warning(
    client: httpx.AsyncClient,
) -> None:
    job = {
        "job_id": "ps",
        "job_name": "ps",
        "steps": [{"step_id": "p", "type": "powershell", "script": "Get-Date"}],
    }

    created = await client.post("/api/v2/jobs", json=job)
    ready = await client.get("/ready")

    assert created.status_code == 201, created.text
    (warning,) = created.json()["warnings"]
    assert warning["field"] == "steps[0]" and "/nonexistent/pwsh" in warning["message"]
    assert ready.status_code == 200
    assert ["/nonexistent/pwsh" in w for w in ready.json()["warnings"]] == [True]


async def test_startup_logs_the_missing_pwsh(caplog: pytest.LogCaptureFixture) -> None:
    application = create_app(make_settings(powershell_executable="/nonexistent/pwsh"))

    with caplog.at_level(logging.WARNING, logger="app.api"):
        async with application.router.lifespan_context(application):
            pass

    assert any("/nonexistent/pwsh" in r.getMessage() for r in caplog.records)


# -- 4. query parameters -----------------------------------------------------------------------
def _operations() -> list[tuple[str, str]]:
    paths = json.loads(CONTRACT.read_text(encoding="utf-8"))["paths"]
    return [
        (method.upper(), re.sub(r"\{[^}]+\}", "x", path))
        for path, item in paths.items()
        for method in item
    ]


@pytest.mark.parametrize(("method", "path"), _operations())
async def test_every_operation_refuses_an_unknown_query_parameter(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, f"{path}?colour=red")

    body = assert_problem(response, 400)
    assert {"field": "colour", "message": "unknown query parameter"} in body["errors"]
    assert body["type"].endswith("/invalid-request")


@pytest.mark.parametrize(
    "url", ["/api/v2/jobs?timezone=Mars/Olympus", "/api/v2/executions?timezone=Mars/Olympus"]
)
async def test_filter_values_are_validated(client: httpx.AsyncClient, url: str) -> None:
    assert "timezone" in fields(await client.get(url))


async def test_next_runs_start_after_the_given_instant(client: httpx.AsyncClient) -> None:
    config = {"type": "cron", "expression": "30 2 * * *"}
    job = shell_job("nightly", schedule_config=config, timezone="Europe/London")
    assert (await client.post("/api/v2/jobs", json=job)).status_code == 201

    runs = await client.get(
        "/api/v2/jobs/nightly/next-runs", params={"count": 2, "after": "2035-01-15T12:00:00Z"}
    )
    bad = await client.get("/api/v2/jobs/nightly/next-runs", params={"after": "2035-01-15"})

    assert runs.status_code == 200, runs.text
    assert [r["at_utc"] for r in runs.json()["runs"]] == [
        "2035-01-16T02:30:00Z",
        "2035-01-17T02:30:00Z",
    ]
    # A local time carries its zone's offset: +00:00 in a London winter, not UTC's Z.
    assert runs.json()["runs"][0]["at_local"] == "2035-01-16T02:30:00+00:00"
    assert "after" in fields(bad)


# -- 7. consistency ------------------------------------------------------------------------------
async def test_an_idempotent_enable_keeps_the_version(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/v2/jobs", json=shell_job("calm"))
    version = created.json()["version"]

    again = await client.post("/api/v2/jobs/calm/enable")
    disabled = await client.post("/api/v2/jobs/calm/disable")

    assert again.status_code == 200 and again.json()["version"] == version
    assert disabled.json()["version"] == version + 1


async def test_step_name_defaults_to_step_id_in_stored_jobs(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/v2/jobs", json=shell_job("named"))

    assert created.json()["steps"][0]["step_name"] == "s0"
