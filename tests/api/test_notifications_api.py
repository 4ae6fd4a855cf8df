"""Notifications through the HTTP API: bad configuration is a 400 naming every field at
job creation, the delivery log, the test message, schedule health and the overdue list."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.helpers import assert_problem, shell_job, wait_for
from tests.support.receivers import webhook_receiver

SECRET = "api-test-secret"
NOTIFYING = {
    "webhook_allowed_hosts": ["127.0.0.1"],
    "notification_secrets": {"ops": SECRET},
    "notification_retry_seconds": 0.05,
}
pytestmark = pytest.mark.parametrize("settings", [NOTIFYING], indirect=True)


def rule(url: str, *events: str, **extra: Any) -> dict[str, Any]:
    return {"on": list(events), "webhook": {"url": url, "secret_name": "ops"}, **extra}


BAD_RULES = [
    {"on": ["failure"], "webhook": {"url": "http://127.0.0.1:9/x"}},
    {"on": ["failure"], "webhook": {"url": "http://169.254.169.254/latest"}},
    {"on": ["failure"], "webhook": {"url": "http://127.0.0.1:9/x", "secret_name": "nope"}},
    {"on": ["failure"], "email": {"to": ["dba@example.com"]}},
]


@pytest.mark.parametrize("path", ["/api/v2/jobs", "/api/v2/jobs/execute"])
async def test_bad_configuration_is_a_400_naming_every_field(
    client: httpx.AsyncClient, path: str
) -> None:
    problem = assert_problem(
        await client.post(path, json=shell_job("bad", notifications=BAD_RULES)), 400
    )
    fields = {e["field"] for e in problem["errors"]}
    assert fields == {
        "notifications[1].webhook.url",
        "notifications[2].webhook.secret_name",
        "notifications[3].email",
    }, problem
    assert (await client.get("/api/v2/jobs/bad")).status_code == 404  # nothing written
    unknown = [{"on": ["failure", "exploded"], "webhook": {"url": "http://127.0.0.1:9/x"}}]
    problem = assert_problem(
        await client.post(path, json=shell_job("bad", notifications=unknown)), 400
    )
    assert [e["field"] for e in problem["errors"]] == ["notifications[0].on[1]"]


async def test_a_failed_run_is_delivered_and_logged(client: httpx.AsyncClient) -> None:
    async with webhook_receiver(secret=SECRET, fail_first=1) as receiver:
        job = shell_job("logged", "exit 4", notifications=[rule(receiver.url, "failure")])
        ran = await client.post("/api/v2/jobs/execute", json=job)
        assert ran.status_code == 400
        execution_id = ran.json()["execution_id"]

        async def log() -> list[dict[str, Any]]:
            response = await client.get(
                "/api/v2/notifications", params={"execution_id": execution_id}
            )
            assert response.status_code == 200, response.text
            items: list[dict[str, Any]] = response.json()["items"]
            return items

        [delivery] = await wait_for(log, lambda d: bool(d) and d[0]["status"] == "delivered")
        assert delivery["event"] == "failure"
        assert delivery["attempts"] == 2
        assert delivery["last_http_status"] == 200
        assert delivery["last_error"] == "HTTP 500"  # the log keeps the error of the retry
        assert delivery["destination"] == receiver.url
        assert delivery["job_id"] == "logged"
        assert receiver.delivered()[0].signature_ok is True
        by_job = await client.get("/api/v2/notifications", params={"job_id": "logged"})
        assert [d["delivery_id"] for d in by_job.json()["items"]] == [delivery["delivery_id"]]
        other = await client.get("/api/v2/notifications", params={"job_id": "someone-else"})
        assert other.json()["items"] == []


async def test_test_message_goes_to_the_destination(client: httpx.AsyncClient) -> None:
    async with webhook_receiver(secret=SECRET) as receiver:
        response = await client.post(
            "/api/v2/notifications/test",
            json={"webhook": {"url": receiver.url, "secret_name": "ops"}},
        )
        assert response.status_code == 200, response.text
        assert response.json() == {
            "delivered": True,
            "channel": "webhook",
            "http_status": 200,
            "error": None,
        }
        [request] = receiver.requests
        assert request.signature_ok is True
        assert request.json["event"] == "test"
    refused = await client.post(
        "/api/v2/notifications/test", json={"webhook": {"url": "http://10.0.0.1/x"}}
    )
    assert assert_problem(refused, 400)["errors"][0]["field"] == "webhook.url"
    assert_problem(await client.post("/api/v2/notifications/test", json={}), 400)


async def test_stored_jobs_show_health_and_status_lists_overdue(
    client: httpx.AsyncClient,
) -> None:
    job = shell_job(
        "healthy",
        "exit 1",
        schedule_config={"type": "interval", "every_seconds": 3600},
        notifications=[rule("http://127.0.0.1:9/x", "failure", "missed")],
    )
    created = await client.post("/api/v2/jobs", json=job)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["health"] == "ok"
    assert body["notifications"][0]["on"] == ["failure", "missed"]
    for _ in range(3):  # V2_FAILING_AFTER = 3 by default
        await client.post("/api/v2/jobs/healthy/run")
    assert (await client.get("/api/v2/jobs/healthy")).json()["health"] == "failing"
    listed = (await client.get("/api/v2/jobs")).json()["items"]
    assert [(j["job_id"], j["health"]) for j in listed] == [("healthy", "failing")]
    disabled = await client.post("/api/v2/jobs/healthy/disable")
    assert disabled.json()["health"] == "disabled"
    status = await client.get("/api/v2/execution/status")
    assert status.json()["overdue_jobs"] == []
