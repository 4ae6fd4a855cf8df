"""Building the service's engine in the benchmark process, exactly as the server does
(``app.api.deps.build_engine`` from ``Settings``), on a given database."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from app.api.deps import build_engine, build_store
from app.engine.engine import NewExecutionEngine
from app.engine.ports import ExecutionStore
from app.settings import Settings


def settings_for(
    database_url: str, connections: dict[str, Any] | None = None, **overrides: Any
) -> Settings:
    """The service's settings (defaults), with the bench database and SQL connections."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "connections": connections or {},
        "log_level": "WARNING",
        "auto_migrate": True,
    }
    values.update(overrides)
    # bench.__main__ removes V2_* from the environment, so these are the service defaults.
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_engine(
    database_url: str,
    connections: dict[str, Any] | None = None,
    *,
    store: ExecutionStore | None = None,
    start: bool = True,
    **overrides: Any,
) -> AsyncIterator[NewExecutionEngine]:
    """A started engine built like the server's (migrating the database first)."""
    from app.api.deps import freeze_startup_objects, prepare_database

    settings = settings_for(database_url, connections, **overrides)
    await prepare_database(settings)
    engine = build_engine(settings, store if store is not None else build_store(settings))
    if start:
        await engine.start()
        freeze_startup_objects()  # as the server does once it has started
    try:
        yield engine
    finally:
        await engine.stop(wait_for_jobs=True, timeout=30)


def connections_env(connections: dict[str, Any]) -> str:
    return json.dumps(connections)
