"""Run tokens bound as SQL parameters on PostgreSQL, MariaDB and SQLite: each token is a
bound value (a hostile ``requested_by`` is stored as text, never run), stored and read back."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from app.domain import JobDefinition, StepStatus
from app.steps import ConnectionRegistry, ExecutionContext, StepFactory, StepResources

_URL_FIXTURE = {"postgresql": "pg_url", "mariadb": "mariadb_url", "sqlite": "sqlite_url"}
HOSTILE = "o'brien'); DROP TABLE victims; --"


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def db_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(_URL_FIXTURE[request.param]))


@pytest.fixture
async def registry(db_url: str) -> AsyncIterator[ConnectionRegistry]:
    reg = ConnectionRegistry({"db": db_url})
    yield reg
    await reg.dispose()


async def test_tokens_are_bound_as_sql_parameters(registry: ConnectionRegistry) -> None:
    table = f"t_{uuid.uuid4().hex[:12]}"
    async with registry.get_engine("db").begin() as conn:
        await conn.execute(
            text(
                f"CREATE TABLE {table} (eid VARCHAR(64), d VARCHAR(10), "
                "at_utc VARCHAR(40), who VARCHAR(100), attempt INTEGER)"
            )
        )
        await conn.execute(text("CREATE TABLE IF NOT EXISTS victims (n INTEGER)"))
    job = JobDefinition(job_id="load-day", job_name="Load the day", timezone="Europe/London")
    ctx = ExecutionContext(
        job, "exec-1", resources=StepResources(connections=registry), requested_by=HOSTILE
    )
    ctx.trigger = "schedule"
    ctx.scheduled_for = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 01:30 GMT, after the DST end
    ctx.attempt = 2
    step = StepFactory.create_step(
        {
            "step_id": "insert",
            "type": "sql",
            "connection_name": "db",
            "query": f"INSERT INTO {table} (eid, d, at_utc, who, attempt) "
            "VALUES (:eid, :d, :at, :who, :attempt)",
            "parameters": {
                "eid": {"$from": "run.execution_id"},
                "d": {"$from": "run.logical_date"},
                "at": {"$from": "run.scheduled_for"},
                "who": {"$from": "run.requested_by"},
                "attempt": {"$from": "run.attempt"},
            },
        },
        ctx,
    )
    result = await step.run()
    assert result.status is StepStatus.SUCCESS, result.error_message
    try:
        async with registry.get_engine("db").begin() as conn:
            rows = (
                await conn.execute(text(f"SELECT eid, d, at_utc, who, attempt FROM {table}"))
            ).all()
            assert [tuple(r) for r in rows] == [
                ("exec-1", "2026-10-25", "2026-10-25T01:30:00Z", HOSTILE, 2)
            ]
            # The quote in requested_by closed nothing: the other table is still there.
            assert (await conn.execute(text("SELECT count(*) FROM victims"))).scalar() is not None
    finally:
        async with registry.get_engine("db").begin() as conn:
            await conn.execute(text(f"DROP TABLE {table}"))
