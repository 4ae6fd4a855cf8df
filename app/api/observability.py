"""Metrics and notifications wired onto an engine from settings (called by the lifespan)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from app.engine.engine import NewExecutionEngine
from app.engine.metrics import EngineMetrics
from app.settings import Settings


@contextlib.asynccontextmanager
async def observability(
    app: FastAPI, engine: NewExecutionEngine, settings: Settings
) -> AsyncIterator[EngineMetrics]:
    """Observe ``engine`` (enter before it starts, so that what its start-up recovery
    records is counted) and publish the metrics on ``app.state``."""
    metrics = EngineMetrics(engine, job_label_limit=settings.metrics_job_label_limit)
    engine.observers.add(metrics)
    app.state.metrics = metrics
    app.state.metrics_public = settings.metrics_public
    try:
        yield metrics
    finally:
        engine.observers.remove(metrics)
        app.state.metrics = None
