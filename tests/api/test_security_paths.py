"""``script_path`` and ``working_directory`` must resolve inside V2_SCRIPT_ROOTS: checked at
submission (400 naming the field) and again when the step runs."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from tests.api.helpers import BASE_URL, assert_problem, make_settings, wait_for

EXECUTE = "/api/v2/jobs/execute"
SCHEDULE = "/api/v2/jobs/schedule"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A script root with a script, a sub-directory, and neighbours outside it."""
    root = tmp_path / "scripts"
    (root / "sub").mkdir(parents=True)
    (root / "hello.sh").write_text('echo "hello from $(pwd -P)"\n')
    (root / "sub" / "inner.sh").write_text("echo inner\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.sh").write_text("echo evil\n")
    (root / "link-out.sh").symlink_to(outside / "evil.sh")
    (root / "dir-out").symlink_to(outside)
    (root / "link-in.sh").symlink_to(root / "hello.sh")
    return root


@pytest.fixture
async def http(root: Path) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(make_settings(script_roots=[str(root)]))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield client


def job(**step: Any) -> dict[str, Any]:
    return {
        "job_id": "paths",
        "job_name": "Paths",
        "steps": [{"step_id": "s0", "type": "shell", **step}],
    }


def fields(problem: dict[str, Any]) -> dict[str, str]:
    return {e["field"]: e["message"] for e in problem["errors"]}


async def test_a_script_inside_the_root_runs(http: httpx.AsyncClient, root: Path) -> None:
    for step in (
        {"script_path": str(root / "hello.sh")},
        {"script_path": "hello.sh"},  # relative: from the first root
        {"script_path": "inner.sh", "working_directory": str(root / "sub")},
        {"script_path": "link-in.sh"},  # a symlink that stays inside
        {"script": "pwd -P", "working_directory": "sub"},
    ):
        response = await http.post(EXECUTE, json=job(**step))
        assert response.status_code == 200, (step, response.text)


@pytest.mark.parametrize(
    ("step", "field", "message"),
    [
        ({"script_path": "../outside/evil.sh"}, "steps[0].script_path", "'..'"),
        ({"script_path": "sub/../hello.sh"}, "steps[0].script_path", "'..'"),
        ({"script_path": "/etc/passwd"}, "steps[0].script_path", "outside the script roots"),
        ({"script_path": "link-out.sh"}, "steps[0].script_path", "outside the script roots"),
        ({"script_path": "dir-out/evil.sh"}, "steps[0].script_path", "outside the script roots"),
        ({"script_path": "a\x00b.sh"}, "steps[0].script_path", "NUL"),
        ({"script": "ls", "working_directory": "/tmp"}, "steps[0].working_directory", "outside"),
        ({"script": "ls", "working_directory": "dir-out"}, "steps[0].working_directory", "outside"),
        ({"script": "ls", "working_directory": ".."}, "steps[0].working_directory", "'..'"),
        (
            {"script_path": "evil.sh", "working_directory": "dir-out"},
            "steps[0].working_directory",
            "outside",
        ),
    ],
)
async def test_paths_leading_out_are_400_naming_the_field(
    http: httpx.AsyncClient, step: dict[str, Any], field: str, message: str
) -> None:
    response = await http.post(EXECUTE, json=job(**step))

    problem = assert_problem(response, 400)
    assert field in fields(problem), problem
    assert message in fields(problem)[field]


async def test_powershell_paths_are_confined_too(http: httpx.AsyncClient) -> None:
    body = job(script_path="/etc/passwd")
    body["steps"][0]["type"] = "powershell"

    problem = assert_problem(await http.post(EXECUTE, json=body), 400)

    assert "steps[0].script_path" in fields(problem)


async def test_scheduling_names_the_field_under_job(http: httpx.AsyncClient) -> None:
    response = await http.post(
        SCHEDULE,
        json={"job": job(script_path="/etc/passwd"), "scheduled_time": "2099-01-01T00:00:00Z"},
    )

    assert "job.steps[0].script_path" in fields(assert_problem(response, 400))


async def test_a_file_changed_after_submission_is_checked_again(
    http: httpx.AsyncClient, root: Path, tmp_path: Path
) -> None:
    when = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    scheduled = await http.post(
        SCHEDULE, json={"job": job(script_path="later.sh"), "scheduled_time": when}
    )
    assert scheduled.status_code == 200, scheduled.text
    (root / "later.sh").symlink_to(tmp_path / "outside" / "evil.sh")  # swapped in meanwhile

    async def status() -> dict[str, Any]:
        response = await http.get(f"/api/v2/executions/{scheduled.json()['execution_id']}")
        body: dict[str, Any] = response.json()
        return body

    final = await wait_for(status, lambda e: e["status"] in ("success", "failed"))
    assert final["status"] == "failed"
    assert "outside the script roots" in final["steps"][0]["error_message"]
    assert final["steps"][0]["output"] is None


async def test_without_roots_both_fields_are_refused(client: httpx.AsyncClient) -> None:
    for step, field in (
        ({"script_path": "/srv/scripts/x.sh"}, "steps[0].script_path"),
        ({"script": "ls", "working_directory": "/srv"}, "steps[0].working_directory"),
    ):
        problem = assert_problem(await client.post(EXECUTE, json=job(**step)), 400)
        assert "V2_SCRIPT_ROOTS" in fields(problem)[field]


def test_roots_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from app.settings import Settings

    monkeypatch.setenv("V2_SCRIPT_ROOTS", f"{tmp_path}{os.pathsep}/srv/scripts")
    assert Settings().script_roots == [str(tmp_path), "/srv/scripts"]
    monkeypatch.setenv("V2_SCRIPT_ROOTS", '["/a b", "/c"]')
    assert Settings().script_roots == ["/a b", "/c"]


async def test_a_root_that_is_a_symlink_works(tmp_path: Path, root: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(root)
    application: FastAPI = create_app(make_settings(script_roots=[str(alias)]))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            ok = await client.post(EXECUTE, json=job(script_path=str(alias / "hello.sh")))
            out = await client.post(EXECUTE, json=job(script_path="link-out.sh"))
    assert ok.status_code == 200, ok.text
    assert_problem(out, 400)
