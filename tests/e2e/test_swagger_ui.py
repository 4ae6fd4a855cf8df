"""Swagger UI works without the internet: headless Chromium opens /docs on the live server,
enters the API key with the "Authorize" button, runs the example of POST /api/v2/jobs/execute
with "Try it out" / "Execute" and reads a 200 with ``"success": true``; without the key it
reads a 401. No request leaves the loopback interface."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Route, expect, sync_playwright

from tests.e2e.server import LiveServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"headless Chromium not installed at {CHROMIUM} (apt-get install -y chromium)",
)


@pytest.fixture
def page(server: LiveServer) -> Iterator[tuple[Page, list[str]]]:
    """A page whose requests outside loopback are recorded and aborted."""
    outside: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()

            def guard(route: Route) -> None:
                url = urlsplit(route.request.url)
                if url.scheme in ("http", "https", "ws", "wss") and url.hostname not in LOOPBACK:
                    outside.append(route.request.url)
                    route.abort()
                else:
                    route.continue_()

            context.route("**/*", guard)
            yield context.new_page(), outside
        finally:
            browser.close()


def authorize(browser_page: Page, key: str) -> None:
    """Enter ``key`` for the bearer scheme with Swagger UI's Authorize dialog."""
    browser_page.locator(".auth-wrapper button.authorize").click()
    dialog = browser_page.locator(".modal-ux")
    expect(dialog).to_be_visible(timeout=15_000)
    dialog.locator("input").first.fill(key)
    dialog.locator(".auth-btn-wrapper button.authorize").click()
    dialog.locator(".auth-btn-wrapper button.btn-done").click()
    expect(dialog).to_be_hidden()


def try_the_example(browser_page: Page, status: str) -> str:
    """Run execute_job's example with "Try it out"; the live response body once ``status``."""
    operation = browser_page.locator("#operations-jobs-execute_job")
    expect(operation).to_be_visible(timeout=15_000)
    operation.locator(".opblock-summary").first.click()
    operation.get_by_role("button", name="Try it out", exact=True).click()
    operation.get_by_role("button", name="Execute", exact=True).click()
    live = operation.locator(".live-responses-table .response").first
    expect(live.locator(".response-col_status")).to_contain_text(status, timeout=30_000)
    return live.locator(".response-col_description pre").first.inner_text()


def test_try_it_out_executes_the_example_job(
    server: LiveServer, page: tuple[Page, list[str]]
) -> None:
    browser_page, outside = page
    browser_page.goto(f"{server.base_url}/docs")
    assert server.api_key is not None
    expect(browser_page.locator(".auth-wrapper button.authorize")).to_be_visible(timeout=15_000)

    authorize(browser_page, server.api_key)
    body_text = try_the_example(browser_page, "200")

    body = json.loads(body_text)
    assert body["success"] is True
    assert body["status"] == "success"
    assert re.match(r"hello from ", body["steps"][0]["output"])
    assert body["requested_by"] == "e2e-admin"
    assert outside == [], f"requests left the loopback interface: {outside}"


def test_try_it_out_without_the_key_is_401(
    server: LiveServer, page: tuple[Page, list[str]]
) -> None:
    browser_page, outside = page
    browser_page.goto(f"{server.base_url}/docs")

    body = json.loads(try_the_example(browser_page, "401"))

    assert body["status"] == 401
    assert "Authorization: Bearer" in body["detail"]
    assert outside == [], f"requests left the loopback interface: {outside}"
