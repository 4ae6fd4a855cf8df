"""SqlStep against real PostgreSQL, MariaDB and SQLite: results, parameters, transactions,
read-only connections, error messages, and cancellation that stops the query on the server."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, QueuePool

from app.domain import JobDefinition, StepExecutionResult, StepStatus
from app.domain.errors import ConfigurationError, StepExecutionError
from app.steps import (
    ConnectionRegistry,
    ExecutionContext,
    ExecutionStep,
    SqlStep,
    StepFactory,
    StepResources,
)

BACKENDS = ["postgresql", "mariadb", "sqlite"]
_URL_FIXTURE = {"postgresql": "pg_url", "mariadb": "mariadb_url", "sqlite": "sqlite_url"}
DIALECT = {"postgresql": "postgresql", "mariadb": "mysql", "sqlite": "sqlite"}
TEXT_TYPE = {"postgresql": "text", "mariadb": "TEXT", "sqlite": "TEXT"}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(_URL_FIXTURE[backend]))


@pytest.fixture
def table() -> str:
    """A table name of its own (PostgreSQL and MariaDB databases live for the session)."""
    return f"t_{uuid.uuid4().hex[:12]}"


@dataclass
class Harness:
    ctx: ExecutionContext
    registry: ConnectionRegistry

    def step(self, step_id: str, query: str, **config: Any) -> ExecutionStep:
        cfg: dict[str, Any] = {"step_id": step_id, "type": "sql", "query": query}
        cfg.setdefault("connection_name", "db")
        cfg.update(config)
        return StepFactory.create_step(cfg, self.ctx)

    async def run(self, step_id: str, query: str, **config: Any) -> StepExecutionResult:
        return await self.step(step_id, query, **config).run()

    async def admin(self, sql: str, params: dict[str, Any] | None = None, name: str = "db") -> Any:
        """Run ``sql`` outside any step (committed); rows when it returns any."""
        async with self.registry.get_engine(name).begin() as conn:
            result = await conn.execute(text(sql), params or {})
            return result.all() if result.returns_rows else None


HarnessFactory = Callable[..., Harness]


@pytest.fixture
async def make_harness() -> AsyncIterator[HarnessFactory]:
    registries: list[ConnectionRegistry] = []

    def make(connections: dict[str, Any], **limits: Any) -> Harness:
        registry = ConnectionRegistry(connections)
        registries.append(registry)
        job = JobDefinition(job_id="sql-job", job_name="SQL step tests")
        resources = StepResources(connections=registry, **limits)
        ctx = ExecutionContext(job, f"exec-{uuid.uuid4().hex[:8]}", resources=resources)
        return Harness(ctx, registry)

    yield make
    try:
        for registry in registries:
            for name in registry.names():
                engine = registry._engines.get(name)
                if engine is not None:
                    # Every step returned (or discarded) the connection it checked out.
                    pool = engine.pool
                    assert isinstance(pool, QueuePool)
                    assert pool.checkedout() == 0, f"{name}: connection left checked out"
    finally:
        for registry in registries:
            await registry.dispose()


@pytest.fixture
def h(make_harness: HarnessFactory, db_url: str) -> Harness:
    return make_harness({"db": db_url})


async def run_with_engine_timeout(step: ExecutionStep) -> StepExecutionResult:
    """What the engine does: the step's own timeout around ``run()``."""
    async with asyncio.timeout(step.get_timeout()):
        return await step.run()


async def wait_until(
    condition: Callable[[], Awaitable[bool]], *, within: float, what: str
) -> float:
    """Poll ``condition`` until true; fail after ``within`` seconds. Returns seconds taken."""
    start = time.monotonic()
    while True:
        if await condition():
            return time.monotonic() - start
        if time.monotonic() - start > within:
            pytest.fail(f"not within {within}s: {what}")
        await asyncio.sleep(0.02)


# -- results and values ---------------------------------------------------------------------------

