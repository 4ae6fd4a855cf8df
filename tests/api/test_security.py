"""API keys and scopes: 401 without a valid key, 403 without the scope, the scope hierarchy,
open health probes, the OpenAPI security declarations, the open-mode guard, key
configuration, the execution rate limit and the audit trail (who started, who cancelled)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from app.api.errors import RateLimitedError, install_problem_handling
from app.api.key_cli import main
from app.api.keys import (
    SCOPES,
    ApiKey,
    KeyRing,
    key_digest,
    key_entry,
    new_api_key,
    parse_api_keys,
    read_api_keys,
)
from app.api.open_mode import InsecureBindError, check_bind_address
from app.api.rate_limit import RateLimiter
from app.api.security import AdminKey, ExecutionKey, install_security, route_requirements
from app.domain.errors import ConfigurationError
from app.main import create_app
from tests.api.helpers import (
    BASE_URL,
    assert_problem,
    execution_status,
    make_settings,
    shell_job,
    wait_for,
)

KEYS = {name: new_api_key() for name in ("reader", "runner", "admin", "runner2")}
SCOPE_OF = {"reader": "read", "runner": "run", "admin": "admin", "runner2": "run"}
ENTRIES = [key_entry(KEYS[name], name, [SCOPE_OF[name]]) for name in KEYS]

EXECUTE = "/api/v2/jobs/execute"
SCHEDULE = "/api/v2/jobs/schedule"

# (method, path, body, least scope) of every protected route of routes.py
ROUTES: list[tuple[str, str, Any, str]] = [
    ("POST", EXECUTE, shell_job("sec"), "run"),
    (
        "POST",
        SCHEDULE,
        {"job": shell_job("sec"), "scheduled_time": "2099-01-01T00:00:00Z"},
        "run",
    ),
    ("GET", "/api/v2/executions/nope", None, "read"),
    ("POST", "/api/v2/executions/nope/cancel", None, "run"),
    ("GET", "/api/v2/execution/status", None, "read"),
    ("GET", "/api/v2/steps/types", None, "read"),
]


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture
async def keyed_app(request: pytest.FixtureRequest) -> AsyncIterator[FastAPI]:
    overrides = {"api_keys": ENTRIES, **getattr(request, "param", {})}
    application = create_app(make_settings(**overrides))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def http(keyed_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=keyed_app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        yield client


async def call(
    client: httpx.AsyncClient, method: str, path: str, body: Any, headers: dict[str, str]
) -> httpx.Response:
    return await client.request(method, path, json=body, headers=headers)


# -- authentication ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "body"), [r[:3] for r in ROUTES], ids=[r[1] for r in ROUTES]
)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer jsv2_not-a-key"},
        {"Authorization": f"Basic {KEYS['admin']}"},
        {"Authorization": "Bearer"},
        {"Authorization": KEYS["admin"]},
    ],
    ids=["none", "wrong key", "basic scheme", "empty bearer", "no scheme"],
)
async def test_no_valid_key_is_401_problem_with_a_bearer_challenge(
    http: httpx.AsyncClient, method: str, path: str, body: Any, headers: dict[str, str]
) -> None:
    response = await call(http, method, path, body, headers)

    problem = assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in problem["detail"] or "not valid" in problem["detail"]
    assert KEYS["admin"] not in response.text


async def test_a_wrong_key_is_flagged_invalid_token(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/v2/steps/types", headers={"Authorization": "Bearer x"})

    assert_problem(response, 401)
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_auth_is_checked_before_the_body(http: httpx.AsyncClient) -> None:
    response = await http.post(EXECUTE, json={"not": "a job"})

    assert_problem(response, 401)


@pytest.mark.parametrize(("method", "path", "body", "needed"), ROUTES, ids=[r[1] for r in ROUTES])
@pytest.mark.parametrize("name", ["reader", "runner", "admin"])
async def test_scopes_nest_admin_run_read(
    http: httpx.AsyncClient, method: str, path: str, body: Any, needed: str, name: str
) -> None:
    response = await call(http, method, path, body, auth(name))

    if SCOPES.index(SCOPE_OF[name]) >= SCOPES.index(needed):
        assert response.status_code not in (401, 403), response.text
    else:
        problem = assert_problem(response, 403)
        assert f"{needed!r} scope" in problem["detail"]
        assert name in problem["detail"]


@pytest.mark.parametrize("path", ["/health", "/ready", "/docs", "/openapi.json"])
async def test_probes_and_docs_stay_open(http: httpx.AsyncClient, path: str) -> None:
    response = await http.get(path)

    assert response.status_code == 200, response.text


async def test_stored_job_routes_are_protected_too(http: httpx.AsyncClient) -> None:
    """The job-definition routes get read / run / admin by method where they declare none."""
    job = shell_job("stored-sec")

    assert_problem(await http.get("/api/v2/jobs"), 401)
    assert (await http.get("/api/v2/jobs", headers=auth("reader"))).status_code == 200
    assert_problem(await http.post("/api/v2/jobs", json=job, headers=auth("runner")), 403)
    created = await http.post("/api/v2/jobs", json=job, headers=auth("admin"))
    assert created.status_code == 201, created.text
    assert_problem(await http.post("/api/v2/jobs/stored-sec/run", headers=auth("reader")), 403)
    ran = await http.post("/api/v2/jobs/stored-sec/run", headers=auth("runner"))
    assert ran.status_code == 200, ran.text
    assert_problem(await http.delete("/api/v2/jobs/stored-sec", headers=auth("runner")), 403)
    assert (await http.delete("/api/v2/jobs/stored-sec", headers=auth("admin"))).status_code == 204


def test_every_api_route_requires_a_key(keyed_app: FastAPI) -> None:
    requirements = route_requirements(keyed_app.routes)

    api_routes = {k: v for k, v in requirements.items() if k[1].startswith("/api/")}
    assert api_routes
    assert [k for k, (guarded, _) in api_routes.items() if not guarded] == []
    assert requirements[("get", "/health")] == (False, False)
    assert requirements[("get", "/ready")] == (False, False)


# -- OpenAPI ----------------------------------------------------------------------------------
def test_openapi_declares_the_bearer_scheme_and_the_answers(keyed_app: FastAPI) -> None:
    document = keyed_app.openapi()

    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            if path.startswith("/api/"):
                assert operation["security"] == [{"bearerAuth": []}], (method, path)
                assert {"401", "403"} <= set(responses), (method, path)
                assert "WWW-Authenticate" in responses["401"]["headers"]
                for status in ("401", "403"):
                    content = responses[status]["content"]["application/problem+json"]
                    assert content["schema"] == {"$ref": "#/components/schemas/Problem"}
            else:
                assert "security" not in operation, path
    for method, path in [
        ("post", EXECUTE),
        ("post", SCHEDULE),
        ("post", "/api/v2/jobs/{job_id}/run"),
    ]:
        responses = document["paths"][path][method]["responses"]
        assert "Retry-After" in responses["429"]["headers"], path
    assert "429" not in document["paths"]["/api/v2/executions/{execution_id}"]["get"]["responses"]


# -- open mode --------------------------------------------------------------------------------
async def test_open_mode_serves_loopback_clients_only(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    for host, expected in (("127.0.0.1", 200), ("::1", 200), ("192.0.2.7", 403)):
        transport = httpx.ASGITransport(app=app, client=(host, 5000))
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            response = await client.get("/api/v2/steps/types")
        assert response.status_code == expected, (host, response.text)
        if expected == 403:
            assert "V2_API_KEYS" in assert_problem(response, 403)["detail"]


def test_open_mode_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        create_app(make_settings())

    assert any("no API keys configured" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "example.org", ""])
def test_open_mode_refuses_to_bind_beyond_loopback(host: str) -> None:
    with pytest.raises(InsecureBindError, match="V2_API_KEYS"):
        create_app(make_settings(host=host))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "localhost"])
def test_loopback_needs_no_keys(host: str) -> None:
    check_bind_address(host, keys_configured=False)


def test_any_address_with_keys() -> None:
    create_app(make_settings(host="0.0.0.0", api_keys=ENTRIES))


# -- key configuration ------------------------------------------------------------------------
def test_keys_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(ENTRIES))

    keys = read_api_keys(None, path)

    assert [k.id for k in keys] == list(KEYS)
    assert KeyRing(keys).authenticate(KEYS["runner"]) == ApiKey("runner", frozenset({"run"}))


async def test_the_app_reads_the_key_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(ENTRIES[:1]))
    application = create_app(make_settings(api_keys_file=path))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            assert (await client.get("/api/v2/steps/types")).status_code == 401
            ok = await client.get("/api/v2/steps/types", headers=auth("reader"))
            assert ok.status_code == 200


def test_both_key_sources_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("[]")
    with pytest.raises(ConfigurationError, match="not both"):
        read_api_keys(ENTRIES, path)


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"id": "a b", "key_sha256": "0" * 64, "scopes": ["read"]}, "V2_API_KEYS[0].id"),
        ({"id": "schedule", "key_sha256": "0" * 64, "scopes": ["read"]}, "V2_API_KEYS[0].id"),
        ({"id": "a", "key_sha256": "xyz", "scopes": ["read"]}, "V2_API_KEYS[0].key_sha256"),
        ({"id": "a", "key_sha256": "0" * 64, "scopes": ["root"]}, "V2_API_KEYS[0].scopes"),
        ({"id": "a", "key_sha256": "0" * 64, "scopes": []}, "V2_API_KEYS[0].scopes"),
        ({"id": "a", "key_sha256": "0" * 64, "scopes": ["read"], "key": "x"}, "V2_API_KEYS[0]"),
    ],
)
def test_bad_key_entries_are_named(entry: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_api_keys([entry])

    assert field in [e.field for e in info.value.errors]
    assert "0" * 64 not in str(info.value)


def test_duplicate_ids_and_keys_are_refused() -> None:
    entry = ENTRIES[0]
    with pytest.raises(ConfigurationError, match="duplicate id"):
        parse_api_keys([entry, {**entry, "key_sha256": "1" * 64}])
    with pytest.raises(ConfigurationError, match="listed twice"):
        parse_api_keys([entry, {**entry, "id": "other"}])


def test_an_invalid_key_list_stops_the_app() -> None:
    with pytest.raises(ConfigurationError, match="V2_API_KEYS"):
        create_app(make_settings(api_keys=[{"id": "x"}]))


def test_keys_are_compared_as_digests() -> None:
    ring = KeyRing(parse_api_keys(ENTRIES))

    assert ring.authenticate(KEYS["admin"]) is not None
    assert ring.authenticate(key_digest(KEYS["admin"])) is None  # the digest is not a key
    assert ring.authenticate(KEYS["admin"] + "x") is None
    assert ring.authenticate("") is None


def test_make_api_key_prints_a_key_and_a_matching_entry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--id", "ci-bot", "--scopes", "read,run"]) == 0

    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    key = lines[1]
    entry = json.loads(lines[3])
    assert key.startswith("jsv2_") and len(key) >= 40
    assert entry == {"id": "ci-bot", "key_sha256": key_digest(key), "scopes": ["read", "run"]}
    assert KeyRing(parse_api_keys([entry])).authenticate(key) is not None


# -- rate limit -------------------------------------------------------------------------------
RATE_2 = {"rate_limit_per_minute": 2}


@pytest.mark.parametrize("keyed_app", [RATE_2], indirect=True)
async def test_executions_per_key_per_minute(http: httpx.AsyncClient) -> None:
    for i in range(2):
        ok = await http.post(EXECUTE, json=shell_job(f"rl-{i}"), headers=auth("runner"))
        assert ok.status_code == 200, ok.text

    refused = await http.post(EXECUTE, json=shell_job("rl-3"), headers=auth("runner"))
    scheduled = await http.post(
        SCHEDULE,
        json={"job": shell_job("rl-4"), "scheduled_time": "2099-01-01T00:00:00Z"},
        headers=auth("runner"),
    )

    for response in (refused, scheduled):
        problem = assert_problem(response, 429)
        assert "2 executions per minute" in problem["detail"]
        assert 1 <= int(response.headers["retry-after"]) <= 60
    # reads are not counted; other keys have their own budget
    assert (await http.get("/api/v2/execution/status", headers=auth("runner"))).status_code == 200
    other = await http.post(EXECUTE, json=shell_job("rl-5"), headers=auth("runner2"))
    assert other.status_code == 200, other.text


@pytest.mark.parametrize("keyed_app", [RATE_2], indirect=True)
async def test_refused_requests_do_not_count(http: httpx.AsyncClient) -> None:
    for _ in range(5):
        bad = await http.post(
            EXECUTE, json=shell_job("bad", timezone="Mars/X"), headers=auth("runner")
        )
        assert_problem(bad, 400)
    for i in range(2):
        ok = await http.post(EXECUTE, json=shell_job(f"ok-{i}"), headers=auth("runner"))
        assert ok.status_code == 200, ok.text
    assert_problem(await http.post(EXECUTE, json=shell_job("x"), headers=auth("runner")), 429)


@pytest.mark.parametrize("settings", [RATE_2], indirect=True)
async def test_open_mode_limits_per_client_address(app: FastAPI) -> None:
    async def execute(host: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(host, 5000))
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            return await client.post(EXECUTE, json=shell_job("open-rl"))

    assert [(await execute("127.0.0.1")).status_code for _ in range(3)] == [200, 200, 429]
    assert (await execute("127.0.0.2")).status_code == 200


def test_the_window_slides() -> None:
    now = [1000.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    limiter.acquire("k")
    now[0] += 30
    limiter.acquire("k")
    with pytest.raises(RateLimitedError) as info:
        limiter.acquire("k")
    assert info.value.retry_after == 30
    now[0] += 30.5
    limiter.acquire("k")  # the first start left the window
    with pytest.raises(RateLimitedError):
        limiter.acquire("k")
    assert RateLimiter(0).acquire("k") is None  # 0: no limit


# -- audit ------------------------------------------------------------------------------------
async def stored_metadata(app: FastAPI, execution_id: str) -> dict[str, Any]:
    stored = await app.state.job_api.engine.store.get_execution(execution_id)
    assert stored is not None
    metadata: dict[str, Any] = stored.metadata
    return metadata


async def test_the_key_that_started_an_execution_is_recorded(
    http: httpx.AsyncClient, keyed_app: FastAPI
) -> None:
    response = await http.post(EXECUTE, json=shell_job("audit"), headers=auth("runner"))

    body = response.json()
    assert body["requested_by"] == "runner"
    status = await execution_status_as(http, body["execution_id"], "reader")
    assert status["requested_by"] == "runner"
    assert status["metadata"]["requested_by"] == "runner"
    assert (await stored_metadata(keyed_app, body["execution_id"]))["requested_by"] == "runner"
    history = await http.get("/api/v2/executions", headers=auth("reader"))
    assert history.json()["items"][0]["requested_by"] == "runner"
    for response_text in (response.text, history.text):
        assert not any(key in response_text for key in KEYS.values())
        assert not any(key_digest(key) in response_text for key in KEYS.values())


async def execution_status_as(
    client: httpx.AsyncClient, execution_id: str, name: str
) -> dict[str, Any]:
    response = await client.get(f"/api/v2/executions/{execution_id}", headers=auth(name))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_cancelling_a_scheduled_run_records_who(
    http: httpx.AsyncClient, keyed_app: FastAPI
) -> None:
    when = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    scheduled = await http.post(
        SCHEDULE, json={"job": shell_job("audit-s"), "scheduled_time": when}, headers=auth("runner")
    )
    execution_id = scheduled.json()["execution_id"]

    cancelled = await http.post(f"/api/v2/executions/{execution_id}/cancel", headers=auth("admin"))

    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert (body["status"], body["requested_by"], body["cancelled_by"]) == (
        "cancelled",
        "runner",
        "admin",
    )
    metadata = await stored_metadata(keyed_app, execution_id)
    assert (metadata["requested_by"], metadata["cancelled_by"]) == ("runner", "admin")


async def test_cancelling_a_running_execution_records_who(
    http: httpx.AsyncClient, keyed_app: FastAPI
) -> None:
    started = await http.post(
        EXECUTE,
        params={"wait": "false"},
        json=shell_job("audit-r", "sleep 30"),
        headers=auth("runner"),
    )
    execution_id = started.json()["execution_id"]
    await wait_for(
        lambda: execution_status_as(http, execution_id, "reader"),
        lambda e: e["status"] == "running",
    )

    cancelled = await http.post(
        f"/api/v2/executions/{execution_id}/cancel", headers=auth("runner2")
    )

    assert cancelled.json()["cancelled_by"] == "runner2"
    assert cancelled.json()["requested_by"] == "runner"
    assert (await stored_metadata(keyed_app, execution_id))["cancelled_by"] == "runner2"


async def test_open_mode_records_no_key(client: httpx.AsyncClient) -> None:
    response = await client.post(EXECUTE, json=shell_job("open-audit"))

    assert response.json()["requested_by"] is None
    assert (await execution_status(client, response.json()["execution_id"]))["cancelled_by"] is None


@pytest.mark.parametrize("keyed_app", [{"rate_limit_per_minute": 1}], indirect=True)
async def test_running_a_stored_job_counts_too(http: httpx.AsyncClient) -> None:
    created = await http.post("/api/v2/jobs", json=shell_job("rl-stored"), headers=auth("admin"))
    assert created.status_code == 201, created.text
    missing = await http.post("/api/v2/jobs/nope/run", headers=auth("runner"))
    assert_problem(missing, 404)  # refused: not counted

    first = await http.post("/api/v2/jobs/rl-stored/run", headers=auth("runner"))
    second = await http.post("/api/v2/jobs/rl-stored/run", headers=auth("runner"))

    assert first.status_code == 200, first.text
    assert_problem(second, 429)
    assert "retry-after" in second.headers


async def test_each_route_declares_its_scope() -> None:
    """A route's scope is what it declares: an admin-only GET, a rate-limited run route."""
    router = APIRouter(prefix="/api/v2")

    @router.get("/things")
    async def list_things(_: AdminKey) -> dict[str, str]:
        return {}

    @router.post("/things/{thing}/run")
    async def run_thing(thing: str, _: ExecutionKey) -> dict[str, str]:
        return {}

    @router.get("/open")
    async def open_thing() -> dict[str, str]:
        return {}

    application = FastAPI()
    install_security(application, parse_api_keys(ENTRIES), rate_limit_per_minute=1)
    install_problem_handling(application, max_body_bytes=4096)
    application.include_router(router)
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        assert_problem(await client.get("/api/v2/things", headers=auth("reader")), 403)
        assert (await client.get("/api/v2/things", headers=auth("admin"))).status_code == 200
        assert_problem(await client.post("/api/v2/things/a/run", headers=auth("reader")), 403)
        ran = await client.post("/api/v2/things/a/run", headers=auth("runner"))
        assert ran.status_code == 200
        assert_problem(await client.post("/api/v2/things/a/run", headers=auth("runner")), 429)
    requirements = route_requirements(application.routes)
    assert requirements[("post", "/api/v2/things/{thing}/run")] == (True, True)
    assert requirements[("get", "/api/v2/things")] == (True, False)
    assert requirements[("get", "/api/v2/open")] == (False, False)
