"""B1's baseline: a minimal FastAPI app doing the same database work per request as
``POST /api/v2/jobs/execute`` with one SQL step, and nothing else.

Per request: run the step's query on the SQL connection, then write the two history rows
(the job row and the step row, final state) in one transaction, and answer with a small
JSON result. PostgreSQL through bare asyncpg pools, SQLite through bare aiosqlite
connections (same pragmas as the service: WAL, busy timeout, synchronous=NORMAL,
BEGIN IMMEDIATE for writes). The tables are the service's own (migrated), so the inserts
maintain the same indexes.

Run with ``uvicorn bench.baseline_app:create_app --factory`` and
``BENCH_HISTORY_URL`` / ``BENCH_SQL_URL`` (SQLAlchemy-style URLs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiosqlite
import asyncpg
from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse

# Same pool sizes as SQLAlchemy's default QueuePool the service uses (5 + 10 overflow).
PG_POOL_MAX = 15
SQLITE_POOL = 5

JOB_INSERT = """
INSERT INTO job_executions_v2 (execution_id, job_id, job_name, status, timezone, start_time,
  end_time, duration_seconds, retry_count, metadata_json, created_at, trigger,
  job_definition_json, attempt, owner, updated_at)
VALUES ({})
"""
STEP_INSERT = """
INSERT INTO step_executions_v2 (step_execution_id, execution_id, step_id, step_name, step_type,
  status, start_time, end_time, duration_seconds, output_text, metadata_json, created_at,
  attempt, start_order, updated_at)
VALUES ({})
"""


def _placeholders(n: int, style: str) -> str:
    return ", ".join(f"${i}" for i in range(1, n + 1)) if style == "pg" else ", ".join("?" * n)


class PgBackend:
    def __init__(self, history_dsn: str, sql_dsn: str) -> None:
        self.history_dsn, self.sql_dsn = history_dsn, sql_dsn
        self.job_sql = JOB_INSERT.format(_placeholders(16, "pg"))
        self.step_sql = STEP_INSERT.format(_placeholders(15, "pg"))

    async def open(self) -> None:
        self.history = await asyncpg.create_pool(self.history_dsn, min_size=5, max_size=PG_POOL_MAX)
        self.sql = await asyncpg.create_pool(self.sql_dsn, min_size=5, max_size=PG_POOL_MAX)

    async def close(self) -> None:
        await self.history.close()
        await self.sql.close()

    async def query(self, sql: str) -> list[dict[str, Any]]:
        async with self.sql.acquire() as conn:
            return [dict(r) for r in await conn.fetch(sql)]

    async def record(self, job: tuple[Any, ...], step: tuple[Any, ...]) -> None:
        async with self.history.acquire() as conn, conn.transaction():
            await conn.execute(self.job_sql, *job)
            await conn.execute(self.step_sql, *step)

    @staticmethod
    def ts(value: datetime) -> Any:
        return value


class SqliteBackend:
    def __init__(self, history_path: str, sql_path: str) -> None:
        self.history_path, self.sql_path = history_path, sql_path
        self.job_sql = JOB_INSERT.format(_placeholders(16, "sqlite"))
        self.step_sql = STEP_INSERT.format(_placeholders(15, "sqlite"))
        self.history: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self.sql: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()

    async def _connect(self, path: str) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(path, isolation_level=None)
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA busy_timeout=30000",
            "PRAGMA foreign_keys=ON",
            "PRAGMA synchronous=NORMAL",
        ):
            await conn.execute(pragma)
        return conn

    async def open(self) -> None:
        for _ in range(SQLITE_POOL):
            self.history.put_nowait(await self._connect(self.history_path))
            self.sql.put_nowait(await self._connect(self.sql_path))

    async def close(self) -> None:
        for queue in (self.history, self.sql):
            while not queue.empty():
                await queue.get_nowait().close()

    @contextlib.asynccontextmanager
    async def _take(self, queue: asyncio.Queue[aiosqlite.Connection]) -> AsyncIterator[Any]:
        conn = await queue.get()
        try:
            yield conn
        finally:
            queue.put_nowait(conn)

    async def query(self, sql: str) -> list[dict[str, Any]]:
        async with self._take(self.sql) as conn:
            cursor = await conn.execute(sql)
            names = [d[0] for d in cursor.description]
            rows = await cursor.fetchall()
            await cursor.close()
            return [dict(zip(names, row, strict=True)) for row in rows]

    async def record(self, job: tuple[Any, ...], step: tuple[Any, ...]) -> None:
        async with self._take(self.history) as conn:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                await conn.execute(self.job_sql, job)
                await conn.execute(self.step_sql, step)
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")

    @staticmethod
    def ts(value: datetime) -> Any:
        return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _backend() -> PgBackend | SqliteBackend:
    history = os.environ["BENCH_HISTORY_URL"]
    sql = os.environ["BENCH_SQL_URL"]
    if history.startswith("postgresql"):
        strip = "postgresql+asyncpg://"
        return PgBackend(
            history.replace(strip, "postgresql://", 1), sql.replace(strip, "postgresql://", 1)
        )
    return SqliteBackend(history.split(":///", 1)[1], sql.split(":///", 1)[1])


def create_app() -> FastAPI:
    backend = _backend()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await backend.open()
        try:
            yield
        finally:
            await backend.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/api/v2/jobs/execute")
    async def execute(job: dict[str, Any] = Body(...)) -> JSONResponse:  # noqa: B008
        step = job["steps"][0]
        execution_id = uuid.uuid4().hex
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        rows = await backend.query(step["query"])
        output = json.dumps(rows, separators=(",", ":"), default=str)
        duration = time.perf_counter() - t0
        ended = datetime.now(UTC)
        ts = backend.ts
        definition = json.dumps(job, separators=(",", ":"))
        job_row = (
            execution_id, job["job_id"], job["job_name"], "success", job.get("timezone", "UTC"),
            ts(started), ts(ended), duration, 0, '{"trigger":"now"}', ts(started), "now",
            definition, 0, "baseline", ts(ended),
        )  # fmt: skip
        step_row = (
            uuid.uuid4().hex, execution_id, step["step_id"], step["step_id"], "sql", "success",
            ts(started), ts(ended), duration, output, '{"attempt":0}', ts(started), 0, 0,
            ts(ended),
        )  # fmt: skip
        await backend.record(job_row, step_row)
        body = {
            "execution_id": execution_id,
            "job_id": job["job_id"],
            "status": "success",
            "success": True,
            "start_time": started.isoformat(),
            "end_time": ended.isoformat(),
            "duration_seconds": duration,
            "steps": [
                {
                    "step_id": step["step_id"],
                    "status": "success",
                    "output": output,
                    "duration_seconds": duration,
                }
            ],
        }
        return JSONResponse(body)

    return app
