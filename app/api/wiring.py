"""Putting the API on a FastAPI app: its routes, key checks, error handling, OpenAPI
document and the engine's lifespan (``create_modern_job_routes``, spec)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI

from app.api.calendar_routes import calendars_router
from app.api.cluster_routes import cluster_router
from app.api.deps import load_api_keys, load_settings
from app.api.errors import install_problem_handling
from app.api.events_routes import events_router
from app.api.import_routes import import_router
from app.api.jobs_routes import jobs_router
from app.api.notifications_routes import notifications_router
from app.api.open_mode import OPEN_MODE_WARNING
from app.api.openapi import install_openapi
from app.api.routes import health_router, v2_router
from app.api.security import install_security
from app.api.service import ModernJobAPI

log = logging.getLogger("app.api")


def include_routes(app: FastAPI) -> None:
    """Mount every route of the service on ``app``; each declares its own key scope."""
    app.include_router(v2_router)
    app.include_router(cluster_router)
    app.include_router(events_router)
    app.include_router(jobs_router)
    app.include_router(calendars_router)
    app.include_router(import_router)
    app.include_router(notifications_router)
    app.include_router(health_router)


def create_modern_job_routes(app: FastAPI, api: ModernJobAPI | None = None) -> ModernJobAPI:
    """
    Create modern job execution routes

    Mounts the v2 routes, ``/health`` and ``/ready`` and the problem-details error handling
    on ``app``; the engine starts and stops with the app's lifespan.

    Args:
        app: FastAPI application instance
        api: the service to use (default: ``ModernJobAPI()``, built from the environment)

    Returns:
        ModernJobAPI instance for direct access
    """
    settings = load_settings()
    if api is None:
        api = ModernJobAPI(settings=settings)
    keys = load_api_keys(settings)
    if not keys:
        log.warning(OPEN_MODE_WARNING)
    install_security(app, keys, rate_limit_per_minute=settings.rate_limit_per_minute)
    install_problem_handling(app, max_body_bytes=settings.max_body_bytes)
    include_routes(app)
    install_openapi(app)
    app.state.job_api = api
    _run_with_lifespan(app, api)
    return api


def _run_with_lifespan(app: FastAPI, api: ModernJobAPI) -> None:
    """Start ``api`` when ``app`` starts and stop it when ``app`` stops."""
    inner: Callable[[Any], contextlib.AbstractAsyncContextManager[Any]] = (
        app.router.lifespan_context
    )

    @contextlib.asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        async with inner(app_) as state:
            await api.start()
            try:
                yield state
            finally:
                await api.stop()

    app.router.lifespan_context = lifespan
