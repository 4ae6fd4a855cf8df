"""The console in a real browser: headless Chromium (Debian's) drives /ui on the live server
(``python -m app`` with API keys). Each test saves screenshots under tests/e2e/artifacts/
(git-ignored). No request leaves the loopback interface."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from tests.e2e.conftest import READER_KEY
from tests.e2e.server import LiveServer
from tests.e2e.test_swagger_ui import CHROMIUM, CHROMIUM_ARGS, LOOPBACK
from tests.support.processes import group_members, running

ARTIFACTS = Path(__file__).parent / "artifacts"
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"headless Chromium not installed at {CHROMIUM}"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Session:
    """A browser context logged in to the console, recording requests off loopback."""

    def __init__(self, browser: Browser, server: LiveServer, **context: Any) -> None:
        self.server = server
        self.outside: list[str] = []
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, **context)
        self.context.route("**/*", self._guard)
        self.page = self.context.new_page()

    def _guard(self, route: Route) -> None:
        url = urlsplit(route.request.url)
        if url.scheme in ("http", "https", "ws", "wss") and url.hostname not in LOOPBACK:
            self.outside.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    def login(self, key: str, path: str = "/ui") -> Page:
        self.page.goto(self.server.base_url + path)
        expect(self.page).to_have_url(re.compile(r"/ui/login\?next="))
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Log in").click()
        expect(self.page).to_have_url(re.compile(re.escape(path) + "$"))
        self.page.wait_for_load_state("load")  # the URL changes before the stylesheet loads
        return self.page

    def shot(self, name: str, full_page: bool = True) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)

    def close(self) -> None:
        self.context.close()
        assert self.outside == [], f"requests left the loopback interface: {self.outside}"


@pytest.fixture
def session(browser: Browser, server: LiveServer) -> Iterator[Session]:
    opened = Session(browser, server)
    yield opened
    opened.close()


def create_job(server: LiveServer, script: str, **fields: Any) -> str:
    job_id = fields.pop("job_id", f"ui-{uuid.uuid4().hex[:8]}")
    body = {
        "job_id": job_id,
        "job_name": f"Console {job_id}",
        "timezone": "Europe/London",
        "steps": [{"step_id": "main", "type": "shell", "script": script}],
        "schedule_config": {"type": "cron", "expression": "30 2 * * 1-5"},
        **fields,
    }
    response = httpx.post(f"{server.base_url}/api/v2/jobs", json=body, headers=server.headers)
    assert response.status_code == 201, response.text
    return job_id


def api_job(server: LiveServer, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.base_url}/api/v2/jobs/{job_id}", headers=server.headers)
    body: dict[str, Any] = response.json()
    return body


def test_jobs_created_through_the_api_are_listed_with_their_next_fire(
    session: Session, server: LiveServer
) -> None:
    ids = [create_job(server, "echo listed") for _ in range(2)]
    page = session.login(server.api_key or "", "/ui/jobs?timezone=Europe/London&limit=500")

    for job_id in ids:
        row = page.locator(f'tr[data-job="{job_id}"]')
        expect(row).to_be_visible()
        job = api_job(server, job_id)
        local = job["next_fire_at_local"][:19].replace("T", " ")
        expect(row.locator(".next-local")).to_contain_text(local)
        expect(row.locator(".next-local")).to_contain_text("02:30:00")
        expect(row.locator(".next-utc")).to_contain_text(job["next_fire_at"][:16].replace("T", " "))
        expect(row).to_contain_text("30 2 * * 1-5")
        expect(row.locator(".schedule")).to_contain_text(job["schedule_description"])
    session.shot("jobs")
    page.set_viewport_size(PHONE)
    expect(page.locator(f'tr[data-job="{ids[0]}"] .next-local')).to_be_visible()
    session.shot("jobs-phone")


def test_run_now_reaches_success_with_the_step_output(session: Session, server: LiveServer) -> None:
    job_id = create_job(server, "echo 'hello from the console'; echo second line")
    page = session.login(server.api_key or "", f"/ui/jobs/{job_id}")

    page.get_by_role("button", name="Run now").click()

    expect(page).to_have_url(re.compile(r"/ui/executions/[0-9a-f]+$"))
    expect(page.locator("#status")).to_have_attribute("data-status", "success", timeout=20_000)
    output = page.locator('pre[data-output="main"]')
    expect(output).to_contain_text("hello from the console")
    expect(output).to_contain_text("second line")
    expect(page.locator("svg.chart")).to_be_visible()  # the Gantt
    session.shot("execution")


def test_live_output_then_cancel_stops_the_process_group(
    session: Session, server: LiveServer, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    script = (
        f'echo $$ > "{pid_file}"; i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.2; done'
    )
    job_id = create_job(server, script, timeout_seconds=120)
    started = httpx.post(
        f"{server.base_url}/api/v2/jobs/{job_id}/run?wait=false", headers=server.headers
    )
    execution_id = started.json()["execution_id"]
    page = session.login(server.api_key or "", f"/ui/executions/{execution_id}")

    live = page.locator("#live-output")
    expect(live).to_contain_text("tick 1", timeout=15_000)
    expect(live).to_contain_text("tick 3", timeout=15_000)  # more lines keep coming
    lines = live.inner_text().splitlines()
    assert lines[:3] == ["[main] tick 1", "[main] tick 2", "[main] tick 3"]
    session.shot("execution-live")
    pid = int(pid_file.read_text())
    assert running(pid)

    page.get_by_role("button", name="Cancel").click()

    expect(page.locator("#status")).to_have_attribute("data-status", "cancelled", timeout=20_000)
    deadline = time.monotonic() + 15
    while group_members(pid) or running(pid):
        assert time.monotonic() < deadline, f"process group {pid} still has {group_members(pid)}"
        time.sleep(0.05)
    output = page.locator('pre[data-output="main"]')
    expect(output).to_contain_text("tick 1")  # the output before the cancel is kept
    session.shot("execution-cancelled")


def test_a_read_key_sees_no_actions_and_a_forged_post_is_refused(
    session: Session, server: LiveServer
) -> None:
    job_id = create_job(server, "echo read-only")
    page = session.login(READER_KEY, f"/ui/jobs/{job_id}")

    expect(page.locator("h1")).to_contain_text(job_id)
    expect(page.get_by_role("button", name="Run now")).to_have_count(0)
    expect(page.get_by_role("button", name="Disable")).to_have_count(0)
    page.goto(f"{server.base_url}/ui/jobs?limit=500")
    expect(page.locator(f'tr[data-job="{job_id}"]')).to_be_visible()
    expect(page.locator("button[data-action]")).to_have_count(0)
    session.shot("jobs-read-key")

    # A POST carrying the session cookie but no CSRF token (what a forged form sends).
    forged = session.context.request.post(
        f"{server.base_url}/ui/jobs/{job_id}/disable", form={"back": "/ui/jobs"}
    )
    assert forged.status == 403 and "CSRF" in forged.text()
    assert api_job(server, job_id)["enabled"] is True


def test_admin_disables_and_enables_from_the_jobs_page(
    session: Session, server: LiveServer
) -> None:
    job_id = create_job(server, "echo toggled")
    page = session.login(server.api_key or "", "/ui/jobs?limit=500")
    row = page.locator(f'tr[data-job="{job_id}"]')

    row.get_by_role("button", name="Disable").click()
    expect(row.get_by_role("button", name="Enable")).to_be_visible()
    assert api_job(server, job_id)["enabled"] is False
    row.get_by_role("button", name="Enable").click()
    expect(row.get_by_role("button", name="Disable")).to_be_visible()
    assert api_job(server, job_id)["enabled"] is True


def test_upcoming_shows_the_dst_moved_fire_in_new_york_in_march(
    browser: Browser, server: LiveServer
) -> None:
    job_id = create_job(
        server,
        "echo nightly",
        timezone="America/New_York",
        schedule_config={"type": "cron", "expression": "30 2 * * *"},
    )
    dark = Session(browser, server, color_scheme="dark")
    try:
        page = dark.login(
            server.api_key or "", "/ui/upcoming?from=2027-03-13&hours=48&tz=America/New_York"
        )
        moved = page.locator("tr.moved-row", has_text=job_id)
        expect(moved).to_have_count(1)
        expect(moved).to_contain_text("2027-03-14 03:00:00 EDT")
        expect(moved).to_contain_text("moved by DST gap from 02:30")
        expect(page.locator("tr", has_text=job_id).first).to_contain_text("2027-03-13 02:30:00 EST")
        expect(page.locator(".dst-item", has_text="America/New_York")).to_contain_text(
            "clocks forward 1 h"
        )
        expect(page.locator("svg.chart .dst")).not_to_have_count(0)
        dark.shot("upcoming-dark")
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(18, 21, 27)"  # the dark theme followed the preference
    finally:
        dark.close()


def test_overview_lists_running_now_and_refreshes_itself(
    session: Session, server: LiveServer, tmp_path: Path
) -> None:
    page = session.login(server.api_key or "", "/ui")
    job_id = create_job(server, f'touch "{tmp_path}/started"; sleep 30')
    started = httpx.post(
        f"{server.base_url}/api/v2/jobs/{job_id}/run?wait=false", headers=server.headers
    )
    execution_id = started.json()["execution_id"]
    try:
        # No reload: the running list fetches itself again every few seconds.
        expect(page.locator("#running")).to_contain_text(job_id, timeout=15_000)
        session.shot("overview")
    finally:
        httpx.post(
            f"{server.base_url}/api/v2/executions/{execution_id}/cancel", headers=server.headers
        )