AWKWARD: dict[str, tuple[str, dict[str, Any]]] = {
    "postgresql": (
        """SELECT CAST('12345678901234567890.123456789' AS numeric(30, 9)) AS amount,
                  CAST('0.10' AS numeric(5, 2)) AS price,
                  CAST('2024-02-29' AS date) AS d,
                  CAST('2024-03-10 02:30:00+05:30' AS timestamptz) AS ts_tz,
                  CAST('2024-01-01 12:00:00.25' AS timestamp) AS ts,
                  CAST('13:14:15.5' AS time) AS t,
                  CAST('\\x00ff10' AS bytea) AS b,
                  CAST('9b3e4c2a-1f0e-4c7b-8a59-2d0c8f6e1a11' AS uuid) AS u,
                  NULL AS n,
                  CAST(1.5 AS double precision) AS f,
                  CAST('NaN' AS double precision) AS nan,
                  CAST('1 day 2.5 seconds' AS interval) AS iv,
                  CAST(9223372036854775807 AS bigint) AS big,
                  ARRAY[1, 2, 3] AS arr,
                  true AS flag,
                  'héllo ☃ "q"' AS s""",
        {
            "amount": "12345678901234567890.123456789",
            "price": "0.10",
            "d": "2024-02-29",
            "ts_tz": "2024-03-09T21:00:00+00:00",
            "ts": "2024-01-01T12:00:00.250000",
            "t": "13:14:15.500000",
            "b": base64.b64encode(b"\x00\xff\x10").decode(),
            "u": "9b3e4c2a-1f0e-4c7b-8a59-2d0c8f6e1a11",
            "n": None,
            "f": 1.5,
            "nan": "NaN",
            "iv": 86402.5,
            "big": 9223372036854775807,
            "arr": [1, 2, 3],
            "flag": True,
            "s": 'héllo ☃ "q"',
        },
    ),
    "mariadb": (
        """SELECT CAST('12345678901234567890.123456789' AS DECIMAL(30, 9)) AS amount,
                  CAST('0.10' AS DECIMAL(5, 2)) AS price,
                  DATE '2024-02-29' AS d,
                  TIMESTAMP '2024-01-01 12:00:00.25' AS ts,
                  TIME '13:14:15.5' AS t,
                  X'00FF10' AS b,
                  CAST('9b3e4c2a-1f0e-4c7b-8a59-2d0c8f6e1a11' AS UUID) AS u,
                  NULL AS n,
                  CAST(1.5 AS DOUBLE) AS f,
                  CAST(9223372036854775807 AS SIGNED) AS big,
                  'héllo ☃ "q"' AS s""",
        {
            "amount": "12345678901234567890.123456789",
            "price": "0.10",
            "d": "2024-02-29",
            "ts": "2024-01-01T12:00:00.250000",
            "t": 47655.5,
            "b": base64.b64encode(b"\x00\xff\x10").decode(),
            "u": "9b3e4c2a-1f0e-4c7b-8a59-2d0c8f6e1a11",
            "n": None,
            "f": 1.5,
            "big": 9223372036854775807,
            "s": 'héllo ☃ "q"',
        },
    ),
    "sqlite": (
        """SELECT X'00FF10' AS b, NULL AS n, 1.5 AS f, 9223372036854775807 AS big,
                  '2024-02-29' AS d, 'héllo ☃ "q"' AS s""",
        {
            "b": base64.b64encode(b"\x00\xff\x10").decode(),
            "n": None,
            "f": 1.5,
            "big": 9223372036854775807,
            "d": "2024-02-29",
            "s": 'héllo ☃ "q"',
        },
    ),
}


async def test_select_awkward_types_as_json(h: Harness, backend: str) -> None:
    query, expected = AWKWARD[backend]
    result = await h.run("awkward", query)

    assert result.status is StepStatus.SUCCESS, result.error_message
    assert result.output is not None
    assert json.loads(result.output) == [expected]
    assert result.metadata["columns"] == list(expected)
    assert result.metadata["row_count"] == 1
    assert result.metadata["truncated"] is False
    assert result.metadata["dialect"] == DIALECT[backend]
    out = h.ctx.get_step_output("awkward")
    assert out["rows"] == [expected]
    assert out["columns"] == list(expected)
    assert out["row_count"] == 1
    assert out["truncated"] is False


async def test_select_with_no_matching_rows(h: Harness) -> None:
    result = await h.run("none", "SELECT 1 AS one WHERE 1 = 0")

    assert result.status is StepStatus.SUCCESS, result.error_message
    assert result.output == "[]"
    assert result.metadata["columns"] == ["one"]
    assert result.metadata["row_count"] == 0


async def test_repeated_column_labels_keep_every_column(h: Harness) -> None:
    result = await h.run("dup", "SELECT 1 AS n, 2 AS n")

    assert result.status is StepStatus.SUCCESS, result.error_message
    assert result.metadata["columns"] == ["n", "n_2"]
    assert json.loads(result.output or "") == [{"n": 1, "n_2": 2}]


