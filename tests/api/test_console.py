"""The console (/ui) over the ASGI app: pages, login and session cookie, scopes, CSRF, the
open-mode loopback guard, the Upcoming window, and that no secret is ever rendered."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.api.keys import key_entry, new_api_key
from app.main import create_app
from tests.api.helpers import BASE_URL, make_settings, shell_job

ADMIN, RUNNER, READER = new_api_key(), new_api_key(), new_api_key()
ENTRIES = [
    key_entry(ADMIN, "ops-admin", ["admin"]),
    key_entry(RUNNER, "ops-runner", ["run"]),
    key_entry(READER, "ops-reader", ["read"]),
]
SECRET_URL_PASSWORD = "pw-Zq81xx"
NIGHTLY = {
    **shell_job("nightly", 'echo "user=$DB_USER"'),
    "timezone": "America/New_York",
    "schedule_config": {"type": "cron", "expression": "30 2 * * *"},
}
NIGHTLY["steps"][0]["parameters"] = {"DB_USER": "etl", "DB_PASSWORD": "hunter2-secret"}


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


async def client_for(app: FastAPI, host: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(host, 50000))
    return httpx.AsyncClient(transport=transport, base_url=BASE_URL)


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[FastAPI]:
    connections = {"warehouse": f"sqlite+aiosqlite:///{tmp_path}/{SECRET_URL_PASSWORD}.db"}
    app = create_app(make_settings(api_keys=ENTRIES, connections=connections))
    async with app.router.lifespan_context(app):
        async with await client_for(app) as http:
            job = {
                **NIGHTLY,
                "steps": [
                    *NIGHTLY["steps"],
                    {
                        "step_id": "load",
                        "type": "sql",
                        "connection_name": "warehouse",
                        "query": "SELECT 1",
                    },
                ],
            }
            response = await http.post(
                "/api/v2/jobs", json=job, headers={"Authorization": f"Bearer {ADMIN}"}
            )
            assert response.status_code == 201, response.text
        yield app


async def login(http: httpx.AsyncClient, key: str) -> httpx.Response:
    page = await http.get("/ui/login")
    assert page.status_code == 200
    form = {"api_key": key, "next": "/ui/jobs", "csrf_token": csrf_of(page.text)}
    return await http.post("/ui/login", data=form)


async def test_open_mode_serves_the_pages_and_redirects_root(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/v2/jobs", json=NIGHTLY)
    assert created.status_code == 201, created.text
    run = await client.post("/api/v2/jobs/nightly/run")
    execution_id = run.json()["execution_id"]

    root = await client.get("/")
    assert root.status_code == 307 and root.headers["location"] == "/ui"
    for path, expected in [
        ("/ui", "Running now"),
        ("/ui/jobs", "30 2 * * *"),
        ("/ui/jobs/nightly", "Next runs"),
        (f"/ui/executions/{execution_id}", "user=etl"),
        ("/ui/executions?status=success", execution_id[:12]),
        ("/ui/queues", "America/New_York"),
        ("/ui/queues", "(this node)"),
        ("/ui/upcoming", "Upcoming fires"),
    ]:
        page = await client.get(path)
        assert page.status_code == 200, (path, page.text[:500])
        assert expected in page.text, path
        assert "hunter2-secret" not in page.text, path
        assert '<script src="http' not in page.text and "cdn" not in page.text.lower()
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy


async def test_jobs_page_shows_next_fire_in_local_and_utc(client: httpx.AsyncClient) -> None:
    await client.post("/api/v2/jobs", json=NIGHTLY)
    job = (await client.get("/api/v2/jobs/nightly")).json()

    page = (await client.get("/ui/jobs?enabled=true&timezone=America/New_York")).text

    row = re.search(r'<tr data-job="nightly">.*?</tr>', page, re.S)
    assert row is not None
    local = job["next_fire_at_local"][:19].replace("T", " ")
    utc = job["next_fire_at"][:19].replace("T", " ")
    assert local in row.group() and f"{utc} UTC" in row.group()
    assert "Run now" in row.group() and "Disable" in row.group()
    # The schedule in words (as the API describes it) beside the expression.
    assert job["schedule_description"] == "At 02:30 every day, America/New_York"
    assert job["schedule_description"] in row.group() and "<code>30 2 * * *</code>" in row.group()


async def test_jobs_pagination_follows_the_cursor(client: httpx.AsyncClient) -> None:
    for i in range(3):
        await client.post("/api/v2/jobs", json=shell_job(f"page-{i}"))
    first = (await client.get("/ui/jobs?limit=2")).text
    assert "page-0" in first and "page-1" in first and "page-2" not in first
    href = re.search(r'rel="next" href="([^"]+)"', first)
    assert href is not None
    second = (await client.get(href.group(1).replace("&amp;", "&"))).text
    assert "page-2" in second and "page-0" not in second


async def test_upcoming_marks_the_dst_moved_fire_and_the_transition(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/api/v2/jobs", json=NIGHTLY)

    page = await client.get("/ui/upcoming?from=2026-03-07&hours=48&tz=America/New_York")

    assert page.status_code == 200
    moved = re.search(r'<tr class="moved-row">.*?</tr>', page.text, re.S)
    assert moved is not None
    assert "2026-03-08 03:00:00 EDT" in moved.group()
    assert "moved by DST gap from 02:30" in moved.group()
    assert "America/New_York: clocks forward 1 h" in page.text
    assert "2026-03-07 02:30:00 EST" in page.text


async def test_upcoming_names_every_bad_parameter(client: httpx.AsyncClient) -> None:
    page = await client.get("/ui/upcoming?from=soon&hours=0&tz=Mars/Base")
    assert page.status_code == 400
    for field in ("from", "hours", "tz"):
        assert f"<code>{field}</code>" in page.text


async def test_a_form_without_its_csrf_token_is_refused(client: httpx.AsyncClient) -> None:
    await client.post("/api/v2/jobs", json=NIGHTLY)

    forged = await client.post("/ui/jobs/nightly/disable", data={"back": "/ui/jobs"})
    wrong = await client.post("/ui/jobs/nightly/disable", data={"csrf_token": "guess"})

    assert forged.status_code == 403 and "CSRF" in forged.text
    assert wrong.status_code == 403
    assert (await client.get("/api/v2/jobs/nightly")).json()["enabled"] is True
    token = csrf_of((await client.get("/ui/jobs")).text)
    done = await client.post(
        "/ui/jobs/nightly/disable", data={"csrf_token": token, "back": "/ui/jobs"}
    )
    assert done.status_code == 303 and done.headers["location"] == "/ui/jobs"
    assert (await client.get("/api/v2/jobs/nightly")).json()["enabled"] is False


async def test_open_mode_console_answers_loopback_only(app: FastAPI) -> None:
    async with await client_for(app, host="192.0.2.7") as outsider:
        page = await outsider.get("/ui")
    assert page.status_code == 403 and "loopback" in page.text


async def test_with_keys_the_console_asks_for_a_key_once(keyed: FastAPI) -> None:
    async with await client_for(keyed) as http:
        first = await http.get("/ui/jobs?enabled=true")
        assert first.status_code == 303
        assert first.headers["location"] == "/ui/login?next=%2Fui%2Fjobs%3Fenabled%3Dtrue"

        forced = await http.post("/ui/login", data={"api_key": ADMIN, "next": "/ui"})
        assert forced.status_code == 403 and "CSRF" in forced.text  # a login forced from afar
        refused = await login(http, "jsv2_not-a-key")
        assert refused.status_code == 401 and "not valid" in refused.text

        accepted = await login(http, ADMIN)
        assert accepted.status_code == 303 and accepted.headers["location"] == "/ui/jobs"
        cookie = accepted.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
        assert ADMIN not in cookie

        jobs = await http.get("/ui/jobs")
        assert jobs.status_code == 200 and "nightly" in jobs.text
        assert "Run now" in jobs.text and "Disable" in jobs.text


async def test_a_read_key_sees_no_actions_and_cannot_post_them(keyed: FastAPI) -> None:
    async with await client_for(keyed) as http:
        await login(http, READER)
        jobs = await http.get("/ui/jobs")
        detail = await http.get("/ui/jobs/nightly")
        for page in (jobs, detail):
            assert page.status_code == 200
            assert "Run now" not in page.text and "Disable" not in page.text
        token = csrf_of(jobs.text)  # the logout form's: a valid token for this session

        run = await http.post("/ui/jobs/nightly/run", data={"csrf_token": token})
        disable = await http.post("/ui/jobs/nightly/disable", data={"csrf_token": token})

        assert run.status_code == 403 and "&#39;run&#39; scope" in run.text
        assert disable.status_code == 403 and "&#39;admin&#39; scope" in disable.text


async def test_a_run_key_runs_but_does_not_disable(keyed: FastAPI) -> None:
    async with await client_for(keyed) as http:
        await login(http, RUNNER)
        page = await http.get("/ui/jobs/nightly")
        assert "Run now" in page.text and "Disable" not in page.text
        token = csrf_of(page.text)

        ran = await http.post("/ui/jobs/nightly/run", data={"csrf_token": token})

        assert ran.status_code == 303
        execution = await http.get(ran.headers["location"])
        assert execution.status_code == 200 and "nightly" in execution.text
        execution_id = ran.headers["location"].rsplit("/", 1)[1]
        api = await http.get(
            f"/api/v2/executions/{execution_id}", headers={"Authorization": f"Bearer {RUNNER}"}
        )
        assert api.json()["requested_by"] == "ops-runner"


async def test_a_tampered_cookie_and_logout_end_the_session(keyed: FastAPI) -> None:
    async with await client_for(keyed) as http:
        await login(http, ADMIN)
        page = await http.get("/ui")
        assert page.status_code == 200
        token = csrf_of(page.text)

        out = await http.post("/ui/logout", data={"csrf_token": token})
        assert out.status_code == 303
        assert (await http.get("/ui")).status_code == 303

        http.cookies.set("jsv2_console", "eyJraWQiOiJvcHMtYWRtaW4ifQ.forged.sig", path="/ui")
        assert (await http.get("/ui")).status_code == 303


async def test_no_secret_is_rendered(keyed: FastAPI) -> None:
    async with await client_for(keyed) as http:
        await login(http, ADMIN)
        run = await http.post(
            "/api/v2/jobs/nightly/run", headers={"Authorization": f"Bearer {ADMIN}"}
        )
        execution_id = run.json()["execution_id"]
        pages: list[Any] = [
            await http.get(path)
            for path in (
                "/ui",
                "/ui/jobs",
                "/ui/jobs/nightly",
                f"/ui/executions/{execution_id}",
                "/ui/queues",
                "/ui/upcoming",
            )
        ]
    for page in pages:
        assert page.status_code == 200
        for secret in ("hunter2-secret", SECRET_URL_PASSWORD, ADMIN):
            assert secret not in page.text
        assert "connection <code>warehouse</code>" in pages[2].text


async def test_the_execution_page_shows_every_attempt(client: httpx.AsyncClient) -> None:
    job = shell_job("flaky", "echo try; exit 4", max_retries=1)
    execution_id = (await client.post("/api/v2/jobs/execute", json=job)).json()["execution_id"]

    page = await client.get(f"/ui/executions/{execution_id}")

    assert page.status_code == 200
    attempts = re.search(r'<section class="attempts">.*?</section>', page.text, re.S)
    assert attempts is not None
    rows = re.findall(r"<tr>\s*<td>(\d)</td>", attempts.group())
    assert rows == ["1", "2"]
    assert attempts.group().count("exit code 4") == 2


async def test_the_console_event_stream_replays_a_run_and_refuses_unknown_ids(
    client: httpx.AsyncClient,
) -> None:
    done = await client.post("/api/v2/jobs/execute", json=shell_job("ev", "echo streamed"))
    execution_id = done.json()["execution_id"]

    stream = await client.get(f"/ui/executions/{execution_id}/events")
    unknown = await client.get("/ui/executions/nope/events")

    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert '"line": "streamed"' in stream.text and "event: end" in stream.text
    assert unknown.status_code == 404
