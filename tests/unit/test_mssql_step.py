"""The SQL step on a SQL Server connection, with only the server replaced.

The step, SQLAlchemy's ``mssql+aioodbc`` dialect and pool and aioodbc's threads are real;
``pyodbc.connect`` answers from :class:`tests.support.fake_pyodbc.FakeServer` (there is no
SQL Server here; ``tests/integration/test_mssql.py`` runs the same behaviour against a real
one when ``V2_TEST_MSSQL_URL`` is set).
"""

from __future__ import annotations

import asyncio
import struct
import threading
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pyodbc
import pytest

from app.domain import JobDefinition, StepExecutionResult, StepStatus
from app.steps import ConnectionRegistry, ExecutionContext, StepFactory, StepResources
from tests.support.fake_pyodbc import (
    SQL_BINARY,
    SQL_DECIMAL,
    SQL_GUID,
    SQL_INTEGER,
    SQL_SS_TIMESTAMPOFFSET,
    SQL_WVARCHAR,
    FakeServer,
    ResultSet,
    sql_error,
)

URL = "mssql+aioodbc://jobs:pw@sql.example:1433/sales?driver=FreeTDS"


class Runner:
    def __init__(self, server: FakeServer, registry: ConnectionRegistry) -> None:
        self.server = server
        self.registry = registry

    def step(self, query: str, **config: Any) -> Any:
        cfg = {"step_id": "s", "type": "sql", "connection_name": "ms", "query": query, **config}
        job = JobDefinition(job_id="j", job_name="j")
        ctx = ExecutionContext(
            job,
            f"e-{uuid.uuid4().hex[:6]}",
            resources=StepResources(connections=self.registry, kill_grace_seconds=0.5),
        )
        return StepFactory.create_step(cfg, ctx)

    async def run(self, query: str, **config: Any) -> StepExecutionResult:
        result: StepExecutionResult = await self.step(query, **config).run()
        return result


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    """pyodbc.connect answered by a :class:`FakeServer` for the test's duration."""
    server = FakeServer()
    monkeypatch.setattr(pyodbc, "connect", server.connect)
    return server


@pytest.fixture
async def ms(fake_server: FakeServer) -> AsyncIterator[Runner]:
    registry = ConnectionRegistry({"ms": URL, "ro": {"url": URL, "read_only": True}}, pool_size=2)
    yield Runner(fake_server, registry)
    await registry.dispose()


async def test_batches_run_in_order_with_bound_parameters_in_one_transaction(ms: Runner) -> None:
    ms.server.answer("INSERT INTO t (a) VALUES (?)", ResultSet(rowcount=1))
    ms.server.answer("UPDATE t SET a = a + 1", ResultSet(rowcount=4))
    ms.server.answer("SELECT a FROM t WHERE a > ?", ResultSet([("a", SQL_INTEGER)], [(2,), (3,)]))

    result = await ms.run(
        "INSERT INTO t (a) VALUES (:a)\nGO 2\nUPDATE t SET a = a + 1\ngo -- then\n"
        "SELECT a FROM t WHERE a > :low",
        parameters={"a": "x'; DROP TABLE t; --", "low": 1},
    )

    assert result.status is StepStatus.SUCCESS, result.error_message
    assert ms.server.statements() == [
        ("INSERT INTO t (a) VALUES (?)", ("x'; DROP TABLE t; --",)),
        ("INSERT INTO t (a) VALUES (?)", ("x'; DROP TABLE t; --",)),
        ("UPDATE t SET a = a + 1", ()),
        ("SELECT a FROM t WHERE a > ?", (1,)),
    ]
    assert result.output == '[{"a":2},{"a":3}]'
    assert result.metadata["affected_rows"] == 6
    assert result.metadata["dialect"] == "mssql"
    step_spid = ms.server.of("execute")[-1].spid
    assert [e.kind for e in ms.server.events if e.spid == step_spid and e.kind == "commit"] == [
        "commit"
    ]


async def test_a_list_parameter_expands(ms: Runner) -> None:
    ms.server.answer("SELECT 1 AS n WHERE 2 IN (?, ?, ?)", ResultSet([("n", SQL_INTEGER)], [(1,)]))

    result = await ms.run("SELECT 1 AS n WHERE 2 IN (:ids)", parameters={"ids": [1, 2, 3]})

    assert result.status is StepStatus.SUCCESS, result.error_message
    assert ms.server.statements() == [("SELECT 1 AS n WHERE 2 IN (?, ?, ?)", (1, 2, 3))]