async def test_fetch_results_false_returns_no_rows(h: Harness) -> None:
    result = await h.run("nofetch", "SELECT 1 AS a UNION ALL SELECT 2", fetch_results=False)

    assert result.status is StepStatus.SUCCESS, result.error_message
    assert result.output is None
    assert result.metadata["row_count"] == 0
    assert result.metadata["columns"] == ["a"]
    assert h.ctx.get_step_output("nofetch")["rows"] == []


# -- parameters -----------------------------------------------------------------------------------

HOSTILE = [
    "O'Reilly",
    'say "hi"',
    "'; DROP TABLE {table}; --",
    "Robert'); DROP TABLE {table};--",
    "back\\slash \\' \\\\ end\\",
    "percent %s %(v)s %% ? {{}}",
    "colon :v ::text $1 @v",
    "ünïcødé ☃ 🚀 中文 \u202e",
    "line\nbreak\ttab\r\n",
    "",
]


async def test_hostile_strings_bind_verbatim(h: Harness, backend: str, table: str) -> None:
    await h.admin(f"CREATE TABLE {table} (id integer PRIMARY KEY, v {TEXT_TYPE[backend]})")
    values = [v.format(table=table) for v in HOSTILE]

    for i, value in enumerate(values):
        result = await h.run(
            f"ins{i}",
            f"INSERT INTO {table} (id, v) VALUES (:id, :v)",
            parameters={"id": i, "v": value},
        )
        assert result.status is StepStatus.SUCCESS, result.error_message
        assert result.metadata["affected_rows"] == 1

    echoed = await h.run(
        "echo", "SELECT :a AS a, :b AS b", parameters={"a": values[2], "b": values[7]}
    )
    assert echoed.status is StepStatus.SUCCESS, echoed.error_message
    assert json.loads(echoed.output or "") == [{"a": values[2], "b": values[7]}]

    stored = await h.run("read", f"SELECT v FROM {table} ORDER BY id")
    assert stored.status is StepStatus.SUCCESS, stored.error_message
    assert [row["v"] for row in json.loads(stored.output or "")] == values

    found = await h.run("find", f"SELECT id FROM {table} WHERE v = :v", parameters={"v": values[3]})
    assert json.loads(found.output or "") == [{"id": 3}]


async def test_list_parameter_expands(h: Harness, table: str) -> None:
    await h.admin(f"CREATE TABLE {table} (id integer PRIMARY KEY, name varchar(20))")
    await h.admin(
        f"INSERT INTO {table} (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e')"
    )

    parens = await h.run(
        "parens",
        f"SELECT id FROM {table} WHERE id IN (:ids) ORDER BY id",
        parameters={"ids": [2, 4, 5]},
    )
    bare = await h.run(
        "bare",
        f"SELECT name FROM {table} WHERE name IN :names AND id > :min ORDER BY id",
        parameters={"names": ["a", "c", "e", "zz'; --"], "min": 1},
    )
    empty = await h.run(
        "empty", f"SELECT id FROM {table} WHERE id IN (:ids)", parameters={"ids": []}
    )

    assert parens.status is StepStatus.SUCCESS, parens.error_message
    assert json.loads(parens.output or "") == [{"id": 2}, {"id": 4}, {"id": 5}]
    assert bare.status is StepStatus.SUCCESS, bare.error_message
    assert json.loads(bare.output or "") == [{"name": "c"}, {"name": "e"}]
    assert empty.status is StepStatus.SUCCESS, empty.error_message
    assert json.loads(empty.output or "") == []


async def test_object_parameter_binds_as_json_text(h: Harness) -> None:
    result = await h.run("doc", "SELECT :doc AS doc", parameters={"doc": {"a": [1, "x"]}})

    assert result.status is StepStatus.SUCCESS, result.error_message
    assert json.loads(json.loads(result.output or "")[0]["doc"]) == {"a": [1, "x"]}


async def test_reference_to_earlier_step_output(h: Harness, table: str) -> None:
    await h.admin(f"CREATE TABLE {table} (id integer PRIMARY KEY)")
    first = await h.run("count", "SELECT 41 AS n, 'x' AS tag")
    insert = await h.run(
        "insert",
        f"INSERT INTO {table} (id) VALUES (:n)",
        parameters={"n": {"$from": "steps.count.rows[0].n"}},
    )
    second = await h.run(
        "next",
        f"SELECT id + 1 AS m FROM {table} WHERE id = :n",
        parameters={"n": {"$from": "steps.count.rows[0].n"}},
    )
    affected = await h.run(
        "affected", "SELECT :a + 0 AS a", parameters={"a": {"$from": "steps.insert.affected_rows"}}
    )

    assert first.status is StepStatus.SUCCESS, first.error_message
    assert insert.status is StepStatus.SUCCESS, insert.error_message
    assert json.loads(second.output or "") == [{"m": 42}]
    assert json.loads(affected.output or "") == [{"a": 1}]


