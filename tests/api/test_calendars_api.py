"""/api/v2/calendars over HTTP: CRUD, definitions checked field by field, a calendar in use
cannot be deleted (409), schedules naming an unknown calendar are refused, previews flag
excluded and moved fires, and the key scopes (read to see, admin to change)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from app.api.keys import key_entry, new_api_key
from app.main import create_app
from tests.api.helpers import BASE_URL, assert_problem, make_settings, shell_job

CALENDARS = "/api/v2/calendars"
JOBS = "/api/v2/jobs"
PREVIEW = "/api/v2/schedules/preview"


async def test_crud(client: httpx.AsyncClient) -> None:
    created = await client.post(
        CALENDARS, json={"name": "uk", "country": "GB", "subdivision": "ENG"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["country"] == "GB"
    listed = await client.post(CALENDARS, json={"name": "office", "dates": ["2026-12-24"]})
    assert listed.status_code == 201
    assert [c["name"] for c in (await client.get(CALENDARS)).json()] == ["office", "uk"]
    again = await client.post(CALENDARS, json={"name": "uk", "dates": ["2026-12-24"]})
    assert assert_problem(again, 409)["type"].endswith("calendar-exists")
    replaced = await client.put(f"{CALENDARS}/office", json={"dates": ["2026-12-24", "2026-12-31"]})
    assert replaced.json()["dates"] == ["2026-12-24", "2026-12-31"]
    assert (await client.get(f"{CALENDARS}/office")).json()["dates"][-1] == "2026-12-31"
    assert (await client.delete(f"{CALENDARS}/office")).status_code == 204
    assert_problem(await client.get(f"{CALENDARS}/office"), 404)
    assert_problem(await client.delete(f"{CALENDARS}/office"), 404)


async def test_definitions_are_checked(client: httpx.AsyncClient) -> None:
    bad = {"name": "x", "country": "XX", "dates": ["2026-13-01"]}
    fields = {
        e["field"] for e in assert_problem(await client.post(CALENDARS, json=bad), 400)["errors"]
    }
    assert {"country", "dates[0]"} <= fields
    wrong = await client.put(f"{CALENDARS}/x", json={"name": "y", "dates": ["2026-01-01"]})
    assert_problem(wrong, 400)


async def test_a_calendar_in_use_cannot_be_deleted(client: httpx.AsyncClient) -> None:
    await client.post(CALENDARS, json={"name": "uk", "country": "GB", "subdivision": "ENG"})
    exclude = {"calendar": "uk", "on_excluded": "skip"}
    job = shell_job(
        "nightly",
        schedules=[
            {
                "name": "n",
                "schedule_config": {"type": "cron", "expression": "0 2 * * *", "exclude": exclude},
            }
        ],
    )
    assert (await client.post(JOBS, json=job)).status_code == 201
    problem = assert_problem(await client.delete(f"{CALENDARS}/uk"), 409)
    assert "nightly" in problem["detail"]
    assert (await client.delete(f"{JOBS}/nightly")).status_code == 204
    assert (await client.delete(f"{CALENDARS}/uk")).status_code == 204


async def test_an_unknown_calendar_is_refused(client: httpx.AsyncClient) -> None:
    config = {"type": "cron", "expression": "0 2 * * *", "exclude": {"calendar": "nope"}}
    problem = assert_problem(
        await client.post(JOBS, json=shell_job("j", schedule_config=config)), 400
    )
    assert [e["field"] for e in problem["errors"]] == ["schedule_config.exclude.calendar"]


async def test_preview_flags_excluded_and_moved_fires(client: httpx.AsyncClient) -> None:
    await client.post(CALENDARS, json={"name": "uk", "country": "GB", "subdivision": "ENG"})
    body = {
        "schedule_config": {
            "type": "cron",
            "expression": "0 9 * * 1-5",
            "exclude": {"calendar": "uk", "on_excluded": "skip"},
        },
        "schedules": [
            {
                "name": "christmas",
                "schedule_config": {
                    "type": "calendar",
                    "frequency": "monthly",
                    "day_of_month": 25,
                    "at": "12:00",
                    "start_date": "2026-01-01",
                    "exclude": {"calendar": "uk", "on_excluded": "next_business_day"},
                },
            }
        ],
        "timezone": "Europe/London",
        "after": "2026-12-24T12:00:00Z",
        "count": 4,
    }
    response = await client.post(PREVIEW, json=body)
    assert response.status_code == 200, response.text
    runs = response.json()["runs"]
    assert [(r["at_utc"], r["source"], r["excluded_by"], r["moved_by_calendar"]) for r in runs] == [
        ("2026-12-25T09:00:00Z", None, "uk", False),
        ("2026-12-28T09:00:00Z", None, "uk", False),
        ("2026-12-29T09:00:00Z", None, None, False),
        ("2026-12-29T12:00:00Z", "christmas", None, True),
    ]
    assert runs[0]["note"] == "excluded by calendar uk"
    assert runs[3]["note"] == "moved from 2026-12-25 by a business calendar"
    descriptions = [s["schedule_description"] for s in response.json()["schedules"]]
    assert descriptions[1].endswith("calendar uk: moved to the next business day")


READER, ADMIN = new_api_key(), new_api_key()


@pytest.fixture
async def keyed(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    entries = [key_entry(READER, "reader", ["read"]), key_entry(ADMIN, "boss", ["admin"])]
    application: FastAPI = create_app(make_settings(api_keys=entries))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield client


async def test_read_to_see_admin_to_change(keyed: httpx.AsyncClient) -> None:
    reader = {"Authorization": f"Bearer {READER}"}
    admin = {"Authorization": f"Bearer {ADMIN}"}
    body = {"name": "office", "dates": ["2026-12-24"]}
    assert_problem(await keyed.post(CALENDARS, json=body), 401)
    assert_problem(await keyed.post(CALENDARS, json=body, headers=reader), 403)
    assert (await keyed.post(CALENDARS, json=body, headers=admin)).status_code == 201
    assert (await keyed.get(f"{CALENDARS}/office", headers=reader)).status_code == 200
    assert_problem(await keyed.delete(f"{CALENDARS}/office", headers=reader), 403)
    assert (await keyed.delete(f"{CALENDARS}/office", headers=admin)).status_code == 204
