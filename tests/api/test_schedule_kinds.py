"""Schedules over HTTP: the typed schedule_config union, the calendar type, exact cron
errors naming the field, several named schedules merged, plain-English descriptions, and the
preview's repeated-hour flags."""

from __future__ import annotations

import httpx

from app.api.service import ModernJobAPI
from app.domain.models import JobDefinition
from tests.api.helpers import assert_problem, shell_job

JOBS = "/api/v2/jobs"
PREVIEW = "/api/v2/schedules/preview"


async def test_openapi_has_the_typed_union(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    union = schemas["ScheduleConfig"]
    assert union["discriminator"]["propertyName"] == "type"
    assert set(union["discriminator"]["mapping"]) == {"cron", "interval", "once", "calendar"}
    calendar = schemas["CalendarScheduleConfig"]["properties"]
    assert calendar["interval"]["default"] == 1
    assert "monthly_relative" in calendar["frequency"]["enum"]
    cron = schemas["CronScheduleConfig"]
    assert cron["properties"]["misfire_policy"]["default"] == "run_once"
    assert cron["properties"]["overlap_policy"]["enum"] == ["skip", "allow", "queue", "replace"]
    assert cron["examples"]


async def test_reversed_range_is_a_400_naming_the_field(client: httpx.AsyncClient) -> None:
    body = shell_job("rev", schedule_config={"type": "cron", "expression": "* * 5-1 * *"})
    problem = assert_problem(await client.post(JOBS, json=body), 400)
    [error] = problem["errors"]
    assert error["field"] == "schedule_config.expression"
    assert "day-of-month" in error["message"] and "reversed" in error["message"]


async def test_calendar_job_is_stored_described_and_fires(client: httpx.AsyncClient) -> None:
    config = {
        "type": "calendar",
        "frequency": "monthly_relative",
        "relative": {"week": "last", "day": "friday"},
        "at": "02:30",
        "start_date": "2026-01-01",
    }
    response = await client.post(
        JOBS, json=shell_job("cal", timezone="Europe/London", schedule_config=config)
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert config.items() <= job["schedule_config"].items()  # reads show the defaults too
    assert job["schedule_description"] == (
        "At 02:30, on the last Friday of the month, from 2026-01-01, Europe/London"
    )
    runs = (await client.get(f"{JOBS}/cal/next-runs", params={"count": 2})).json()
    assert len(runs["runs"]) == 2
    assert all(r["at_local"][11:16] == "02:30" for r in runs["runs"])


async def test_calendar_errors_are_all_reported(client: httpx.AsyncClient) -> None:
    config = {"type": "calendar", "frequency": "weekly", "weekdays": ["mon"], "at": "24:00"}
    problem = assert_problem(
        await client.post(JOBS, json=shell_job("bad", schedule_config=config)), 400
    )
    fields = {e["field"] for e in problem["errors"]}
    assert {"schedule_config.weekdays[0]", "schedule_config.at"} <= fields


async def test_two_schedules_merge_and_coincide_once(client: httpx.AsyncClient) -> None:
    body = {
        "schedule_config": {"type": "cron", "expression": "0 9 * * *"},
        "schedules": [
            {"name": "mondays", "schedule_config": {"type": "cron", "expression": "0 9 * * 1"}},
            {"name": "evenings", "schedule_config": {"type": "cron", "expression": "0 18 * * *"}},
        ],
        "timezone": "UTC",
        "after": "2026-01-04T12:00:00Z",  # a Sunday
        "count": 3,
    }
    response = await client.post(PREVIEW, json=body)
    assert response.status_code == 200, response.text
    preview = response.json()
    assert [(r["at_utc"], r["source"]) for r in preview["runs"]] == [
        ("2026-01-04T18:00:00Z", "evenings"),
        ("2026-01-05T09:00:00Z", None),  # Monday 09:00: two schedules, one fire
        ("2026-01-05T18:00:00Z", "evenings"),
    ]
    assert [s["name"] for s in preview["schedules"]] == [None, "mondays", "evenings"]


async def test_preview_flags_both_copies_of_a_repeated_hour(client: httpx.AsyncClient) -> None:
    body = {
        "schedule_config": {"type": "cron", "expression": "30 * * * *"},
        "timezone": "Europe/London",
        "after": "2026-10-25T00:00:00Z",
        "count": 2,
    }
    runs = (await client.post(PREVIEW, json=body)).json()["runs"]
    assert [(r["at_utc"], r["repeated_hour"], r["note"]) for r in runs] == [
        ("2026-10-25T00:30:00Z", "first", "first of two 01:30s"),
        ("2026-10-25T01:30:00Z", "second", "second of two 01:30s"),
    ]


async def test_schedules_with_different_policies_are_refused(client: httpx.AsyncClient) -> None:
    body = shell_job(
        "pol",
        schedules=[
            {
                "name": "a",
                "schedule_config": {
                    "type": "cron",
                    "expression": "0 9 * * *",
                    "overlap_policy": "allow",
                },
            },
            {
                "name": "b",
                "schedule_config": {
                    "type": "cron",
                    "expression": "0 9 * * *",
                    "overlap_policy": "queue",
                },
            },
            {"name": "a", "schedule_config": {"type": "interval", "every_seconds": 60}},
        ],
    )
    problem = assert_problem(await client.post(JOBS, json=body), 400)
    fields = {e["field"] for e in problem["errors"]}
    assert "schedules[2].name" in fields  # duplicate
    assert any(f.endswith("overlap_policy") for f in fields)


async def test_enable_and_disable_one_schedule(client: httpx.AsyncClient) -> None:
    body = shell_job(
        "two",
        schedules=[
            {"name": "early", "schedule_config": {"type": "cron", "expression": "0 8 * * *"}},
            {"name": "late", "schedule_config": {"type": "cron", "expression": "0 20 * * *"}},
        ],
    )
    assert (await client.post(JOBS, json=body)).status_code == 201
    response = await client.post(f"{JOBS}/two/schedules/late/disable")
    assert response.status_code == 200, response.text
    job = response.json()
    assert [s["enabled"] for s in job["schedules"]] == [True, False]
    assert [d["name"] for d in job["schedule_descriptions"]] == ["early", "late"]
    runs = (await client.get(f"{JOBS}/two/next-runs", params={"count": 3})).json()["runs"]
    assert {r["source"] for r in runs} == {"early"}
    assert (await client.post(f"{JOBS}/two/schedules/late/enable")).status_code == 200
    runs = (await client.get(f"{JOBS}/two/next-runs", params={"count": 4})).json()["runs"]
    assert {r["source"] for r in runs} == {"early", "late"}
    missing = await client.post(f"{JOBS}/two/schedules/nope/enable")
    assert assert_problem(missing, 404)["type"].endswith("schedule-not-found")


async def test_a_job_stored_with_a_now_refused_cron_still_reads(
    client: httpx.AsyncClient, job_api: ModernJobAPI
) -> None:
    # croniter accepted "5-1"; a row stored then is read, described and its next-runs refused.
    legacy = JobDefinition(
        job_id="legacy",
        job_name="legacy",
        steps=[{"step_id": "a", "type": "shell", "script": "echo"}],
        schedule_config={"type": "cron", "expression": "0 0 5-1 * *"},
    )
    await job_api.engine.store.create_job(legacy, next_fire_at=None)  # type: ignore[attr-defined]
    read = await client.get(f"{JOBS}/legacy")
    assert read.status_code == 200, read.text
    assert read.json()["schedule_description"].startswith("Never: cron day-of-month field")
    problem = assert_problem(await client.get(f"{JOBS}/legacy/next-runs"), 400)
    assert problem["errors"][0]["field"] == "schedule_config.expression"
