"""Hostile process output travels through the engine, the database and the API intact
(NUL bytes, invalid UTF-8, 4-byte unicode, many megabytes): capped and flagged, never a 5xx."""

from __future__ import annotations

import httpx

from tests.api.helpers import shell_job

EXECUTE = "/api/v2/jobs/execute"


async def test_nul_invalid_utf8_and_emoji_are_stored_and_returned(
    client: httpx.AsyncClient,
) -> None:
    script = r"printf 'a\000b\377\376c \360\237\230\200 done'"
    response = await client.post(EXECUTE, json=shell_job("hostile", script))
    assert response.status_code == 200, response.text
    execution_id = response.json()["execution_id"]
    stored = await client.get(f"/api/v2/executions/{execution_id}")
    assert stored.status_code == 200
    output = stored.json()["steps"][0]["output"]
    assert output.startswith("a") and output.endswith("\U0001f600 done")
    assert "\x00" not in output and "\ufffd" in output  # NUL and bad bytes replaced, visibly
    listed = await client.get("/api/v2/executions", params={"job_id": "hostile"})
    assert listed.status_code == 200 and listed.json()["items"][0]["steps"][0]["output"] == output


async def test_megabytes_of_output_are_capped_and_flagged(client: httpx.AsyncClient) -> None:
    script = "head -c 6000000 /dev/zero | tr '\\0' x; echo; echo tail >&2"
    response = await client.post(EXECUTE, json=shell_job("big", script))
    assert response.status_code == 200, response.text
    step = response.json()["steps"][0]
    assert step["metadata"]["stdout_truncated"] is True
    assert len(step["output"]) <= 1024 * 1024
    stored = await client.get(f"/api/v2/executions/{response.json()['execution_id']}")
    assert stored.status_code == 200
    assert stored.json()["steps"][0]["output"] == step["output"]
