"""Shared fixtures: fresh PostgreSQL / MariaDB databases per test session, SQLite files.

Each session creates its own uniquely named databases and drops them at the end, so runs
never see each other's data. Admin URLs can be overridden with V2_TEST_PG_ADMIN and
V2_TEST_MARIADB_ADMIN (host, port, user) for other machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiomysql
import asyncpg
import pytest

PG_HOST = os.environ.get("V2_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("V2_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("V2_TEST_PG_USER", "postgres")
MY_HOST = os.environ.get("V2_TEST_MARIADB_HOST", "127.0.0.1")
MY_PORT = int(os.environ.get("V2_TEST_MARIADB_PORT", "3306"))
MY_USER = os.environ.get("V2_TEST_MARIADB_USER", "root")


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _my_admin(sql: str) -> None:
    conn = await aiomysql.connect(host=MY_HOST, port=MY_PORT, user=MY_USER, password="")
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql)
        await conn.commit()
    finally:
        conn.close()


def make_pg_database() -> tuple[str, str]:
    name = _unique("jsv2_test")
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    return name, f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


def drop_pg_database(name: str) -> None:
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def make_mariadb_database() -> tuple[str, str]:
    name = _unique("jsv2_test")
    asyncio.run(_my_admin(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    return name, f"mysql+aiomysql://{MY_USER}@{MY_HOST}:{MY_PORT}/{name}?charset=utf8mb4"


def drop_mariadb_database(name: str) -> None:
    asyncio.run(_my_admin(f"DROP DATABASE IF EXISTS `{name}`"))


@contextlib.contextmanager
def temporary_pg_database() -> Iterator[str]:
    """URL (postgresql+asyncpg) of a new PostgreSQL database, dropped afterwards (a fixture
    of any scope is ``with temporary_pg_database() as url: yield url``)."""
    name, url = make_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(name)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL (postgresql+asyncpg) of a fresh PostgreSQL database for this test session."""
    with temporary_pg_database() as url:
        yield url


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test (a module may override its scope)."""
    with temporary_pg_database() as url:
        yield url


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    """URL (mysql+aiomysql) of a fresh MariaDB database for this test session."""
    name, url = make_mariadb_database()
    yield url
    drop_mariadb_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL (sqlite+aiosqlite) of a new SQLite file for this test."""
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session; tests get copies of it."""
    from app.persistence import upgrade_to_head

    path = tmp_path_factory.mktemp("template") / "jobscheduler.db"
    asyncio.run(upgrade_to_head(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(autouse=True)
def service_database(
    migrated_sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Every test's Settings() point at its own migrated SQLite file (never ./data)."""
    target = tmp_path / "service.db"
    shutil.copyfile(migrated_sqlite_template, target)
    url = f"sqlite+aiosqlite:///{target}"
    monkeypatch.setenv("V2_DATABASE_URL", url)
    monkeypatch.setenv("V2_AUTO_MIGRATE", "false")
    return url
