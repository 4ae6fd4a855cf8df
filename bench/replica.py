"""The service's app (``app.main.create_app``) with the benchmarks' trivial step type
registered, for replicas started as uvicorn subprocesses (``bench.replica:create_app``): B7
drains the same one-step ``bench_noop`` jobs as B5."""

from __future__ import annotations

from fastapi import FastAPI

from app.main import create_app as create_service_app
from bench.steps import install_noop


def create_app() -> FastAPI:
    install_noop()
    return create_service_app()