async def test_bad_parameter_reference_raises_step_error(h: Harness) -> None:
    step = h.step("bad", "SELECT :n AS n", parameters={"n": {"$from": "steps.missing.rows[0].n"}})

    with pytest.raises(StepExecutionError, match="missing") as info:
        await step.run()
    assert info.value.step_id == "bad"


@pytest.mark.parametrize(
    ("query", "parameters", "needle"),
    [
        ("SELECT :a AS a, :b AS b", {"a": 1}, ":b but no value"),
        ("SELECT :a AS a", {"a": 1, "extra": 2}, "not used by the query: extra"),
        ("SELECT :a::text AS a", {"a": "x"}, "not used by the query: a"),
    ],
)
async def test_parameter_mismatch_is_a_clear_failure(
    make_harness: HarnessFactory,
    sqlite_url: str,
    query: str,
    parameters: dict[str, Any],
    needle: str,
) -> None:
    h = make_harness({"db": sqlite_url})
    config = {
        "step_id": "mismatch",
        "type": "sql",
        "connection_name": "db",
        "query": query,
        "parameters": parameters,
    }

    # Rejected when the job is submitted ...
    with pytest.raises(ConfigurationError) as info:
        StepFactory.create_step(config, h.ctx)
    assert any(needle in e.message and e.field == "parameters" for e in info.value.errors)

    # ... and a step built without validation fails cleanly when it runs.
    result = await SqlStep(config, h.ctx).run()
    assert result.status is StepStatus.FAILED
    assert needle in (result.error_message or "")


async def test_list_parameter_must_hold_scalars(
    make_harness: HarnessFactory, sqlite_url: str
) -> None:
    h = make_harness({"db": sqlite_url})
    with pytest.raises(ConfigurationError, match=r"parameters\.ids: .*only strings, numbers"):
        h.step("nested", "SELECT 1 WHERE 1 IN (:ids)", parameters={"ids": [[1, 2]]})


# -- affected rows, limits --------------------------------------------------------------------


async def test_insert_update_delete_report_affected_rows(h: Harness, table: str) -> None:
    await h.admin(f"CREATE TABLE {table} (id integer PRIMARY KEY, v varchar(10))")

    inserted = await h.run(
        "ins", f"INSERT INTO {table} (id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c')"
    )
    updated = await h.run(
        "upd", f"UPDATE {table} SET v = :v WHERE id >= :min", parameters={"v": "z", "min": 2}
    )
    deleted = await h.run("del", f"DELETE FROM {table} WHERE id = 1")

    for result, n in ((inserted, 3), (updated, 2), (deleted, 1)):
        assert result.status is StepStatus.SUCCESS, result.error_message
        assert result.metadata["affected_rows"] == n
        assert result.output is None
        assert result.metadata["columns"] == []
        assert result.metadata["row_count"] == 0
    assert h.ctx.get_step_output("upd")["affected_rows"] == 2
    # Committed: visible from another connection.
    assert await h.admin(f"SELECT id, v FROM {table} ORDER BY id") == [(2, "z"), (3, "z")]


async def test_a_select_affects_no_rows_and_returning_keeps_its_count(
    h: Harness, table: str
) -> None:
    await h.admin(f"CREATE TABLE {table} (id integer PRIMARY KEY)")
    await h.admin(f"INSERT INTO {table} (id) VALUES (1), (2), (3)")

    selected = await h.run("sel", f"/* rows */ SELECT id FROM {table} ORDER BY id")
    with_cte = await h.run("cte", f"WITH x AS (SELECT id FROM {table}) SELECT count(*) AS n FROM x")
    returned = await h.run(
        "ret", f"-- two rows back\nDELETE FROM {table} WHERE id >= 2 RETURNING id"
    )

    assert selected.metadata["row_count"] == 3
    assert selected.metadata["affected_rows"] is None  # PostgreSQL and MariaDB report 3
    assert with_cte.metadata["affected_rows"] is None
    assert returned.status is StepStatus.SUCCESS, returned.error_message
    assert returned.metadata["row_count"] == 2
    assert returned.metadata["affected_rows"] == 2


