"""Connection passwords never leave the server: jobs that fail on purpose against connections
with a password (bad SQL, a refused login, an unreachable port, a query stopped by its
timeout), then every response body, every log record (all loggers, DEBUG) and the stored
history (the database file itself) are searched for the password."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy.engine import make_url

from app.main import create_app
from tests.api.helpers import BASE_URL, make_settings

PG_PASSWORD = "S3cr3t-Canary"  # PostgreSQL here trusts local logins: any password connects
MY_PASSWORD = "My-C@nary#2"  # MariaDB's root has no password: this one is refused
CANARIES = [
    PG_PASSWORD,
    MY_PASSWORD,
    quote(MY_PASSWORD, safe=""),
    PG_PASSWORD.encode().hex(),
]
LOGGERS = ["", "app", "sqlalchemy", "asyncpg", "aiomysql", "aiosqlite", "uvicorn", "httpx"]


def with_password(url: str, password: str, port: int | None = None) -> str:
    parsed = make_url(url).set(password=password)
    if port is not None:
        parsed = parsed.set(port=port)
    return parsed.render_as_string(hide_password=False)


def sql_step(step_id: str, connection: str, query: str, **extra: Any) -> dict[str, Any]:
    return {
        "step_id": step_id,
        "type": "sql",
        "connection_name": connection,
        "query": query,
        "continue_on_failure": True,
        **extra,
    }


def assert_no_secret(where: str, text: str) -> None:
    for canary in CANARIES:
        assert canary not in text, f"{canary!r} leaked in {where}: {text[:2000]}"


async def test_passwords_never_leak(
    pg_url: str,
    mariadb_url: str,
    service_database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    connections = {
        "pg": with_password(pg_url, PG_PASSWORD),
        "pg_down": with_password(pg_url, PG_PASSWORD, port=1),
        "maria": {"url": with_password(mariadb_url, MY_PASSWORD), "read_only": True},
        "maria_down": with_password(mariadb_url, MY_PASSWORD, port=1),
    }
    jobs = [
        [
            sql_step("bad_sql", "pg", "SELEC nonsense FROM nowhere"),
            sql_step("missing_table", "pg", "SELECT * FROM no_such_table_here"),
            sql_step("slow", "pg", "SELECT pg_sleep(30)", timeout=1),
            sql_step("bad_param", "pg", "SELECT CAST(:v AS integer)", parameters={"v": "x"}),
        ],
        [
            sql_step("refused_login", "maria", "SELECT 1"),
            sql_step("port_closed", "maria_down", "SELECT 1"),
            sql_step("pg_port_closed", "pg_down", "SELECT 1"),
        ],
    ]
    bodies: list[tuple[str, str]] = []

    async def keep(response: httpx.Response) -> None:
        await response.aread()
        bodies.append((f"{response.request.method} {response.request.url}", response.text))

    application = create_app(make_settings(connections=connections, kill_grace_seconds=1.0))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(
            transport=transport, base_url=BASE_URL, event_hooks={"response": [keep]}
        ) as http:
            ids = []
            for i, steps in enumerate(jobs):
                job = {"job_id": f"leak-{i}", "job_name": "Leak test", "steps": steps}
                response = await http.post("/api/v2/jobs/execute", json=job)
                assert response.status_code == 400, response.text
                result = response.json()
                assert {s["status"] for s in result["steps"]} <= {"failed", "timeout"}, result
                ids.append(result["execution_id"])
            for execution_id in ids:
                await http.get(f"/api/v2/executions/{execution_id}")
            await http.get("/api/v2/executions")
            await http.get("/api/v2/execution/status")
            await http.get("/ready")

    # the failures were real and are explained without the secret
    errors = " ".join(s["error_message"] or "" for _, text in bodies[:2] for s in _steps(text))
    assert "syntax error" in errors
    assert "Access denied" in errors
    assert "timed out" in errors
    for where, text in bodies:
        assert_no_secret(where, text)
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    assert caplog.records, "nothing was logged: the log search would prove nothing"
    for record in caplog.records:
        assert_no_secret(f"log {record.name}", formatter.format(record))
        assert_no_secret(f"log args {record.name}", repr(record.args))
    database = Path(service_database.removeprefix("sqlite+aiosqlite:///"))
    stored = "".join(  # the file itself, and its journal / WAL if any
        path.read_bytes().decode("utf-8", errors="replace")
        for path in database.parent.glob(database.name + "*")
    )
    assert "Access denied" in stored  # the history is in there
    assert_no_secret("stored history", stored)


def _steps(text: str) -> list[dict[str, Any]]:
    body = json.loads(text)
    steps: list[dict[str, Any]] = body.get("steps", [])
    return steps


@pytest.mark.parametrize(
    "raw",
    [
        f'["postgresql+asyncpg://u:{PG_PASSWORD}@h/d"]',  # not an object
        f'{{"db": {{"url": "postgresql+asyncpg://u:{PG_PASSWORD}@h/d", "pool": 1}}}}',
        f'{{"db": "postgresql+psycopg2://u:{PG_PASSWORD}@h/d"}}',  # not an async driver
        f'{{"db": "not a url {PG_PASSWORD}"}}',
    ],
)
def test_bad_connection_settings_do_not_echo_the_password(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.api.deps import build_engine
    from app.settings import Settings

    monkeypatch.setenv("V2_CONNECTIONS", raw)
    with pytest.raises(Exception) as info:
        build_engine(Settings())

    assert_no_secret("the startup error", f"{info.value!s} {info.value!r}")
