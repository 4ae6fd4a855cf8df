"""Durability against a real crash: ``kill -9`` the server, start it again on the same
database, and check that scheduled work runs exactly once and interrupted work is recorded."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.server import live_server


def _job(job_id: str, script: str) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "job_name": job_id,
        "steps": [{"step_id": "s", "type": "shell", "script": script, "timeout": 120}],
    }


def _poll(url: str, done: Any, deadline_seconds: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_seconds
    while True:
        body: dict[str, Any] = httpx.get(url, timeout=5).json()
        if done(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached; last body: {body}")
        time.sleep(0.1)


def test_kill_9_loses_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    pid_file = tmp_path / "running.pid"
    due = datetime.now(UTC) + timedelta(seconds=20)
    with live_server(tmp_path) as first:
        scheduled_response = httpx.post(
            f"{first.base_url}/api/v2/jobs/schedule",
            timeout=10,
            json={"job": _job("later", f"echo ran >> {marker}"), "scheduled_time": due.isoformat()},
        )
        assert scheduled_response.status_code == 200, scheduled_response.text
        scheduled = scheduled_response.json()
        running = httpx.post(
            f"{first.base_url}/api/v2/jobs/execute",
            params={"wait": "false"},
            timeout=10,
            json=_job("busy", f"echo $$ > {pid_file}; sleep 60"),
        )
        running_id = running.json()["execution_id"]
        _poll(
            f"{first.base_url}/api/v2/executions/{running_id}",
            lambda b: b["status"] == "running" and pid_file.exists(),
        )
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)

    try:
        with live_server(tmp_path) as second:
            base = second.base_url
            # The run that was RUNNING when the process died ends FAILED "interrupted".
            interrupted = httpx.get(f"{base}/api/v2/executions/{running_id}", timeout=5).json()
            assert interrupted["status"] == "failed"
            assert "interrupted" in interrupted["error_message"]
            # The scheduled job runs once, at its time, and the history shows it.
            done = _poll(
                f"{base}/api/v2/executions/{scheduled['execution_id']}",
                lambda b: b["status"] in ("success", "failed"),
            )
            assert done["status"] == "success"
            started = datetime.fromisoformat(done["start_time"])
            assert started >= due
            history = httpx.get(
                f"{base}/api/v2/executions", params={"job_id": "later"}, timeout=5
            ).json()
            assert [e["execution_id"] for e in history["items"]] == [scheduled["execution_id"]]
            assert marker.read_text() == "ran\n"  # exactly once
    finally:
        # kill -9 gives the server no chance to stop its children: clean up the orphan.
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