SEQUENCE = (
    "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {count}) "
    "SELECT n, 'xxxxxxxxxx' AS pad FROM s"
)


async def test_rows_capped_by_max_result_rows(make_harness: HarnessFactory, db_url: str) -> None:
    h = make_harness({"db": db_url}, max_result_rows=3)

    capped = await h.run("many", SEQUENCE.format(count=10))
    exact = await h.run("exact", SEQUENCE.format(count=3))

    assert capped.status is StepStatus.SUCCESS, capped.error_message
    assert [r["n"] for r in json.loads(capped.output or "")] == [1, 2, 3]
    assert capped.metadata["truncated"] is True
    assert capped.metadata["row_count"] == 3
    assert h.ctx.get_step_output("many")["truncated"] is True
    assert exact.metadata["truncated"] is False
    assert exact.metadata["row_count"] == 3


async def test_rows_capped_by_max_output_bytes(make_harness: HarnessFactory, db_url: str) -> None:
    row_size = len('{"n":1,"pad":"xxxxxxxxxx"}')
    h = make_harness({"db": db_url}, max_output_bytes=2 + 3 * row_size + 2)  # 3 rows + commas

    capped = await h.run("bytes", SEQUENCE.format(count=10))

    assert capped.status is StepStatus.SUCCESS, capped.error_message
    output = capped.output or ""
    assert len(output.encode()) <= 2 + 3 * row_size + 2
    assert [r["n"] for r in json.loads(output)] == [1, 2, 3]
    assert capped.metadata["truncated"] is True
    assert capped.metadata["row_count"] == 3

    tiny = make_harness({"db": db_url}, max_output_bytes=10)
    nothing = await tiny.run("tiny", SEQUENCE.format(count=2))
    assert nothing.output == "[]"
    assert nothing.metadata["truncated"] is True
    assert nothing.metadata["row_count"] == 0


# -- failures ---------------------------------------------------------------------------------


async def test_bad_sql_fails_with_driver_message(h: Harness, backend: str) -> None:
    result = await h.run("bad", "SELECT * FROM no_such_table_zq")

    assert result.status is StepStatus.FAILED
    assert "no_such_table_zq" in (result.error_message or "")
    assert "[SQL:" not in (result.error_message or "")
    assert result.metadata["dialect"] == DIALECT[backend]
    assert result.end_time is not None
    # The connection is usable afterwards.
    assert (await h.run("ok", "SELECT 1 AS ok")).status is StepStatus.SUCCESS


async def test_error_message_never_contains_password(
    make_harness: HarnessFactory, pg_url: str, mariadb_url: str
) -> None:
    pg = make_url(pg_url).set(password="s3cretPW").render_as_string(hide_password=False)
    # MariaDB root has no password: this one is refused at login.
    my = make_url(mariadb_url).set(password="s3cretPW").render_as_string(hide_password=False)
    nowhere = (
        make_url(pg_url).set(password="s3cretPW", port=1).render_as_string(hide_password=False)
    )
    h = make_harness({"pg": pg, "my": my, "nowhere": nowhere})

    bad_sql = await h.run("pg_bad", "SELECT * FROM no_such_table_zq", connection_name="pg")
    login = await h.run("my_login", "SELECT 1", connection_name="my")
    unreachable = await h.run("nowhere", "SELECT 1", connection_name="nowhere")

    for result in (bad_sql, login, unreachable):
        assert result.status is StepStatus.FAILED
        assert result.error_message
        assert "s3cretPW" not in json.dumps(result.to_dict())
    assert "no_such_table_zq" in (bad_sql.error_message or "")
    assert "Access denied" in (login.error_message or "")


async def test_unknown_connection_name_fails_the_step(h: Harness) -> None:
    result = await h.run("nowhere", "SELECT 1", connection_name="warehouse")

    assert result.status is StepStatus.FAILED
    assert "unknown connection 'warehouse'" in (result.error_message or "")
    assert "known: db" in (result.error_message or "")


async def test_multiple_statements_are_refused_and_nothing_is_kept(h: Harness, table: str) -> None:
    await h.admin(f"CREATE TABLE {table} (id integer PRIMARY KEY)")

    result = await h.run(
        "multi",
        f"INSERT INTO {table} (id) VALUES (1); INSERT INTO {table} (id) VALUES (2)",
    )

    assert result.status is StepStatus.FAILED
    assert (result.error_message or "").startswith(
        "step.query: holds more than one statement (another one starts on line 1"
    )  # the service's words, not the driver's
    assert await h.admin(f"SELECT id FROM {table}") == []


