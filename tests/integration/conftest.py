"""Store backends for the contract suites (ExecutionStore and JobStore): the in-memory
store, the SQL store on SQLite (a fresh migrated file per test) and on PostgreSQL (one
migrated database per test module, emptied before each test)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from app.engine.memory_store import InMemoryExecutionStore
from app.persistence import SqlExecutionStore, upgrade_to_head
from tests.conftest import drop_pg_database, make_pg_database, temporary_pg_database

BACKENDS = ["memory", "sqlite", "postgresql"]
SQL_BACKENDS = ["sqlite", "postgresql"]

StoreFactory = Callable[..., Awaitable[Any]]


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """A new database without any table: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return sqlite_url
    url: str = request.getfixturevalue("fresh_pg_url")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
async def migrated_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A new database migrated to head, on SQLite and on PostgreSQL (one per test)."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'migrated.db'}"
        await upgrade_to_head(url)
        yield url
        return
    name, url = await asyncio.to_thread(make_pg_database)
    try:
        await upgrade_to_head(url)
        yield url
    finally:
        await asyncio.to_thread(drop_pg_database, name)


@pytest.fixture(scope="module")
def pg_store_url() -> Iterator[str]:
    """A PostgreSQL database of this module, migrated to head."""
    with temporary_pg_database() as url:
        asyncio.run(upgrade_to_head(url))
        yield url


async def _truncate(url: str) -> None:
    store = SqlExecutionStore(url)
    await store.open()
    try:
        async with store.engine.begin() as conn:
            await conn.execute(
                text(
                    "TRUNCATE jobs_v2, scheduled_runs_v2, step_executions_v2, job_executions_v2, "
                    "notification_outbox_v2, scheduler_nodes, job_serial_locks_v2"
                )
            )
    finally:
        await store.close()


@pytest.fixture
def pg_url_for_test(request: pytest.FixtureRequest) -> str | None:
    """The module's PostgreSQL URL when this test runs on PostgreSQL (a sync fixture: the
    database is made with asyncio.run, outside the test's event loop)."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is None or "postgresql" not in callspec.params.values():
        return None
    url: str = request.getfixturevalue("pg_store_url")
    return url


@pytest.fixture
async def make_store(sqlite_url: str, pg_url_for_test: str | None) -> AsyncIterator[StoreFactory]:
    """``await make_store(backend, **options)``: an open store; the SQL backends of one test
    share one database, so two instances see the same data."""
    opened: list[Any] = []
    prepared: set[str] = set()

    async def factory(backend: str, **options: Any) -> Any:
        store: Any
        if backend == "memory":
            store = InMemoryExecutionStore(**options)
        else:
            if backend == "sqlite":
                url = sqlite_url
                if backend not in prepared:
                    await upgrade_to_head(url)
            else:
                assert pg_url_for_test is not None, "parametrize the test with 'postgresql'"
                url = pg_url_for_test
                if backend not in prepared:
                    await _truncate(url)
            prepared.add(backend)
            store = SqlExecutionStore(url, **options)
        await store.open()
        opened.append(store)
        return store

    yield factory
    for store in reversed(opened):
        await store.close()


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, make_store: StoreFactory) -> Any:
    return await make_store(request.param)


@pytest.fixture(params=SQL_BACKENDS)
async def sql_store(request: pytest.FixtureRequest, make_store: StoreFactory) -> Any:
    return await make_store(request.param)
