"""A notification survives ``kill -9``: the execution's end (and its outbox row) is committed,
the server dies before the notification is delivered, and the next server delivers it once,
with the event id it had, signed."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.server import free_port, live_server
from tests.support.receivers import ThreadedWebhookReceiver

SECRET = "e2e-hook-secret"


def _poll(url: str, done: Any, deadline_seconds: float = 60.0, **params: Any) -> Any:
    deadline = time.monotonic() + deadline_seconds
    while True:
        body = httpx.get(url, params=params, timeout=5).json()
        if done(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached; last body: {body}")
        time.sleep(0.05)


def test_kill_9_before_delivery_still_delivers_exactly_once(tmp_path: Path) -> None:
    port = free_port()  # the receiver is not listening yet: the first attempt fails
    env = {
        "V2_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "V2_NOTIFICATION_SECRETS": json.dumps({"ops": SECRET}),
        "V2_NOTIFICATION_RETRY_SECONDS": "3",  # the retry is due 1.5-4.5 s later
    }
    job = {
        "job_id": "fragile",
        "job_name": "Fragile",
        "steps": [{"step_id": "s", "type": "shell", "script": "echo broken >&2; exit 7"}],
        "notifications": [
            {
                "on": ["failure"],
                "webhook": {"url": f"http://127.0.0.1:{port}/hook", "secret_name": "ops"},
            }
        ],
    }
    with live_server(tmp_path, **env) as first:
        ran = httpx.post(f"{first.base_url}/api/v2/jobs/execute", json=job, timeout=30)
        assert ran.status_code == 400, ran.text
        execution_id = ran.json()["execution_id"]
        log = _poll(
            f"{first.base_url}/api/v2/notifications",
            lambda b: b["items"] and b["items"][0]["attempts"] == 1,
            execution_id=execution_id,
        )
        [pending] = log["items"]
        assert pending["status"] == "pending"  # not delivered: connection refused
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)

    with (
        ThreadedWebhookReceiver(port, secret=SECRET) as receiver,
        live_server(tmp_path, **env) as second,
    ):
        log = _poll(
            f"{second.base_url}/api/v2/notifications",
            lambda b: b["items"] and b["items"][0]["status"] != "pending",
            execution_id=execution_id,
        )
        [delivered] = log["items"]
        assert delivered["status"] == "delivered"
        assert delivered["attempts"] == 2
        assert delivered["event_id"] == pending["event_id"]
        assert [r.answered for r in receiver.requests] == [200]
        [request] = receiver.requests
        assert request.signature_ok is True
        body = request.json
        assert body["event"] == "failure"
        assert body["event_id"] == pending["event_id"]
        assert body["execution"]["execution_id"] == execution_id
        assert body["execution"]["failed_step"]["error_message"] == "exit code 7: broken"