PARTIAL_FAILURE: dict[str, tuple[list[str], str]] = {
    # INSERT OR FAIL keeps the rows inserted before the failing one: only the step's
    # rollback removes them.
    "sqlite": ([], "INSERT OR FAIL INTO {t} (id) VALUES (1), (2), (1)"),
    # A procedure's statements are not undone by the failure of a later one.
    "mariadb": (
        [
            "CREATE PROCEDURE {t}_p() BEGIN INSERT INTO {t} (id) VALUES (1); "
            "INSERT INTO {t} (id) VALUES (1); END"
        ],
        "CALL {t}_p()",
    ),
    # A deferred constraint fails at COMMIT, after the statement succeeded.
    "postgresql": (
        [
            "ALTER TABLE {t} ADD CONSTRAINT {t}_u UNIQUE (v) DEFERRABLE INITIALLY DEFERRED",
        ],
        "INSERT INTO {t} (id, v) VALUES (1, 1), (2, 1)",
    ),
}


async def test_failed_step_leaves_no_rows(h: Harness, backend: str, table: str) -> None:
    await h.admin(f"CREATE TABLE {table} (id integer PRIMARY KEY, v integer)")
    setup, query = PARTIAL_FAILURE[backend]
    for sql in setup:
        await h.admin(sql.format(t=table))

    result = await h.run("partial", query.format(t=table))

    assert result.status is StepStatus.FAILED
    assert result.error_message
    assert await h.admin(f"SELECT id FROM {table}") == []
    assert (await h.run("after", f"SELECT count(*) AS n FROM {table}")).status is StepStatus.SUCCESS


async def test_read_only_connection_refuses_writes(
    make_harness: HarnessFactory, db_url: str, table: str
) -> None:
    h = make_harness({"db": {"url": db_url, "read_only": True}, "rw": db_url})
    await h.admin(f"CREATE TABLE {table} (id integer PRIMARY KEY)", name="rw")
    await h.admin(f"INSERT INTO {table} (id) VALUES (1)", name="rw")

    write = await h.run("write", f"INSERT INTO {table} (id) VALUES (2)")
    read = await h.run("read", f"SELECT id FROM {table}")
    write_again = await h.run("write2", f"DELETE FROM {table}")

    assert write.status is StepStatus.FAILED
    assert "read" in (write.error_message or "").lower()  # "read-only" / "READ ONLY" / "readonly"
    assert write_again.status is StepStatus.FAILED
    assert read.status is StepStatus.SUCCESS, read.error_message
    assert json.loads(read.output or "") == [{"id": 1}]
    assert await h.admin(f"SELECT id FROM {table}", name="rw") == [(1,)]


async def test_postgresql_steps_can_run_what_refuses_a_transaction_block(
    make_harness: HarnessFactory, pg_url: str, table: str
) -> None:
    # A PostgreSQL step is one statement in autocommit mode, so maintenance statements that
    # cannot run inside BEGIN ... COMMIT work as steps.
    h = make_harness({"db": pg_url})
    await h.admin(f"CREATE TABLE {table} (id integer)")
    vacuum = await h.run("vacuum", f"VACUUM {table}")
    index = await h.run("index", f"CREATE INDEX CONCURRENTLY ix_{table} ON {table} (id)")
    assert vacuum.status is StepStatus.SUCCESS, vacuum.error_message
    assert index.status is StepStatus.SUCCESS, index.error_message
    rows = await h.admin("SELECT indexname FROM pg_indexes WHERE tablename = :t", {"t": table})
    assert rows == [(f"ix_{table}",)]


# -- cancellation: the query must stop on the server -------------------------------------------


@dataclass
class LongQuery:
    """A statement that runs for a long time, and a way to see it running on the server."""

    query: str
    is_running: Callable[[], Awaitable[bool]]
    close: Callable[[], Awaitable[None]]


