"""V2_LOG_FORMAT=json: the real server writes one JSON object per line, and a finished
execution is one INFO line with its fields."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.e2e.server import live_server


def test_json_log_lines_carry_the_execution_fields(tmp_path: Path) -> None:
    job = {
        "job_id": "json-logged",
        "job_name": "JSON logged",
        "steps": [{"step_id": "s", "type": "shell", "script": "echo no >&2; exit 2"}],
    }
    with live_server(tmp_path, V2_LOG_FORMAT="json") as server:
        ran = httpx.post(f"{server.base_url}/api/v2/jobs/execute", json=job, timeout=30)
        execution_id = ran.json()["execution_id"]
        deadline = time.monotonic() + 10
        while True:
            lines = [
                json.loads(line) for line in server.log().splitlines() if line.startswith('{"time"')
            ]
            finished = [
                line
                for line in lines
                if line["logger"] == "app.engine.executions"
                and line.get("execution_id") == execution_id
            ]
            if finished or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert lines, server.log()
    [line] = finished
    assert line["level"] == "INFO"
    assert line["job_id"] == "json-logged"
    assert line["status"] == "failed"
    assert line["error"] == "step 's' failed: exit code 2: no"
    assert line["duration_seconds"] >= 0