async def test_a_failing_batch_rolls_back_and_names_itself(ms: Runner) -> None:
    ms.server.answer("INSERT INTO t VALUES (1)", ResultSet(rowcount=1))
    ms.server.answer(
        "INSERT INTO nope VALUES (2)",
        error=sql_error("42S02", "Invalid object name 'nope'. (208)"),
    )

    result = await ms.run("INSERT INTO t VALUES (1)\nGO\nINSERT INTO nope VALUES (2)\nGO\nSELECT 3")

    assert result.status is StepStatus.FAILED
    assert result.error_message == (
        "batch 2 of 3 (line 3): ProgrammingError: [FreeTDS][SQL Server]Invalid object name "
        "'nope'. (208) (SQLExecDirectW) [SQLSTATE 42S02]"
    )
    assert [s for s, _ in ms.server.statements()] == [
        "INSERT INTO t VALUES (1)",
        "INSERT INTO nope VALUES (2)",
    ]  # batch 3 never ran
    assert ms.server.of("commit") == []
    assert ms.server.of("rollback")


async def test_an_error_in_a_later_statement_of_a_batch_fails_the_step(ms: Runner) -> None:
    """SQL Server reports it only when the client reads on to that statement's result."""
    ms.server.answer(
        "INSERT INTO t VALUES (1); SELECT 1/0",
        ResultSet(rowcount=1),
        error_on_next_set=sql_error(
            "22012", "Divide by zero error encountered. (8134)", pyodbc.DataError
        ),
    )

    result = await ms.run("INSERT INTO t VALUES (1); SELECT 1/0")

    assert result.status is StepStatus.FAILED
    assert "Divide by zero" in (result.error_message or "")
    assert ms.server.of("commit") == []


async def test_the_last_result_set_with_columns_is_the_output(ms: Runner) -> None:
    ms.server.answer(
        "SET NOCOUNT OFF; INSERT t VALUES (1); SELECT 1 AS a; SELECT 2 AS b, 3 AS b",
        ResultSet(rowcount=1),
        ResultSet([("a", SQL_INTEGER)], [(1,)]),
        ResultSet([("b", SQL_INTEGER), ("b", SQL_INTEGER)], [(2, 3)]),
    )

    result = await ms.run(
        "SET NOCOUNT OFF; INSERT t VALUES (1); SELECT 1 AS a; SELECT 2 AS b, 3 AS b"
    )

    assert result.status is StepStatus.SUCCESS, result.error_message
    assert result.output == '[{"b":2,"b_2":3}]'
    assert result.metadata["affected_rows"] == 1


async def test_transaction_false_runs_each_batch_in_autocommit(ms: Runner) -> None:
    ms.server.answer("INSERT INTO t VALUES (1)", ResultSet(rowcount=1))
    ms.server.answer(
        "INSERT INTO t VALUES (2)",
        error=sql_error("23000", "Violation of PRIMARY KEY (2627)", pyodbc.IntegrityError),
    )

    result = await ms.run(
        "INSERT INTO t VALUES (1)\nGO\nINSERT INTO t VALUES (2)", transaction=False
    )

    assert result.status is StepStatus.FAILED
    spid = ms.server.of("execute")[-1].spid
    kinds = [e.kind for e in ms.server.events if e.spid == spid]
    first_insert = kinds.index("execute", kinds.index("autocommit"))
    assert ("autocommit", True) in [(e.kind, e.detail) for e in ms.server.events if e.spid == spid]
    assert kinds.index("autocommit") < first_insert  # switched before the first batch
    assert "batch 2 of 2 (line 3): IntegrityError" in (result.error_message or "")


async def test_a_read_only_connection_asks_for_read_only_intent_and_never_commits(
    ms: Runner,
) -> None:
    ms.server.answer("SELECT 1 AS one", ResultSet([("one", SQL_INTEGER)], [(1,)]))

    result = await ms.run("SELECT 1 AS one", connection_name="ro")

    assert result.status is StepStatus.SUCCESS, result.error_message
    (connect,) = ms.server.of("connect")
    assert "ApplicationIntent=ReadOnly" in connect.detail.split(";")
    assert ms.server.of("commit") == []
    assert ms.server.of("rollback")


async def test_sql_server_types_come_back_json_safe(ms: Runner) -> None:
    guid = "6F9619FF-8B86-D011-B42D-00C04FC964FF"
    offset = struct.pack("<6hI2h", 2026, 12, 2, 4, 5, 6, 700_000_000, 5, 30)
    ms.server.answer(
        "SELECT * FROM types",
        ResultSet(
            [
                ("price", SQL_DECIMAL),
                ("id", SQL_GUID),
                ("at", SQL_SS_TIMESTAMPOFFSET),
                ("version", SQL_BINARY),
                ("name", SQL_WVARCHAR),
            ],
            [(Decimal("1234.5600"), guid, offset, b"\x00\x00\x00\x00\x00\x00\x07\xd1", "Zoë")],
        ),
    )

    result = await ms.run("SELECT * FROM types")

    assert result.status is StepStatus.SUCCESS, result.error_message
    assert result.output == (
        '[{"price":"1234.5600","id":"6F9619FF-8B86-D011-B42D-00C04FC964FF",'
        '"at":"2026-12-02T04:05:06.700000+05:30","version":"AAAAAAAAB9E=","name":"Zoë"}]'
    )


