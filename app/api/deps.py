"""The engine built from settings (with ``app.main``, the only place that reads settings).
The per-request FastAPI dependencies are in ``app.api.dependencies``."""

from __future__ import annotations

import gc

from app.api.keys import ApiKey, read_api_keys
from app.engine.engine import NewExecutionEngine
from app.engine.memory_store import InMemoryExecutionStore
from app.engine.ports import ExecutionStore
from app.persistence import SqlExecutionStore, upgrade_to_head
from app.settings import Settings
from app.steps.connections import ConnectionRegistry
from app.steps.resources import StepResources


def load_settings() -> Settings:
    """Settings from the V2_* environment."""
    return Settings()


def load_api_keys(settings: Settings) -> list[ApiKey]:
    """The API keys of ``V2_API_KEYS`` / ``V2_API_KEYS_FILE`` (empty: open mode);
    ``ConfigurationError`` naming the bad entry."""
    return read_api_keys(settings.api_keys, settings.api_keys_file)


def build_store(settings: Settings) -> ExecutionStore:
    """The database store at ``V2_DATABASE_URL`` (migrated at startup when
    ``V2_AUTO_MIGRATE``); ``memory://`` keeps everything in process memory instead."""
    if settings.database_url == "memory://":
        return InMemoryExecutionStore()
    return SqlExecutionStore(settings.database_url, max_output_chars=settings.max_output_bytes)


async def prepare_database(settings: Settings) -> None:
    """Upgrade the database to the latest revision when ``V2_AUTO_MIGRATE`` is on."""
    if settings.auto_migrate and settings.database_url != "memory://":
        await upgrade_to_head(settings.database_url)


def build_engine(settings: Settings, store: ExecutionStore | None = None) -> NewExecutionEngine:
    """A NewExecutionEngine configured from ``settings`` (default store: ``build_store``)."""
    return NewExecutionEngine(
        settings.max_workers,
        settings.default_timeout,
        queue_max_concurrent=settings.queue_max_concurrent,
        store=store if store is not None else build_store(settings),
        resources=StepResources(
            connections=ConnectionRegistry(settings.connections, pool_size=settings.max_workers),
            powershell_executable=settings.powershell_executable,
            shell_executable=settings.shell_executable,
            max_output_bytes=settings.max_output_bytes,
            max_result_rows=settings.max_result_rows,
            kill_grace_seconds=settings.kill_grace_seconds,
            script_roots=tuple(settings.script_roots),
        ),
        enable_step_caching=settings.enable_step_caching,
        schedule_grace_seconds=settings.schedule_grace_seconds,
        poll_interval_seconds=settings.poll_interval_seconds,
        misfire_grace_seconds=settings.misfire_grace_seconds,
        history_retention_days=settings.history_retention_days,
        heartbeat_seconds=settings.heartbeat_seconds,
        node_timeout_seconds=settings.node_timeout_seconds,
    )


#: Allocations between young-generation collections, and how many of each generation's
#: collections make one of the next (CPython's defaults: 700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 100)


def freeze_startup_objects() -> None:
    """Keep what exists once the service has started (modules, the app, the engine, compiled
    statements) out of every later garbage collection: it lives as long as the process, and
    scanning it made full collections stall the event loop for 50-90 ms (the benchmarks'
    scheduling lateness and latency tails). Then collect less often (``GC_THRESHOLDS``):
    every execution allocates thousands of short-lived objects, almost none in cycles, and
    at CPython's default of a collection every 700 allocations the collector took 8-15% of
    the engine's time per job (B2 on the in-memory store, 1- and 40-step jobs)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
