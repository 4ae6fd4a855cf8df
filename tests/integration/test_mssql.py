"""SQL steps against SQL Server.

There is no SQL Server on the project's machines. Two kinds of tests live here:

* the driver path up to the network, which always runs: unixODBC, FreeTDS (Debian's
  ``tdsodbc``), pyodbc, aioodbc and SQLAlchemy really try to log in to a loopback port where
  nothing listens, and the step fails with one clear line;
* the behaviour on a real server, which runs when ``V2_TEST_MSSQL_URL`` is set (an
  ``mssql+aioodbc://`` URL of a login that may create tables and read
  ``sys.dm_exec_requests``, e.g. ``mssql+aioodbc://sa:...@127.0.0.1:1433/tempdb?driver=FreeTDS``)
  and is skipped with that reason otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pyodbc
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.domain import JobDefinition, StepExecutionResult, StepStatus
from app.steps import ConnectionRegistry, ExecutionContext, StepFactory, StepResources

MSSQL_URL = os.environ.get("V2_TEST_MSSQL_URL", "")
needs_server = pytest.mark.skipif(
    not MSSQL_URL, reason="V2_TEST_MSSQL_URL is not set: no SQL Server to run against"
)


class Runner:
    def __init__(self, registry: ConnectionRegistry) -> None:
        self.registry = registry

    def step(self, query: str, connection: str = "ms", **config: Any) -> Any:
        cfg = {"step_id": "s", "type": "sql", "connection_name": connection, "query": query}
        job = JobDefinition(job_id="mssql", job_name="SQL Server")
        resources = StepResources(connections=self.registry, kill_grace_seconds=2.0)
        ctx = ExecutionContext(job, f"e-{uuid.uuid4().hex[:8]}", resources=resources)
        return StepFactory.create_step({**cfg, **config}, ctx)

    async def run(self, query: str, connection: str = "ms", **config: Any) -> StepExecutionResult:
        result: StepExecutionResult = await self.step(query, connection, **config).run()
        return result


# -- the driver path, up to a port where nothing listens ----------------------------------------


def closed_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(
    "FreeTDS" not in pyodbc.drivers(),
    reason="the FreeTDS ODBC driver is not registered (apt-get install unixodbc tdsodbc)",
)
async def test_a_sql_server_that_is_not_there_fails_the_step_with_one_clear_line() -> None:
    port = closed_loopback_port()
    url = f"mssql+aioodbc://jobs:S3cret-pw@127.0.0.1:{port}/sales?driver=FreeTDS&LoginTimeout=5"
    registry = ConnectionRegistry({"ms": url})
    try:
        result = await Runner(registry).run("SELECT 1 AS one\nGO\nSELECT 2 AS two")
    finally:
        await registry.dispose()

    assert result.status is StepStatus.FAILED
    message = result.error_message or ""
    assert message.startswith("OperationalError: [FreeTDS][SQL Server]Unable to connect"), message
    assert message.endswith("[SQLSTATE 08S01]")
    assert "S3cret-pw" not in message
    assert result.metadata["dialect"] == "mssql"


# -- a real server ---------------------------------------------------------------------------------


@pytest.fixture
async def admin() -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(MSSQL_URL, isolation_level="AUTOCOMMIT")
    yield engine
    await engine.dispose()


@pytest.fixture
async def ms() -> AsyncIterator[Runner]:
    registry = ConnectionRegistry({"ms": MSSQL_URL, "ro": {"url": MSSQL_URL, "read_only": True}})
    yield Runner(registry)
    await registry.dispose()


@pytest.fixture
async def table(admin: AsyncEngine) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    async with admin.connect() as conn:
        await conn.exec_driver_sql(f"CREATE TABLE {name} (id int PRIMARY KEY, v nvarchar(100))")
    yield name
    async with admin.connect() as conn:
        await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


async def ids(admin: AsyncEngine, table: str) -> list[int]:
    async with admin.connect() as conn:
        rows = (await conn.execute(text(f"SELECT id FROM {table} ORDER BY id"))).all()
    return [int(r[0]) for r in rows]


@needs_server
async def test_select(ms: Runner) -> None:
    result = await ms.run("SELECT 1 AS one, N'Zoë' AS name")

    assert result.status is StepStatus.SUCCESS, result.error_message
    assert result.output == '[{"one":1,"name":"Zoë"}]'


@needs_server
async def test_bound_parameters(ms: Runner) -> None:
    hostile = "x'; DROP TABLE nothing; --"

    result = await ms.run(
        "SELECT :v AS v, :n AS n WHERE 2 IN (:ids)",
        parameters={"v": hostile, "n": 7, "ids": [1, 2]},
    )

    assert result.status is StepStatus.SUCCESS, result.error_message
    assert result.output == '[{"v":"x\'; DROP TABLE nothing; --","n":7}]'


@needs_server
async def test_go_batches_run_in_one_transaction(
    ms: Runner, admin: AsyncEngine, table: str
) -> None:
    result = await ms.run(
        f"INSERT INTO {table} (id) VALUES (1)\nGO\n"
        f"INSERT INTO {table} (id) SELECT MAX(id) + 1 FROM {table}\nGO 2\n"
        f"SELECT COUNT(*) AS n, @@TRANCOUNT AS open_transactions FROM {table}"
    )

    assert result.status is StepStatus.SUCCESS, result.error_message
    (row,) = json.loads(result.output or "[]")
    assert row["n"] == 3
    assert row["open_transactions"] >= 1  # still inside the step's transaction
    assert await ids(admin, table) == [1, 2, 3]


@needs_server
async def test_a_failing_batch_rolls_all_of_them_back(
    ms: Runner, admin: AsyncEngine, table: str
) -> None:
    result = await ms.run(
        f"INSERT INTO {table} (id) VALUES (1)\nGO\nINSERT INTO {table} (id) VALUES (1)\nGO\n"
        f"INSERT INTO {table} (id) VALUES (3)"
    )

    assert result.status is StepStatus.FAILED
    assert (result.error_message or "").startswith("batch 2 of 3 (line 3): IntegrityError")
    assert await ids(admin, table) == []


@needs_server
async def test_an_error_in_a_later_statement_of_a_batch_rolls_back(
    ms: Runner, admin: AsyncEngine, table: str
) -> None:
    result = await ms.run(f"INSERT INTO {table} (id) VALUES (1); SELECT 1 / 0 AS boom")

    assert result.status is StepStatus.FAILED
    assert "Divide by zero" in (result.error_message or "")
    assert await ids(admin, table) == []


@needs_server
async def test_transaction_false_keeps_the_batches_before_the_failing_one(
    ms: Runner, admin: AsyncEngine, table: str
) -> None:
    result = await ms.run(
        f"INSERT INTO {table} (id) VALUES (1)\nGO\nSELECT @@TRANCOUNT AS t\nGO\n"
        f"INSERT INTO {table} (id) VALUES (1)",
        transaction=False,
    )

    assert result.status is StepStatus.FAILED
    assert (result.error_message or "").startswith("batch 3 of 3 (line 5)")
    assert await ids(admin, table) == [1]


@needs_server
async def test_a_timeout_stops_the_query_on_the_server(ms: Runner, admin: AsyncEngine) -> None:
    marker = f"jsv2-{uuid.uuid4().hex}"
    step = ms.step(f"/* {marker} */ WAITFOR DELAY '00:05:00'", timeout=1)

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(step.get_timeout()):
            await step.run()

    async def running() -> int:
        async with admin.connect() as conn:
            found = await conn.execute(
                text(
                    "SELECT COUNT(*) FROM sys.dm_exec_requests r "
                    "CROSS APPLY sys.dm_exec_sql_text(r.sql_handle) t "
                    "WHERE t.text LIKE :pattern AND r.session_id <> @@SPID"
                ),
                {"pattern": f"%{marker}%"},
            )
            return int(found.scalar_one())

    deadline = started + 30
    while await running():
        assert time.monotonic() < deadline, "the WAITFOR still runs on the server"
        await asyncio.sleep(0.2)


@needs_server
async def test_a_read_only_connection_undoes_writes(
    ms: Runner, admin: AsyncEngine, table: str
) -> None:
    result = await ms.run(
        f"INSERT INTO {table} (id) VALUES (1)\nGO\nSELECT COUNT(*) AS n FROM {table}",
        connection="ro",
    )

    # On a primary the write runs and is rolled back; on a readable secondary it fails.
    if result.status is StepStatus.SUCCESS:
        assert result.output == '[{"n":1}]'
    assert await ids(admin, table) == []


@needs_server
async def test_sql_server_types_come_back_json_safe(ms: Runner, admin: AsyncEngine) -> None:
    name = f"rv_{uuid.uuid4().hex[:12]}"
    async with admin.connect() as conn:
        await conn.exec_driver_sql(f"CREATE TABLE {name} (id int, rv rowversion)")
        await conn.exec_driver_sql(f"INSERT INTO {name} (id) VALUES (1)")
    try:
        result = await ms.run(
            "SELECT CAST(1234.56 AS money) AS m, CAST(1.50 AS decimal(9, 2)) AS d, "
            "CAST('6F9619FF-8B86-D011-B42D-00C04FC964FF' AS uniqueidentifier) AS g, "
            "CAST('2026-12-02 04:05:06.7 +05:30' AS datetimeoffset(7)) AS o, "
            f"CAST(0x0102 AS binary(2)) AS b, rv FROM {name}"
        )
    finally:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f"DROP TABLE {name}")

    assert result.status is StepStatus.SUCCESS, result.error_message
    (row,) = json.loads(result.output or "[]")
    assert row["m"] == "1234.5600"
    assert row["d"] == "1.50"
    assert str(row["g"]).upper() == "6F9619FF-8B86-D011-B42D-00C04FC964FF"
    assert row["o"] == "2026-12-02T04:05:06.700000+05:30"
    assert row["b"] == "AQI="
    assert isinstance(row["rv"], str) and len(row["rv"]) == 12  # 8 bytes, base64
