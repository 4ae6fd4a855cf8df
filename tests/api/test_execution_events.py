"""Live output: GET /api/v2/executions/{id}/events and the output kept on cancel."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from app.api.live import follow_execution
from app.api.service import ModernJobAPI
from tests.api.helpers import assert_problem, execution_status, shell_job, wait_for


def parse_stream(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        events.append((fields["event"], json.loads(fields["data"])))
    return events


async def start(client: httpx.AsyncClient, job: dict[str, Any]) -> str:
    response = await client.post("/api/v2/jobs/execute?wait=false", json=job)
    assert response.status_code == 202, response.text
    execution_id: str = response.json()["execution_id"]
    return execution_id


async def test_lines_arrive_while_the_step_runs(
    client: httpx.AsyncClient, job_api: ModernJobAPI, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    script = f'echo one; while [ ! -f "{go}" ]; do sleep 0.02; done; echo two >&2; printf three'
    execution_id = await start(client, shell_job("live", script))
    seen: list[tuple[str, dict[str, Any]]] = []
    async with asyncio.timeout(20):
        async for event in follow_execution(job_api.engine, execution_id):
            seen.append((str(event.event), event.data))
            if event.event == "output" and event.data["line"] == "one":
                # The step is still running, blocked until we answer: the line came live.
                status = await execution_status(client, execution_id)
                assert status["steps"][0]["status"] == "running"
                go.touch()
    kinds = [kind for kind, _ in seen]
    lines = [(d["stream"], d["line"]) for k, d in seen if k == "output"]
    assert lines == [("stdout", "one"), ("stderr", "two"), ("stdout", "three")]
    steps = [d["status"] for k, d in seen if k == "step"]
    assert steps == ["running", "success"]
    assert kinds[-1] == "end" and seen[-1][1]["status"] == "success"
    assert kinds.index("output") < kinds.index("step", kinds.index("output"))


async def test_a_late_client_gets_the_whole_run_then_the_end(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v2/jobs/execute", json=shell_job("late", "echo a; echo b", "echo c >&2; exit 3")
    )
    execution_id = response.json()["execution_id"]

    stream = await client.get(f"/api/v2/executions/{execution_id}/events")

    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = parse_stream(stream.text)
    assert [(d["step_id"], d["status"]) for k, d in events if k == "step"] == [
        ("s0", "success"),
        ("s1", "failed"),
    ]
    assert [d["line"] for k, d in events if k == "output"] == ["a", "b", "c"]
    assert events[-1] == ("end", events[-1][1]) and events[-1][1]["status"] == "failed"


async def test_unknown_execution_is_404_before_any_stream(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/v2/executions/nope/events"), 404)


async def test_output_produced_before_a_cancel_is_kept(
    client: httpx.AsyncClient, job_api: ModernJobAPI
) -> None:
    execution_id = await start(client, shell_job("stuck", "echo started; echo oops >&2; sleep 60"))
    async with asyncio.timeout(20):
        async for event in follow_execution(job_api.engine, execution_id):
            if event.event == "output" and event.data["line"] == "oops":
                break
    response = await client.post(f"/api/v2/executions/{execution_id}/cancel")
    assert response.status_code == 200, response.text

    body = await wait_for(
        lambda: execution_status(client, execution_id), lambda b: b["status"] == "cancelled"
    )
    step = body["steps"][0]
    assert step["status"] == "cancelled"
    assert step["output"] == "started\n"
    assert step["metadata"]["stderr"] == "oops\n"


async def test_output_produced_before_a_step_timeout_is_kept(client: httpx.AsyncClient) -> None:
    job = shell_job("slow", "echo before; sleep 30")
    job["steps"][0]["timeout"] = 1
    response = await client.post("/api/v2/jobs/execute", json=job)

    step = response.json()["steps"][0]
    assert step["status"] == "timeout"
    assert step["output"] == "before\n"
