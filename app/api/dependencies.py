"""Per-request FastAPI dependencies: the app's ModernJobAPI and its stored-job service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.api.service import ModernJobAPI
from app.api.stored_jobs import StoredJobService
from app.domain.errors import EngineNotRunningError


async def get_job_api(request: Request) -> ModernJobAPI:
    """The app's ModernJobAPI; 503 (EngineNotRunningError) before startup or after shutdown.

    ``async`` although it does not await: FastAPI runs a plain ``def`` dependency in its
    thread pool, a thread hop on every request."""
    api: ModernJobAPI | None = getattr(request.app.state, "job_api", None)
    if api is None:
        raise EngineNotRunningError("the service is not started")
    return api


JobAPIDep = Annotated[ModernJobAPI, Depends(get_job_api)]


async def get_stored_jobs(api: JobAPIDep) -> StoredJobService:
    """The app's stored-job service (503 like ``get_job_api``)."""
    return api.stored_jobs


StoredJobsDep = Annotated[StoredJobService, Depends(get_stored_jobs)]
