"""The group-commit writer's driver path (``app.persistence.history``) on SQLite and
PostgreSQL: it stores exactly what SQLAlchemy's ``Connection.execute`` of the same history
statements stores, column by column as the database holds them, and its errors are the ones
``Connection.execute`` raises, classified transient or not alike."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.domain.enums import JobStatus, StepStatus
from app.domain.models import JobExecutionResult, StepExecutionResult
from app.domain.notifications import OutboxMessage
from app.persistence import SqlExecutionStore
from app.persistence.convert import job_values, step_values
from app.persistence.history import HistoryRow, driver_statement, history_groups, write_history
from app.persistence.outbox import outbox_params
from app.persistence.repositories import (
    history_statement,
    job_params,
    pending_params,
    started_params,
    step_execution_id,
    step_params,
)
from app.persistence.writer import QueuedRow
from app.sqlpool import is_transient

OWNER = "node-a"
#: Columns that only a Python-side column default fills (from the clock) in these rows.
CLOCK_DEFAULTS = {"created_at", "updated_at"}
SQLITE_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")


@pytest.fixture
async def store(migrated_db_url: str) -> AsyncIterator[SqlExecutionStore]:
    store = SqlExecutionStore(migrated_db_url, owner=OWNER)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
def engine(store: SqlExecutionStore) -> AsyncEngine:
    return store.engine


def _rows(prefix: str, now: datetime) -> list[HistoryRow]:
    """One of each history write, with values that need converting (times in another
    zone, a whole second, text beyond ASCII, floats)."""
    east = timezone(timedelta(hours=5, minutes=30))
    run, queued = f"{prefix}-run", f"{prefix}-queued"

    def pending(execution_id: str) -> dict[str, Any]:
        return pending_params(
            {
                "execution_id": execution_id,
                "job_id": "job-é",
                "job_name": "Jöb ✓",
                "timezone": "Asia/Kolkata",
                "metadata_json": '{"trigger":"now"}',
                "trigger": "now",
                "scheduled_for": datetime(2026, 3, 1, 9, 0, tzinfo=east),
                "requested_by": "ops",
                "job_definition_json": '{"job_id":"job-\\u00e9"}',
                "owner": OWNER,
            }
        )

    job = JobExecutionResult(
        execution_id=run,
        job_id="job-é",
        job_name="Jöb ✓",
        status=JobStatus.SUCCESS,
        timezone="Asia/Kolkata",
        start_time=datetime(2026, 3, 1, 9, 0, 1, tzinfo=east),
        end_time=datetime(2026, 3, 1, 3, 30, 2, 250_001, tzinfo=UTC),
        duration_seconds=1.250001,
        error_message="no error ✓",
        retry_count=2,
        metadata={"trigger": "now", "nested": {"k": [1, 2.5, None]}},
    )
    step = StepExecutionResult(
        step_id="s1",
        step_name="Step ✓",
        step_type="shell",
        status=StepStatus.SUCCESS,
        start_time=datetime(2026, 3, 1, 3, 30, 1, tzinfo=UTC),
        end_time=datetime(2026, 3, 1, 9, 0, 2, 999_999, tzinfo=east),
        duration_seconds=1.999999,
        output="line 1\nlïne 2\t\\",
        metadata={"exit_code": 0},
    )
    job_row = job_params(job_values(job), OWNER, 0)
    step_row = step_params(run, 0, step_values(step), OWNER, 0)
    outbox = outbox_params(
        OutboxMessage(
            delivery_id=f"{prefix}-d1",
            event_id=f"{prefix}-e1",
            event="succeeded",
            channel="webhook",
            destination={"url": "http://127.0.0.1:9/hook"},
            job_id="job-é",
            execution_id=run,
            payload={"status": "success", "ü": 1},
        )
    )
    for params in (job_row, step_row, outbox):
        params["created_at"] = params["updated_at"] = now
    outbox["next_attempt_at"] = now
    return [
        ("pending", pending(queued)),  # alone: its created_at comes from the column default
        ("pending", pending(run)),
        ("job", job_row),
        ("step", step_row),
        ("outbox", outbox),
        ("started", started_params(run, OWNER, 0)),
    ]


async def _sqlalchemy_write(engine: AsyncEngine, rows: list[HistoryRow]) -> None:
    """The same batch through ``Connection.execute`` (what the store did before)."""
    on_postgresql = engine.dialect.name == "postgresql"
    async with engine.begin() as conn:
        for kind, columns, group in history_groups(rows):
            await conn.execute(history_statement(on_postgresql, kind, columns), group)


async def _store_write(store: SqlExecutionStore, rows: list[HistoryRow]) -> None:
    """The store's own path: the sqlite3 thread on a SQLite file; on PostgreSQL a
    transaction, or autocommit for a batch of one statement."""
    await store._write_history_rows([QueuedRow(kind, params) for kind, params in rows])


async def _stored(engine: AsyncEngine, table: str, prefix: str) -> list[dict[str, Any]]:
    """Rows of ``table`` as the driver reads them back (no SQLAlchemy type processing),
    with ``prefix`` taken out of the ids."""
    key = {"notification_outbox_v2": "delivery_id"}.get(table, "execution_id")
    ids = {step_execution_id(f"{prefix}-run", 0, "s1"): "*"}
    async with engine.connect() as conn:
        result = await conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY {key}")
        rows = [dict(row._mapping) for row in result]
    out = []
    for row in rows:
        if not str(row[key]).startswith(prefix):
            continue
        row = {k: ids.get(v, v) if isinstance(v, str) else v for k, v in row.items()}
        out.append({k: v.replace(prefix, "*") if isinstance(v, str) else v for k, v in row.items()})
    return out


async def test_the_driver_path_stores_what_sqlalchemy_stores(
    store: SqlExecutionStore, engine: AsyncEngine
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)  # a whole second: the format keeps .000000
    for prefix in ("sa", "drv"):
        rows = _rows(prefix, now)
        steps = [row for row in rows if row[0] == "step"]  # then a batch of one statement
        for batch in ([row for row in rows if row[0] != "step"], steps):
            if prefix == "sa":
                await _sqlalchemy_write(engine, batch)
            else:
                await _store_write(store, batch)

    for table in ("job_executions_v2", "step_executions_v2", "notification_outbox_v2"):
        expected, got = await _stored(engine, table, "sa"), await _stored(engine, table, "drv")
        assert len(got) == len(expected) > 0, table
        for want, have in zip(expected, got, strict=True):
            if want.get("execution_id") == "*-queued":
                for column in CLOCK_DEFAULTS:  # filled at execution: same kind of value
                    a, b = want.pop(column), have.pop(column)
                    if isinstance(a, str):
                        assert SQLITE_TIME.fullmatch(a) and SQLITE_TIME.fullmatch(b)
                    else:
                        assert a.tzinfo is not None and b.tzinfo is not None
            assert have == want, table
    if engine.dialect.name == "sqlite":  # what SQLite stores for a time: naive UTC text
        async with engine.connect() as conn:
            start = await conn.scalar(
                text("SELECT start_time FROM job_executions_v2 WHERE execution_id = 'drv-run'")
            )
        assert start == "2026-03-01 03:30:01.000000"


async def test_a_driver_error_is_raised_and_classified_as_before(
    store: SqlExecutionStore, engine: AsyncEngine
) -> None:
    now = datetime.now(UTC)
    errors = []
    for prefix in ("sa", "drv"):
        rows = _rows(prefix, now)[2:3]  # the job row alone, with no job name
        rows[0][1]["job_name"] = None
        with pytest.raises(IntegrityError) as caught:
            if prefix == "sa":
                await _sqlalchemy_write(engine, rows)
            else:
                await _store_write(store, rows)
        errors.append(caught.value)
    assert [type(e) for e in errors[1:]] == [type(errors[0])]
    assert not any(is_transient(e) for e in errors)
    assert type(errors[1].orig) is type(errors[0].orig)


async def test_a_lost_connection_is_transient_and_replaced(
    store: SqlExecutionStore, engine: AsyncEngine
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("a server that drops the connection")
    now = datetime.now(UTC)
    for prefix in ("sa", "drv"):
        async with engine.connect() as conn:
            pid = await conn.scalar(text("SELECT pg_backend_pid()"))
            async with engine.connect() as admin:
                await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                await admin.commit()
            with pytest.raises(DBAPIError) as caught:
                groups = history_groups(_rows(prefix, now))
                if prefix == "sa":
                    for kind, columns, group in groups:
                        await conn.execute(history_statement(True, kind, columns), group)
                else:
                    await write_history(conn, groups)
            assert caught.value.connection_invalidated, prefix
            assert is_transient(caught.value), prefix
            assert conn.invalidated, prefix
    # the pool hands out a working connection again and the batch is written
    await _store_write(store, _rows("again", now))
    assert len(await _stored(engine, "job_executions_v2", "again")) == 2


async def _plan(engine: AsyncEngine, rows: list[HistoryRow]) -> str:
    """PostgreSQL's plan of the one history statement ``rows`` make, for their first row's
    values (a custom plan, as the writer's first executions get)."""
    [(kind, columns, group)] = history_groups(rows)
    statement = driver_statement(engine.dialect, kind, columns)
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        found = await driver.fetch("EXPLAIN " + statement.sql, *statement.args(group)[0])
    return "\n".join(r[0] for r in found)


async def test_a_step_write_reads_its_job_row_by_key(
    store: SqlExecutionStore, engine: AsyncEngine
) -> None:
    """The fence of a step row's write looks its job row up by key. With the fence in the
    lookup's WHERE clause, PostgreSQL (a table without statistics yet, the costs tied)
    took the (owner, status) index and read every row the node owns, once per step row:
    the service slowed down as its history grew."""
    if engine.dialect.name != "postgresql":
        pytest.skip("a question for PostgreSQL's planner")
    now = datetime.now(UTC)
    for n in range(50):  # job rows this node owns
        await _store_write(store, [row for row in _rows(f"own{n}", now) if row[0] == "job"])
    plan = await _plan(engine, [row for row in _rows("probe", now) if row[0] == "step"])
    assert "pk_job_executions_v2" in plan, plan
    assert "owner_status" not in plan, plan


async def test_a_dispatched_run_is_found_by_key(
    store: SqlExecutionStore, engine: AsyncEngine
) -> None:
    """Marking a claimed run dispatched looks it up by key: with its claim as plain
    conditions PostgreSQL (no statistics yet) took the (status, scheduled_for) index and
    read every claimed run, once per run dispatched."""
    if engine.dialect.name != "postgresql":
        pytest.skip("a question for PostgreSQL's planner")
    now = datetime.now(UTC)
    for n in range(50):
        await _store_write(store, [row for row in _rows(f"run{n}", now) if row[0] == "job"])
    async with engine.begin() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO scheduled_runs_v2 (execution_id, job_id, scheduled_for, status, "
            "attempt, lease_owner, job_definition_json, trigger, created_at, timezone) "
            "SELECT execution_id, job_id, now(), 'claimed', 1, $1, '{}', 'scheduled', now(), "
            "'UTC' "
            "FROM job_executions_v2",
            (OWNER,),
        )
    plan = await _plan(engine, [("started", started_params("run7-run", OWNER, 1))])
    assert "pk_scheduled_runs_v2" in plan, plan
    assert "status_scheduled_for" not in plan, plan
