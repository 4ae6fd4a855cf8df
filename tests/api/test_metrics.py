"""GET /metrics: the Prometheus series move with real executions, the gauges show the queues,
workers and the engine, and the endpoint needs a `read` key unless V2_METRICS_PUBLIC."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from app.api.keys import key_entry, new_api_key
from app.main import create_app
from tests.api.helpers import BASE_URL, execution_status, make_settings, shell_job, wait_for

EXECUTE = "/api/v2/jobs/execute"
SCHEDULE = "/api/v2/jobs/schedule"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by (name, sorted labels)."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def finished(status: str, trigger: str = "now", timezone: str = "UTC") -> tuple[str, tuple]:
    labels = (("status", status), ("timezone", timezone), ("trigger", trigger))
    return ("jobscheduler_executions_finished_total", labels)


async def test_counters_and_histograms_move_with_real_executions(
    client: httpx.AsyncClient,
) -> None:
    before = await scrape(client)
    assert finished("success") not in before  # no execution yet, no labelled series

    assert (await client.post(EXECUTE, json=shell_job("ok", "echo hi"))).status_code == 200
    assert (await client.post(EXECUTE, json=shell_job("ok", "echo hi"))).status_code == 200
    failed = await client.post(EXECUTE, json=shell_job("bad", "echo a", "exit 3"))
    assert failed.status_code == 400

    after = await scrape(client)
    assert after[finished("success")] == 2
    assert after[finished("failed")] == 1
    step = (("status", "success"), ("step_type", "shell"))
    assert after[("jobscheduler_step_duration_seconds_count", step)] == 3
    failed_step = (("status", "failed"), ("step_type", "shell"))
    assert after[("jobscheduler_step_duration_seconds_count", failed_step)] == 1
    assert after[("jobscheduler_execution_duration_seconds_count", (("status", "success"),))] == 2
    assert after[("jobscheduler_execution_duration_seconds_sum", (("status", "failed"),))] > 0
    # Ad-hoc jobs never get a job_id label.
    assert not [k for k in after if k[0] == "jobscheduler_job_executions_finished_total"]


async def test_lateness_is_observed_for_scheduled_runs(client: httpx.AsyncClient) -> None:
    due = datetime.now(UTC) + timedelta(milliseconds=300)
    scheduled = await client.post(
        SCHEDULE, json={"job": shell_job("later"), "scheduled_time": due.isoformat()}
    )
    assert scheduled.status_code == 200, scheduled.text
    execution_id = scheduled.json()["execution_id"]
    await wait_for(
        lambda: execution_status(client, execution_id),
        lambda s: s["status"] == "success",
        timeout=10,
    )
    values = await wait_for(
        lambda: scrape(client),
        lambda v: v.get(finished("success", trigger="scheduled")) == 1,
    )
    lateness = (("trigger", "scheduled"),)
    assert values[("jobscheduler_schedule_lateness_seconds_count", lateness)] == 1
    # Started at its time (not before): the lateness is >= 0 and lands in a bucket.
    assert values[("jobscheduler_schedule_lateness_seconds_sum", lateness)] >= 0
    inf_bucket = (("le", "+Inf"), *lateness)
    assert values[("jobscheduler_schedule_lateness_seconds_bucket", inf_bucket)] == 1


@pytest.mark.parametrize("settings", [{"queue_max_concurrent": 1, "max_workers": 3}], indirect=True)
async def test_gauges_show_queues_workers_and_the_engine(client: httpx.AsyncClient) -> None:
    values = await scrape(client)
    assert values[("jobscheduler_workers_total", ())] == 3
    assert values[("jobscheduler_workers_busy", ())] == 0
    assert values[("jobscheduler_engine_up", ())] == 1

    # Two runs of one timezone due at once, one slot: one runs, one waits in line.
    due = (datetime.now(UTC) + timedelta(milliseconds=200)).isoformat()
    ids = []
    for name in ("first", "second"):
        job = shell_job(name, "sleep 30", timezone="Europe/Berlin")
        response = await client.post(SCHEDULE, json={"job": job, "scheduled_time": due})
        assert response.status_code == 200, response.text
        ids.append(response.json()["execution_id"])
    berlin = (("timezone", "Europe/Berlin"),)
    values = await wait_for(
        lambda: scrape(client),
        lambda v: (
            v.get(("jobscheduler_queue_depth", berlin)) == 1
            and v.get(("jobscheduler_queue_active", berlin)) == 1
            and v.get(("jobscheduler_queue_oldest_waiting_seconds", berlin), 0) > 0
        ),
    )
    assert values[("jobscheduler_workers_busy", ())] == 1
    for execution_id in ids:
        response = await client.post(f"/api/v2/executions/{execution_id}/cancel")
        assert response.status_code == 200, response.text
    values = await wait_for(
        lambda: scrape(client), lambda v: v.get(("jobscheduler_queue_depth", berlin)) == 0
    )
    assert values[finished("cancelled", "scheduled", "Europe/Berlin")] == 2
    assert values[("jobscheduler_queue_oldest_waiting_seconds", berlin)] == 0


READER = new_api_key()


@pytest.fixture
async def keyed(request: pytest.FixtureRequest) -> AsyncIterator[FastAPI]:
    overrides = {"api_keys": [key_entry(READER, "scraper", ["read"])], **request.param}
    application = create_app(make_settings(**overrides))
    async with application.router.lifespan_context(application):
        yield application


@pytest.mark.parametrize("keyed", [{}], indirect=True)
async def test_metrics_need_a_read_key_when_keys_are_configured(keyed: FastAPI) -> None:
    transport = httpx.ASGITransport(app=keyed)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        assert (await http.get("/metrics")).status_code == 401
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await http.get("/metrics", headers={"Authorization": f"Bearer {READER}"})
        assert ok.status_code == 200
        assert ("jobscheduler_engine_up", ()) in samples(ok.text)


@pytest.mark.parametrize("keyed", [{"metrics_public": True}], indirect=True)
async def test_metrics_public_opens_them_to_a_scraper(keyed: FastAPI) -> None:
    transport = httpx.ASGITransport(app=keyed)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        response = await http.get("/metrics")
        assert response.status_code == 200
        assert samples(response.text)[("jobscheduler_engine_up", ())] == 1
        # Only the metrics: the API still wants a key.
        assert (await http.get("/api/v2/execution/status")).status_code == 401