async def test_rows_are_capped(fake_server: FakeServer) -> None:
    registry = ConnectionRegistry({"ms": URL})
    fake_server.answer(
        "SELECT n FROM big", ResultSet([("n", SQL_INTEGER)], [(i,) for i in range(50)])
    )
    job = JobDefinition(job_id="j", job_name="j")
    ctx = ExecutionContext(
        job, "e", resources=StepResources(connections=registry, max_result_rows=3)
    )
    step = StepFactory.create_step(
        {"step_id": "s", "type": "sql", "connection_name": "ms", "query": "SELECT n FROM big"}, ctx
    )
    try:
        result = await step.run()
    finally:
        await registry.dispose()

    assert result.output == '[{"n":0},{"n":1},{"n":2}]'
    assert result.metadata["truncated"] is True


async def test_a_timeout_cancels_the_statement_through_odbc(ms: Runner) -> None:
    step = ms.step("WAITFOR DELAY '01:00:00'", timeout=1)
    task = asyncio.create_task(step.run(), name="waitfor-step")
    await asyncio.to_thread(ms.server.waiting.wait, 30)
    assert ms.server.waiting.is_set()

    task.cancel()  # what the engine's timeout does
    with pytest.raises(asyncio.CancelledError):
        await task

    (cancel,) = ms.server.of("cancel")
    (waitfor,) = [e for e in ms.server.of("execute") if e.detail[0].startswith("WAITFOR")]
    assert cancel.spid == waitfor.spid
    assert cancel.thread not in (
        waitfor.thread,
        threading.get_ident(),
    )  # SQLCancel from a third thread
    assert not [e for e in ms.server.of("execute") if e.detail[0].startswith("KILL")]
    assert waitfor.spid in {e.spid for e in ms.server.of("close")}  # never back in the pool
    assert ms.server.of("commit") == []


async def test_a_cancel_the_server_ignores_ends_in_kill_of_the_session(ms: Runner) -> None:
    ms.server.ignore_cancel = True
    step = ms.step("WAITFOR DELAY '01:00:00'")
    task = asyncio.create_task(step.run(), name="waitfor-step")
    await asyncio.to_thread(ms.server.waiting.wait, 30)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    (waitfor,) = [e for e in ms.server.of("execute") if e.detail[0].startswith("WAITFOR")]
    kills = [e for e in ms.server.of("execute") if e.detail[0].startswith("KILL")]
    assert [k.detail[0] for k in kills] == [f"KILL {waitfor.spid}"]
    assert kills[0].spid != waitfor.spid  # from a control connection
    assert ms.server.of("cancel")  # asked nicely first


async def test_a_go_line_sqlcmd_refuses_fails_the_step_before_connecting(ms: Runner) -> None:
    result = await ms.run("SELECT 1\nGO twice")

    assert result.status is StepStatus.FAILED
    assert (result.error_message or "").startswith("step.query: line 2: GO must stand alone")
    assert ms.server.of("connect") == []


async def test_cancel_gets_through_when_every_default_thread_is_busy(ms: Runner) -> None:
    """A SQL Server engine's driver calls and its cancel run on threads of their own: blocked
    statements never wait for, or starve, the loop's default executor."""
    loop = asyncio.get_running_loop()
    release = threading.Event()
    busy = [loop.run_in_executor(None, release.wait) for _ in range(64)]  # more than it has
    own = ThreadPoolExecutor(max_workers=1)
    try:
        step = ms.step("WAITFOR DELAY '01:00:00'")
        task = asyncio.create_task(step.run(), name="waitfor-step")
        assert await loop.run_in_executor(own, ms.server.waiting.wait, 30)

        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        release.set()
        await asyncio.gather(*busy)
        own.shutdown()

    assert ms.server.of("cancel")
    assert not [e for e in ms.server.of("execute") if e.detail[0].startswith("KILL")]


async def test_fetch_results_false_keeps_the_columns_and_reads_no_rows(ms: Runner) -> None:
    ms.server.answer("SELECT n FROM big", ResultSet([("n", SQL_INTEGER)], [(1,), (2,)]))

    result = await ms.run("SELECT n FROM big", fetch_results=False)

    assert result.status is StepStatus.SUCCESS, result.error_message
    assert result.output is None
    assert result.metadata["columns"] == ["n"]
    assert result.metadata["row_count"] == 0
