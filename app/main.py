"""Composition root: ``create_app(settings)`` builds the FastAPI app; its lifespan builds the
engine from settings, starts it, and stops it on shutdown with a grace period.

``python -m app`` serves it on V2_HOST:V2_PORT (``app/__main__.py``). Without API keys the
app refuses a non-loopback V2_HOST, and logs a warning that the API is open.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app.api.deps import (
    build_engine,
    freeze_startup_objects,
    load_api_keys,
    prepare_database,
)
from app.api.errors import install_problem_handling
from app.api.metrics_routes import metrics_router
from app.api.observability import observability
from app.api.open_mode import OPEN_MODE_WARNING, check_bind_address
from app.api.openapi import API_DESCRIPTION, SWAGGER_UI_PARAMETERS, TAGS_METADATA, install_openapi
from app.api.security import install_security
from app.api.service import ModernJobAPI
from app.api.wiring import include_routes
from app.console import install_console
from app.settings import Settings

API_VERSION = "2.0.0"
log = logging.getLogger("app")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service: v2 routes, health probes, problem-details errors, offline Swagger UI.

    Raises ``InsecureBindError`` when ``settings.host`` is not loopback and no API keys are
    configured, ``ConfigurationError`` for an invalid key list.
    """
    if settings is None:
        settings = Settings()
        settings.configure_logging()
    config = settings
    keys = load_api_keys(settings)
    check_bind_address(settings.host, keys_configured=bool(keys))
    if not keys:
        log.warning(OPEN_MODE_WARNING)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            await prepare_database(config)
            engine = build_engine(config)
            observed = await stack.enter_async_context(observability(app, engine, config))
            api = ModernJobAPI(engine, settings=config)
            await api.start()
            freeze_startup_objects()
            # Runs on shutdown: running jobs get V2_SHUTDOWN_GRACE_SECONDS to finish, then
            # they are cancelled and recorded CANCELLED.
            stack.push_async_callback(api.stop)
            observed.start()
            stack.push_async_callback(observed.stop)
            app.state.job_api = api
            stack.callback(setattr, app.state, "job_api", None)
            yield

    app = FastAPIOffline(
        title="Job Scheduler V2",
        version=API_VERSION,
        description=API_DESCRIPTION,
        openapi_tags=TAGS_METADATA,
        swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        lifespan=lifespan,
    )
    install_security(app, keys, rate_limit_per_minute=settings.rate_limit_per_minute)
    install_problem_handling(app, max_body_bytes=settings.max_body_bytes)
    include_routes(app)
    app.include_router(metrics_router)
    secret = settings.console_secret
    install_console(app, secret=secret.get_secret_value() if secret else None)
    install_openapi(app)
    return app
