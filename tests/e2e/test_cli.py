"""The jobscheduler-v2 command line against the live server (uvicorn on a loopback port)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from app.cli import cli
from tests.e2e.conftest import READER_KEY
from tests.e2e.server import LiveServer, free_port


def run(server: LiveServer, *args: str, key: str | None = None) -> Result:
    env = {"JOBSCHEDULER_URL": server.base_url, "JOBSCHEDULER_API_KEY": key or server.api_key}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def new_job(server: LiveServer, script: str = "echo hello", **fields: Any) -> str:
    job_id = f"cli-{uuid.uuid4().hex[:8]}"
    body = {
        "job_id": job_id,
        "job_name": f"CLI {job_id}",
        "timezone": "Europe/London",
        "steps": [{"step_id": "main", "type": "shell", "script": script}],
        "schedule_config": {"type": "cron", "expression": "30 2 * * 1-5"},
        **fields,
    }
    response = httpx.post(f"{server.base_url}/api/v2/jobs", json=body, headers=server.headers)
    assert response.status_code == 201, response.text
    return job_id


def start(server: LiveServer, job_id: str) -> str:
    response = httpx.post(
        f"{server.base_url}/api/v2/jobs/{job_id}/run?wait=false", headers=server.headers
    )
    assert response.status_code == 202, response.text
    execution_id: str = response.json()["execution_id"]
    return execution_id


def test_jobs_list_show_disable_enable(server: LiveServer) -> None:
    job_id = new_job(server)

    listed = run(server, "jobs", "list", "--timezone", "Europe/London", "--limit", "500")
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.stdout.splitlines() if line.startswith(job_id))
    assert "30 2 * * 1-5" in row and "Europe/London" in row and " yes " in row
    assert "02:30:00" in row  # the next fire in local time

    shown = json.loads(run(server, "jobs", "show", job_id, "--json").stdout)
    assert shown["job_id"] == job_id and shown["next_fire_at"]
    text = run(server, "jobs", "show", job_id).stdout
    assert shown["schedule_description"] in text and "main" in text

    disabled = run(server, "jobs", "disable", job_id)
    assert disabled.exit_code == 0 and f"{job_id}: disabled" in disabled.stdout
    assert json.loads(run(server, "--json", "jobs", "show", job_id).stdout)["enabled"] is False
    assert "enabled" in run(server, "jobs", "enable", job_id).stdout


def test_run_wait_then_history_and_show(server: LiveServer) -> None:
    job_id = new_job(server, "echo from-the-cli")

    ran = run(server, "jobs", "run", job_id, "--wait")
    assert ran.exit_code == 0, ran.output
    assert "from-the-cli" in ran.stdout and "success" in ran.stdout

    listed = run(server, "executions", "list", "--job", job_id, "--since", "1h", "--json")
    page = json.loads(listed.stdout)
    assert [e["status"] for e in page["items"]] == ["success"]
    execution_id = page["items"][0]["execution_id"]
    table = run(server, "executions", "list", "--job", job_id, "--status", "success")
    assert execution_id in table.stdout
    shown = run(server, "executions", "show", execution_id)
    assert "from-the-cli" in shown.stdout


def test_tail_prints_the_output_and_exits_with_the_run_status(server: LiveServer) -> None:
    good = start(server, new_job(server, "echo line-1; echo line-2"))
    tailed = run(server, "executions", "tail", good)
    assert tailed.exit_code == 0, tailed.output
    assert "[main] line-1" in tailed.stdout and "[main] line-2" in tailed.stdout
    assert tailed.stdout.rstrip().endswith(f"=== {good} success")

    bad = start(server, new_job(server, "echo partial; exit 7"))
    failed = run(server, "executions", "tail", bad, "--json")
    assert failed.exit_code == 1
    events = [json.loads(line) for line in failed.stdout.splitlines()]
    line = {"step_id": "main", "stream": "stdout", "line": "partial"}
    assert {"event": "output", "data": line} in events
    assert events[-1]["event"] == "end" and events[-1]["data"]["status"] == "failed"


def test_cancel_a_running_execution(server: LiveServer) -> None:
    execution_id = start(server, new_job(server, "sleep 60"))

    cancelled = run(server, "executions", "cancel", execution_id)

    assert cancelled.exit_code == 0, cancelled.output
    assert f"{execution_id}  cancelled" in cancelled.stdout


def test_preview_marks_the_fire_moved_by_a_dst_gap(server: LiveServer) -> None:
    shown = run(
        server,
        "preview",
        "30 2 * * *",
        "--tz",
        "America/New_York",
        "-n",
        "3",
        "--after",
        "2026-03-07T00:00:00Z",
    )
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("LOCAL (AMERICA/NEW_YORK)")
    assert "2026-03-08 03:00:00 -04:00" in lines[2] and "moved by DST gap" in lines[2]
    assert "moved" not in lines[1] and "moved" not in lines[3]


def test_refusals_name_the_reason_and_exit_4(server: LiveServer) -> None:
    job_id = new_job(server)
    denied = run(server, "jobs", "disable", job_id, key=READER_KEY)
    assert denied.exit_code == 4
    assert "403" in denied.stderr and "'admin' scope" in denied.stderr

    missing = run(server, "jobs", "show", "no-such-job")
    assert missing.exit_code == 4 and "404" in missing.stderr

    bad_key = run(server, "jobs", "list", key="jsv2_wrong")
    assert bad_key.exit_code == 4 and "401" in bad_key.stderr


@pytest.mark.parametrize("args", [["jobs", "list"], ["executions", "tail", "x"]])
def test_the_installed_script_says_when_the_server_is_unreachable(args: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    script = [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main())"]
    done = subprocess.run(
        [*script, *args],
        env={"JOBSCHEDULER_URL": url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 3
    assert f"cannot reach the service at {url}" in done.stderr


def test_serve_runs_the_service_with_its_console(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "V2_DATABASE_URL": "memory://", "V2_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", follow_redirects=True, timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "serve did not answer"
                time.sleep(0.05)
        assert page.status_code == 200 and str(page.url).endswith("/ui")
        assert "Running now" in page.text
    finally:
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert process.wait(15) in (0, -signal.SIGTERM)
