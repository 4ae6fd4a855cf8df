"""POST /api/v2/jobs/schedule: instants, wall-clock times in the job's zone, DST, past times."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import httpx

from tests.api.helpers import assert_problem, execution_status, shell_job, wait_for

SCHEDULE = "/api/v2/jobs/schedule"
NEXT_YEAR = datetime.now(UTC).year + 1


def last_sunday(year: int, month: int) -> date:
    day = date(year, month + 1, 1) - timedelta(days=1)
    return day - timedelta(days=(day.weekday() - 6) % 7)


def berlin_job(job_id: str = "berlin") -> dict[str, object]:
    return shell_job(job_id, timezone="Europe/Berlin")


async def test_naive_time_is_wall_clock_time_in_the_jobs_zone(client: httpx.AsyncClient) -> None:
    response = await client.post(
        SCHEDULE, json={"job": berlin_job(), "scheduled_time": f"{NEXT_YEAR}-07-01T09:30:00"}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["job_id"] == "berlin"
    assert body["status"] == "pending"
    assert body["timezone"] == "Europe/Berlin"
    assert body["scheduled_time_utc"] == f"{NEXT_YEAR}-07-01T07:30:00Z"
    assert body["scheduled_time_local"] == f"{NEXT_YEAR}-07-01T09:30:00+02:00"
    assert body["status_url"].endswith(f"/api/v2/executions/{body['execution_id']}")

    execution = await execution_status(client, body["execution_id"])
    assert execution["status"] == "pending"
    assert execution["trigger"] == "scheduled"
    assert datetime.fromisoformat(execution["scheduled_for"]) == datetime(
        NEXT_YEAR, 7, 1, 7, 30, tzinfo=UTC
    )


async def test_time_with_offset_is_an_instant(client: httpx.AsyncClient) -> None:
    response = await client.post(
        SCHEDULE, json={"job": berlin_job(), "scheduled_time": f"{NEXT_YEAR}-01-15T08:30:00Z"}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scheduled_time_utc"] == f"{NEXT_YEAR}-01-15T08:30:00Z"
    assert body["scheduled_time_local"] == f"{NEXT_YEAR}-01-15T09:30:00+01:00"


async def test_past_time_is_400(client: httpx.AsyncClient) -> None:
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    problem = assert_problem(
        await client.post(SCHEDULE, json={"job": berlin_job(), "scheduled_time": past}), 400
    )

    assert problem["errors"][0]["field"] == "scheduled_time"
    assert "in the past" in problem["errors"][0]["message"]


async def test_time_in_a_dst_gap_is_400_naming_the_gap(client: httpx.AsyncClient) -> None:
    gap_day = last_sunday(NEXT_YEAR, 3)  # Europe/Berlin: 02:00 -> 03:00
    problem = assert_problem(
        await client.post(
            SCHEDULE, json={"job": berlin_job(), "scheduled_time": f"{gap_day}T02:30:00"}
        ),
        400,
    )

    assert problem["errors"][0]["field"] == "scheduled_time"
    message = problem["errors"][0]["message"]
    assert "does not exist in Europe/Berlin" in message
    assert "02:00" in message
    assert "03:00" in message


async def test_ambiguous_time_means_its_first_occurrence(client: httpx.AsyncClient) -> None:
    fold_day = last_sunday(NEXT_YEAR, 10)  # Europe/Berlin: 02:00-03:00 happens twice
    response = await client.post(
        SCHEDULE, json={"job": berlin_job(), "scheduled_time": f"{fold_day}T02:30:00"}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scheduled_time_local"] == f"{fold_day}T02:30:00+02:00"  # still summer time
    assert body["scheduled_time_utc"] == f"{fold_day}T00:30:00Z"


async def test_disabled_job_cannot_be_scheduled(client: httpx.AsyncClient) -> None:
    job = {**berlin_job(), "enabled": False}
    problem = assert_problem(
        await client.post(
            SCHEDULE, json={"job": job, "scheduled_time": f"{NEXT_YEAR}-07-01T09:30:00"}
        ),
        400,
    )

    assert problem["errors"][0]["field"] == "job.enabled"


async def test_scheduled_job_runs_at_its_time(client: httpx.AsyncClient) -> None:
    when = datetime.now(UTC) + timedelta(seconds=0.5)
    response = await client.post(
        SCHEDULE,
        json={"job": shell_job("soon", "echo scheduled"), "scheduled_time": when.isoformat()},
    )
    assert response.status_code == 200, response.text
    execution_id = response.json()["execution_id"]

    final = await wait_for(
        lambda: execution_status(client, execution_id), lambda e: e["status"] == "success"
    )
    assert final["steps"][0]["output"] == "scheduled\n"
    assert datetime.fromisoformat(final["start_time"]) >= when - timedelta(milliseconds=50)
