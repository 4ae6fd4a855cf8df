"""One INFO line per finished execution, retry, misfire and notification attempt, with its
fields; V2_LOG_FORMAT=json renders each as one JSON object."""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest

from app.log_format import JsonFormatter
from tests.api.helpers import execution_status, shell_job, wait_for
from tests.api.test_metrics import samples
from tests.support.receivers import webhook_receiver


async def test_a_finished_execution_and_its_retry_are_logged_at_info(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    job = shell_job("logged", "echo oops >&2; exit 5", max_retries=1)
    response = await client.post("/api/v2/jobs/execute", json=job)
    execution_id = response.json()["execution_id"]
    lines = [r for r in caplog.records if r.name == "app.engine.executions"]
    [retry, finished] = lines
    assert finished.levelno == logging.INFO
    assert finished.__dict__["job_id"] == "logged"
    assert finished.__dict__["execution_id"] == execution_id
    assert finished.__dict__["status"] == "failed"
    assert finished.__dict__["error"] == "step 's0' failed: exit code 5: oops"
    assert finished.__dict__["duration_seconds"] >= 0
    line = json.loads(JsonFormatter().format(finished))
    assert line["level"] == "INFO"
    assert line["logger"] == "app.engine.executions"
    assert line["execution_id"] == execution_id
    expected = f"execution finished job_id=logged execution_id={execution_id} status=failed"
    assert line["message"].startswith(expected)
    assert retry.levelno == logging.INFO
    assert retry.getMessage().startswith(
        f"execution retry job_id=logged execution_id={execution_id} attempt=0 delay="
    )
    assert retry.__dict__["job_id"] == "logged" and retry.__dict__["attempt"] == 0
    assert retry.__dict__["error"] == "step 's0' failed: exit code 5: oops"


async def test_a_cancel_is_logged_with_its_job_and_who_asked(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    started = await client.post(
        "/api/v2/jobs/execute", params={"wait": "false"}, json=shell_job("stopme", "sleep 30")
    )
    execution_id = started.json()["execution_id"]
    await wait_for(
        lambda: execution_status(client, execution_id), lambda e: e["status"] == "running"
    )
    later = await client.post(
        "/api/v2/jobs/schedule",
        json={"job": shell_job("later"), "scheduled_time": "2035-01-15T09:30:00Z"},
    )
    scheduled_id = later.json()["execution_id"]

    for eid in (execution_id, scheduled_id):
        response = await client.post(f"/api/v2/executions/{eid}/cancel")
        assert response.status_code == 200, response.text

    cancels = [r for r in caplog.records if r.name == "app.engine.executions" and "cancel" in r.msg]
    assert [
        (r.__dict__["job_id"], r.__dict__["execution_id"], r.__dict__["state"]) for r in cancels
    ] == [
        ("stopme", execution_id, "running"),
        ("later", scheduled_id, "scheduled"),
    ]
    assert cancels[0].getMessage() == (
        f"execution cancel job_id=stopme execution_id={execution_id} by=None state=running"
    )


@pytest.mark.parametrize(
    "settings",
    [{"webhook_allowed_hosts": ["127.0.0.1"], "notification_retry_seconds": 0.05}],
    indirect=True,
)
async def test_every_notification_attempt_is_logged(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with webhook_receiver(fail_first=1) as receiver:
        rule = {"on": ["failure"], "webhook": {"url": receiver.url}}
        job = shell_job("n", "exit 1", notifications=[rule])
        await client.post("/api/v2/jobs/execute", json=job)

        def attempts() -> list[logging.LogRecord]:
            return [
                r
                for r in caplog.records
                if r.name == "app.engine.notifications" and "attempt=" in r.getMessage()
            ]

        async def count() -> int:
            return len(attempts())

        await wait_for(count, lambda n: n == 2)
        first, second = (r.getMessage() for r in attempts())
        assert "event=failure" in first and "attempt=1 result=retry http_status=500" in first
        assert "attempt=2 result=delivered http_status=200" in second
        # ... and counted, by channel and result; the outbox poll is the node's heartbeat.
        values = samples((await client.get("/metrics")).text)
        counted = "jobscheduler_notifications_total"
        assert values[(counted, (("channel", "webhook"), ("result", "retry")))] == 1
        assert values[(counted, (("channel", "webhook"), ("result", "delivered")))] == 1
        beat = values[("jobscheduler_engine_heartbeat_timestamp_seconds", ())]
        assert time.time() - 60 < beat <= time.time()
