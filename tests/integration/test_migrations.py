"""Alembic migrations on SQLite and PostgreSQL: up, down, up again, and no drift between the
models and the migrated schema (what ``alembic check`` verifies)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from app.persistence.database import create_engine
from app.persistence.migrate import (
    alembic_config,
    current_revision,
    downgrade_to_base,
    schema_drift,
    upgrade_to_head,
)

ROOT = Path(__file__).resolve().parents[2]
ALEMBIC = [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini")]
TABLES = {
    "job_executions_v2",
    "step_executions_v2",
    "scheduled_runs_v2",
    "jobs_v2",
    "calendars_v2",
}


async def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:

            def names(sync_conn: Connection) -> set[str]:
                return set(inspect(sync_conn).get_table_names())

            return await conn.run_sync(names)
    finally:
        await engine.dispose()


def head_revision() -> str:
    (head,) = ScriptDirectory.from_config(alembic_config()).get_heads()
    return head


def test_the_migrations_have_a_single_head() -> None:
    assert ScriptDirectory.from_config(alembic_config()).get_heads() == [head_revision()]


async def test_upgrade_downgrade_upgrade(empty_db_url: str) -> None:
    url = empty_db_url
    assert await current_revision(url) is None

    await upgrade_to_head(url)
    assert await current_revision(url) == head_revision()
    assert await table_names(url) >= TABLES
    assert await schema_drift(url) == []

    await downgrade_to_base(url)
    assert await current_revision(url) is None
    assert await table_names(url) & TABLES == set()
    # With the tables gone the comparison reports them: the drift check can fail.
    assert len(await schema_drift(url)) >= len(TABLES)

    await upgrade_to_head(url)
    assert await current_revision(url) == head_revision()
    assert await schema_drift(url) == []

    await upgrade_to_head(url)  # already at head: nothing to do, no error
    assert await current_revision(url) == head_revision()


async def test_replicas_starting_together_migrate_once(empty_db_url: str) -> None:
    await asyncio.gather(*(upgrade_to_head(empty_db_url) for _ in range(4)))
    assert await current_revision(empty_db_url) == head_revision()
    assert await schema_drift(empty_db_url) == []


async def test_concurrent_upgrades_of_different_databases(tmp_path: Path) -> None:
    """Alembic's command state is process-global: commands on different databases started
    together in one process must not interleave."""
    urls = [f"sqlite+aiosqlite:///{tmp_path / f'db{i}.db'}" for i in range(4)]
    await asyncio.gather(*(upgrade_to_head(url) for url in urls))
    for url in urls:
        assert await current_revision(url) == head_revision()


def _alembic(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "V2_DATABASE_URL"}
    full_env.update(env)
    full_env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [*ALEMBIC, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60
    )


def test_cli_defaults_to_the_embedded_sqlite_file(tmp_path: Path) -> None:
    done = _alembic(["upgrade", "head"], tmp_path, {})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / "jobscheduler.db").is_file()
    check = _alembic(["check"], tmp_path, {})
    assert check.returncode == 0, check.stderr


def test_cli_takes_v2_database_url_and_x_url(tmp_path: Path, fresh_pg_url: str) -> None:
    target = tmp_path / "nested" / "dir" / "store.db"
    done = _alembic(
        ["upgrade", "head"], tmp_path, {"V2_DATABASE_URL": f"sqlite+aiosqlite:///{target}"}
    )
    assert done.returncode == 0, done.stderr
    assert target.is_file()
    assert not (tmp_path / "data").exists()

    done = _alembic(["-x", f"url={fresh_pg_url}", "upgrade", "head"], tmp_path, {})
    assert done.returncode == 0, done.stderr
    check = _alembic(["-x", f"url={fresh_pg_url}", "check"], tmp_path, {})
    assert check.returncode == 0, check.stderr
    current = _alembic(["-x", f"url={fresh_pg_url}", "current"], tmp_path, {})
    assert head_revision() in current.stdout


def test_cli_offline_sql_for_postgresql(tmp_path: Path) -> None:
    done = _alembic(
        ["-x", "url=postgresql+asyncpg://nobody@127.0.0.1/none", "upgrade", "head", "--sql"],
        tmp_path,
        {},
    )
    assert done.returncode == 0, done.stderr
    for table in TABLES:
        assert f"CREATE TABLE {table}" in done.stdout
    assert "TIMESTAMP WITH TIME ZONE" in done.stdout
