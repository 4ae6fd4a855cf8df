"""The committed OpenAPI contract (openapi/openapi.json) is what the app serves, and it is
complete: stable operationIds, tags, summaries, examples, declared errors, offline docs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from scripts.export_openapi import render

CONTRACT = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
STALE = "openapi/openapi.json is stale: run `make openapi` and commit the result"

OPERATION_IDS = {
    ("post", "/api/v2/jobs/execute"): "execute_job",
    ("post", "/api/v2/jobs/schedule"): "schedule_job",
    ("post", "/api/v2/jobs/schedule/batch"): "schedule_job_batch",
    ("get", "/api/v2/execution/status"): "get_engine_status",
    ("get", "/api/v2/cluster"): "get_cluster",
    ("get", "/api/v2/steps/types"): "list_step_types",
    ("get", "/api/v2/executions/{execution_id}"): "get_execution",
    ("post", "/api/v2/executions/{execution_id}/cancel"): "cancel_execution",
    ("post", "/api/v2/jobs"): "create_job",
    ("get", "/api/v2/jobs"): "list_jobs",
    ("get", "/api/v2/jobs/{job_id}"): "get_job",
    ("put", "/api/v2/jobs/{job_id}"): "replace_job",
    ("patch", "/api/v2/jobs/{job_id}"): "update_job",
    ("delete", "/api/v2/jobs/{job_id}"): "delete_job",
    ("post", "/api/v2/jobs/{job_id}/enable"): "enable_job",
    ("post", "/api/v2/jobs/{job_id}/schedules/{name}/enable"): "enable_job_schedule",
    ("post", "/api/v2/jobs/{job_id}/schedules/{name}/disable"): "disable_job_schedule",
    ("post", "/api/v2/import/sql-agent"): "import_sql_agent",
    ("get", "/api/v2/calendars"): "list_calendars",
    ("post", "/api/v2/calendars"): "create_calendar",
    ("get", "/api/v2/calendars/{name}"): "get_calendar",
    ("put", "/api/v2/calendars/{name}"): "replace_calendar",
    ("delete", "/api/v2/calendars/{name}"): "delete_calendar",
    ("post", "/api/v2/jobs/{job_id}/disable"): "disable_job",
    ("post", "/api/v2/jobs/{job_id}/run"): "run_job",
    ("post", "/api/v2/jobs/{job_id}/backfill"): "backfill_job",
    ("get", "/api/v2/jobs/{job_id}/next-runs"): "get_next_runs",
    ("post", "/api/v2/schedules/preview"): "preview_schedule",
    ("get", "/api/v2/executions"): "list_executions",
    ("get", "/api/v2/executions/{execution_id}/events"): "stream_execution_events",
    ("get", "/api/v2/notifications"): "list_notifications",
    ("post", "/api/v2/notifications/test"): "send_test_notification",
    ("get", "/health"): "health",
    ("get", "/ready"): "ready",
}


def operations(schema: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    }


@pytest.fixture
def document(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def test_the_app_serves_the_committed_contract(document: dict[str, Any]) -> None:
    committed = json.loads(CONTRACT.read_text(encoding="utf-8"))

    assert document == committed, STALE
    assert CONTRACT.read_text(encoding="utf-8") == render(document), STALE


async def test_openapi_json_endpoint_serves_it(
    client: httpx.AsyncClient, document: dict[str, Any]
) -> None:
    response = await client.get("/openapi.json")

    assert response.status_code == 200
    assert response.json() == document
    assert response.json()["openapi"].startswith("3.1")


def test_operation_ids_are_stable_and_readable(document: dict[str, Any]) -> None:
    found = {key: op["operationId"] for key, op in operations(document).items()}

    assert found == OPERATION_IDS


def test_every_operation_is_documented(document: dict[str, Any]) -> None:
    for key, operation in operations(document).items():
        assert operation.get("tags"), key
        assert operation.get("summary"), key
        assert operation.get("description"), key
        body = operation.get("requestBody")
        if body is not None:
            assert body["content"]["application/json"].get("examples"), key


def test_every_error_is_declared_as_problem_details(document: dict[str, Any]) -> None:
    for key, operation in operations(document).items():
        responses = operation["responses"]
        assert "422" not in responses, key
        assert "500" in responses, key
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                schema = response["content"]["application/problem+json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Problem"}, (key, status)
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for key in OPERATION_IDS:
        if key[0] == "post":
            assert "413" in operations(document)[key]["responses"], key
        if key[1].startswith("/api/v2"):
            assert "503" in operations(document)[key]["responses"], key


def test_execute_documents_both_400_bodies_and_the_202(document: dict[str, Any]) -> None:
    responses = operations(document)[("post", "/api/v2/jobs/execute")]["responses"]

    refs = [s["$ref"] for s in responses["400"]["content"]["application/json"]["schema"]["oneOf"]]
    assert refs == ["#/components/schemas/ExecutionRead", "#/components/schemas/Problem"]
    assert "Location" in responses["202"]["headers"]


def test_steps_are_a_discriminated_union_of_the_step_schemas(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    items = schemas["JobCreate"]["properties"]["steps"]["items"]

    assert items["discriminator"]["propertyName"] == "type"
    assert set(items["discriminator"]["mapping"]) == {"sql", "powershell", "shell"}
    assert schemas["SqlStepConfig"]["required"] == ["step_id", "type", "query", "connection_name"]
    assert schemas["SqlStepConfig"]["properties"]["timeout"]["default"] == 300
    for name in ("ShellStepConfig", "PowerShellStepConfig"):
        assert {"anyOf": [{"required": ["script"]}, {"required": ["script_path"]}]} in schemas[
            name
        ]["allOf"]


async def test_the_documented_example_job_succeeds(
    client: httpx.AsyncClient, document: dict[str, Any]
) -> None:
    operation = operations(document)[("post", "/api/v2/jobs/execute")]
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    first = next(iter(examples.values()))["value"]

    response = await client.post("/api/v2/jobs/execute", json=first)

    assert response.status_code == 200, response.text
    assert response.json()["success"] is True


async def test_swagger_ui_is_served_without_a_cdn(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")

    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert urls, page.text
    assert not [u for u in urls if "://" in u or u.startswith("//")]
    assert "cdn" not in page.text.lower()
    for url in urls:
        asset = await client.get(url)
        assert asset.status_code == 200, url