@pytest.fixture
async def long_query(backend: str, db_url: str, table: str) -> AsyncIterator[LongQuery]:
    tag = f"tag_{uuid.uuid4().hex[:10]}"
    monitor: AsyncEngine = create_async_engine(db_url, poolclass=NullPool)

    if backend == "postgresql":
        query = f"SELECT pg_sleep(30) AS {tag}"
        probe = (
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
            "AND pid <> pg_backend_pid() AND query LIKE :pattern"
        )
    elif backend == "mariadb":
        query = f"SELECT SLEEP(30) AS {tag}"
        probe = (
            "SELECT count(*) FROM information_schema.PROCESSLIST "
            "WHERE ID <> CONNECTION_ID() AND INFO LIKE :pattern"
        )
    else:
        # A write that computes for minutes holds SQLite's write lock the whole time.
        async with monitor.begin() as conn:
            await conn.execute(text(f"CREATE TABLE {table} (n integer)"))
        query = (
            f"INSERT INTO {table} (n) SELECT count(*) FROM (WITH RECURSIVE c(x) AS "
            "(SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000000000) SELECT x FROM c)"
        )
        probe = ""

    async def is_running() -> bool:
        if backend == "sqlite":
            return await _sqlite_write_locked(db_url, table)
        async with monitor.connect() as conn:
            count = (await conn.execute(text(probe), {"pattern": f"%{tag}%"})).scalar_one()
        return bool(count)

    yield LongQuery(query, is_running, monitor.dispose)
    await monitor.dispose()


async def _sqlite_write_locked(url: str, table: str) -> bool:
    """True while another connection holds the database's write lock."""
    engine = create_async_engine(url, poolclass=NullPool, connect_args={"timeout": 0})
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"DELETE FROM {table} WHERE n = -1"))
    except Exception as exc:
        if "locked" in str(exc):
            return True
        raise
    finally:
        await engine.dispose()
    return False


async def test_timeout_stops_the_query_on_the_server(h: Harness, long_query: LongQuery) -> None:
    step = h.step("slow", long_query.query, timeout=1)

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await run_with_engine_timeout(step)
    elapsed = time.monotonic() - started

    assert elapsed < 3, f"the step took {elapsed:.1f}s to give up"
    await wait_until(
        lambda: _not(long_query.is_running()), within=2, what="query gone from the server"
    )
    after = await h.run("after", "SELECT 1 AS ok")
    assert after.status is StepStatus.SUCCESS, after.error_message
    assert json.loads(after.output or "") == [{"ok": 1}]


async def test_task_cancel_stops_the_query_on_the_server(h: Harness, long_query: LongQuery) -> None:
    step = h.step("slow", long_query.query)
    task = asyncio.create_task(step.run(), name="test-sql-step")
    await wait_until(long_query.is_running, within=10, what="query running on the server")

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await wait_until(
        lambda: _not(long_query.is_running()), within=2, what="query gone from the server"
    )
    for i in range(3):  # the pool is healthy: several steps in a row on the same name
        after = await h.run(f"after{i}", "SELECT 1 AS ok")
        assert after.status is StepStatus.SUCCESS, after.error_message


async def test_second_cancel_during_cleanup_still_stops_the_query(
    h: Harness, long_query: LongQuery
) -> None:
    step = h.step("slow", long_query.query)
    task = asyncio.create_task(step.run(), name="test-sql-step")
    await wait_until(long_query.is_running, within=10, what="query running on the server")

    assert await step.cancel() is True
    await asyncio.sleep(0)  # let the clean-up start, then cancel again
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await wait_until(
        lambda: _not(long_query.is_running()), within=2, what="query gone from the server"
    )
    after = await h.run("after", "SELECT 1 AS ok")
    assert after.status is StepStatus.SUCCESS, after.error_message


async def _not(value: Awaitable[bool]) -> bool:
    return not await value


async def test_cancel_while_waiting_for_a_pooled_connection(
    make_harness: HarnessFactory, db_url: str, long_query: LongQuery
) -> None:
    h = make_harness({"db": {"url": db_url, "pool_size": 1, "max_overflow": 0}})
    holder = asyncio.create_task(h.step("holder", long_query.query).run(), name="test-holder")
    await wait_until(long_query.is_running, within=10, what="query running on the server")
    waiter = asyncio.create_task(h.step("waiter", "SELECT 1 AS ok").run(), name="test-waiter")
    # With one pooled connection, taken by the holder, the waiter's worker blocks in checkout.
    await wait_until(_true_when(lambda: _workers_of("waiter") == 1), within=5, what="waiter")

    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiter, timeout=2)  # gave up its place in the queue at once
    assert not holder.done()  # the holder is unaffected ...
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    await wait_until(
        lambda: _not(long_query.is_running()), within=2, what="query gone from the server"
    )
    after = await h.run("after", "SELECT 1 AS ok")  # ... and the single connection is back
    assert after.status is StepStatus.SUCCESS, after.error_message


def _workers_of(step_id: str) -> int:
    """Running SqlStep worker tasks of the step ``step_id``."""
    return sum(
        1
        for task in asyncio.all_tasks()
        if task.get_name().startswith("sql-step:") and task.get_name().endswith(f":{step_id}")
    )


