"""An app per test with its lifespan running, and an ASGI client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from app.api.service import ModernJobAPI
from app.main import create_app
from app.settings import Settings
from tests.api.helpers import BASE_URL, make_settings


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> Settings:
    """Test settings; override some with ``@pytest.mark.parametrize("settings", [{...}],
    indirect=True)``."""
    return make_settings(**getattr(request, "param", {}))


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def job_api(app: FastAPI) -> ModernJobAPI:
    api = app.state.job_api
    assert isinstance(api, ModernJobAPI)
    return api


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        yield http


@pytest.fixture(params=["sqlite", "postgresql"])
def history_url(request: pytest.FixtureRequest, service_database: str) -> str:
    """The service's database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return service_database
    url: str = request.getfixturevalue("fresh_pg_url")  # the app migrates it
    return url
