"""Run the Alembic migrations from Python (service startup, tests).

Alembic commands are synchronous and keep their state in process-global proxies
(``alembic.context``, ``alembic.op``), so two commands must never interleave. Each command
therefore runs in a worker thread (the caller's event loop keeps serving), one at a time
per process, on its own short-lived event loop; ``env.py`` gets the open connection through
``config.attributes["connection"]`` instead of starting a loop of its own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection

from app.persistence.database import SQLITE_IMMEDIATE, create_engine
from app.persistence.models import Base


def find_migrations_dir() -> Path:
    """``migrations/`` of the repository (next to ``app/``) or, for an installed package
    (the Docker image), of the working directory."""
    candidates = [Path(__file__).resolve().parents[2] / "migrations", Path.cwd() / "migrations"]
    for candidate in candidates:
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(
        "Alembic migrations not found; looked in " + ", ".join(str(c) for c in candidates)
    )


def alembic_config(url: str | None = None, *, script_location: Path | None = None) -> Config:
    """An Alembic Config for the project's migrations, without reading ``alembic.ini``."""
    config = Config()
    location = str(script_location or find_migrations_dir())
    config.set_main_option("script_location", location.replace("%", "%%"))
    if url is not None:
        config.attributes["url"] = url
    return config


#: PostgreSQL advisory lock key held while migrating ("jsv2mig" in ASCII).
MIGRATION_LOCK_KEY = 0x6A7376326D6967


_ALEMBIC_LOCK = threading.Lock()


async def _run(url: str, action: Callable[[Config], None]) -> None:
    await asyncio.to_thread(_run_in_thread, url, action)


def _run_in_thread(url: str, action: Callable[[Config], None]) -> None:
    with _ALEMBIC_LOCK:
        asyncio.run(_migrate(url, action))


async def _migrate(url: str, action: Callable[[Config], None]) -> None:
    """Run ``action`` in one transaction that several starting replicas take in turn: a
    PostgreSQL advisory lock, or BEGIN IMMEDIATE on SQLite. The later ones then find the
    database at head and do nothing."""
    engine = create_engine(url, {"poolclass": pool.NullPool})
    try:
        async with engine.execution_options(**{SQLITE_IMMEDIATE: True}).begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )

            def run(sync_conn: Connection) -> None:
                config = alembic_config(url)
                config.attributes["connection"] = sync_conn
                action(config)

            await conn.run_sync(run)
    finally:
        await engine.dispose()


async def upgrade_to_head(url: str) -> None:
    """Bring the database at ``url`` to the latest revision (one transaction on PostgreSQL)."""
    await _run(url, lambda config: command.upgrade(config, "head"))


async def downgrade_to_base(url: str) -> None:
    """Undo every revision (tests)."""
    await _run(url, lambda config: command.downgrade(config, "base"))


async def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at, or None when it was never migrated."""
    engine = create_engine(url, {"poolclass": pool.NullPool})
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync_conn: MigrationContext.configure(sync_conn).get_current_revision()
            )
    finally:
        await engine.dispose()


async def schema_drift(url: str) -> list[object]:
    """What ``alembic check`` would report: differences between the models and the
    database at ``url`` (empty when they agree)."""
    engine = create_engine(url, {"poolclass": pool.NullPool})
    try:
        async with engine.connect() as conn:

            def compare(sync_conn: Connection) -> list[object]:
                context = MigrationContext.configure(
                    sync_conn,
                    opts={
                        "compare_type": True,
                        "render_as_batch": sync_conn.dialect.name == "sqlite",
                    },
                )
                return list(compare_metadata(context, Base.metadata))

            return await conn.run_sync(compare)
    finally:
        await engine.dispose()