def _true_when(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def poll() -> bool:
        return check()

    return poll


# -- PostgreSQL: the statement prepared once per pooled connection ---------------------------
@pytest.fixture
def pg_one(make_harness: HarnessFactory, pg_url: str) -> Harness:
    """PostgreSQL through a pool of one connection: every step gets the same session."""
    return make_harness({"db": {"url": pg_url, "pool_size": 1, "max_overflow": 0}})


async def test_postgresql_statement_is_prepared_once_per_connection(pg_one: Harness) -> None:
    query = "SELECT CAST(:n AS int) + 1 AS next"
    first = await pg_one.run("a", query, parameters={"n": 1})
    second = await pg_one.run("b", query, parameters={"n": 41})

    assert first.status == StepStatus.SUCCESS, first.error_message
    assert json.loads(second.output or "") == [{"next": 42}]
    # The session has exactly one prepared statement of that text (asyncpg names its own;
    # the text is what we sent), not one per run.
    rows = await pg_one.run(
        "c",
        "SELECT count(*) AS n FROM pg_prepared_statements WHERE statement LIKE :pattern",
        parameters={"pattern": "SELECT CAST($1%"},
    )
    assert json.loads(rows.output or "") == [{"n": 1}]


async def test_postgresql_a_connection_the_server_closed_is_replaced(
    pg_one: Harness, pg_url: str
) -> None:
    """A database restart closes every pooled connection: the next step gets a new one
    instead of failing on the dead one (the statement had not been sent)."""
    first = await pg_one.run("a", "SELECT pg_backend_pid() AS pid")
    pid = json.loads(first.output or "")[0]["pid"]
    admin = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid) is True
        while await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
            await asyncio.sleep(0.01)
    finally:
        await admin.close()

    again = await pg_one.run("b", "SELECT pg_backend_pid() AS pid")

    assert again.status == StepStatus.SUCCESS, again.error_message
    assert json.loads(again.output or "")[0]["pid"] != pid


async def test_postgresql_a_connection_lost_mid_statement_fails_the_step_and_is_dropped(
    pg_one: Harness, pg_url: str
) -> None:
    admin = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        running = asyncio.create_task(pg_one.run("slow", "SELECT pg_sleep(30) AS slept"))
        find = "SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%'"
        while not (pid := await admin.fetchval(find)):
            await asyncio.sleep(0.01)
        await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        lost = await running
    finally:
        await admin.close()

    # Whether it ran cannot be known: the step fails, saying why; the pool drops the session.
    assert lost.status == StepStatus.FAILED
    assert "terminat" in (lost.error_message or "") or "closed" in (lost.error_message or "")
    after = await pg_one.run("b", "SELECT 1 AS one")
    assert after.status == StepStatus.SUCCESS, after.error_message


async def test_postgresql_prepared_statement_survives_a_schema_change(
    pg_one: Harness, table: str
) -> None:
    await pg_one.admin(f"CREATE TABLE {table} (id int)")
    await pg_one.admin(f"INSERT INTO {table} VALUES (1)")
    before = await pg_one.run("a", f"SELECT * FROM {table}")
    await pg_one.admin(f"ALTER TABLE {table} ADD COLUMN label text DEFAULT 'x'")

    after = await pg_one.run("b", f"SELECT * FROM {table}")

    assert json.loads(before.output or "") == [{"id": 1}]
    assert after.status == StepStatus.SUCCESS, after.error_message
    assert json.loads(after.output or "") == [{"id": 1, "label": "x"}]


async def test_postgresql_rowcount_and_errors_on_the_prepared_path(
    pg_one: Harness, table: str
) -> None:
    await pg_one.admin(f"CREATE TABLE {table} (id int primary key)")
    inserted = await pg_one.run("i", f"INSERT INTO {table} SELECT generate_series(1, 3)")
    updated = await pg_one.run(
        "u", f"UPDATE {table} SET id = id + 10 WHERE id > :m", parameters={"m": 1}
    )
    duplicate = await pg_one.run("d", f"INSERT INTO {table} VALUES (12)")

    assert inserted.metadata["affected_rows"] == 3
    assert updated.metadata["affected_rows"] == 2
    assert updated.output is None
    assert duplicate.status == StepStatus.FAILED
    assert "UniqueViolationError" in (duplicate.error_message or "")
    assert "SQLSTATE 23505" in (duplicate.error_message or "")
