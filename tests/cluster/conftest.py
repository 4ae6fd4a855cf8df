"""Several real service processes (``python -m app``, uvicorn inside) on one PostgreSQL
database, each on its own loopback port: the cluster as it is deployed. Nodes heartbeat
every 0.3 s and are dead after 2 s, so a takeover is seen in seconds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.persistence import upgrade_to_head
from tests.conftest import temporary_pg_database
from tests.e2e.server import LiveServer, live_server

HEARTBEAT = 0.3
NODE_TIMEOUT = 2.0
CLUSTER_ENV = {
    "V2_HEARTBEAT_SECONDS": str(HEARTBEAT),
    "V2_NODE_TIMEOUT_SECONDS": str(NODE_TIMEOUT),
    "V2_POLL_INTERVAL_SECONDS": "0.2",
    "V2_AUTO_MIGRATE": "false",
}


@pytest.fixture
def cluster_db() -> Iterator[str]:
    """A fresh PostgreSQL database, migrated, for one test (SQLAlchemy URL)."""
    with temporary_pg_database() as url:
        asyncio.run(upgrade_to_head(url))
        yield url


def raw_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def query(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Rows of ``sql`` read straight from the database (not through the service)."""

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(raw_dsn(url))
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


class Cluster:
    def __init__(self, stack: contextlib.ExitStack, url: str, root: Path) -> None:
        self._stack = stack
        self.url = url
        self.root = root
        self.nodes: list[LiveServer] = []

    def start(self, **env: str) -> LiveServer:
        workdir = self.root / f"node{len(self.nodes)}"
        workdir.mkdir()
        server = self._stack.enter_context(
            live_server(workdir, **{"V2_DATABASE_URL": self.url, **CLUSTER_ENV, **env})
        )
        self.nodes.append(server)
        return server


@pytest.fixture
def cluster(cluster_db: str, tmp_path: Path) -> Iterator[Cluster]:
    with contextlib.ExitStack() as stack:
        yield Cluster(stack, cluster_db, tmp_path)


def wait_for(
    what: str, check: Callable[[], Any], *, timeout: float = 30.0, every: float = 0.05
) -> Any:
    """Poll ``check`` until it returns something truthy (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def get_json(server: LiveServer, path: str) -> Any:
    response = httpx.get(server.base_url + path, timeout=10.0)
    response.raise_for_status()
    return response.json()


def execution(server: LiveServer, execution_id: str) -> dict[str, Any]:
    data: dict[str, Any] = get_json(server, f"/api/v2/executions/{execution_id}")
    return data


def kill(server: LiveServer, sig: int = signal.SIGKILL) -> None:
    os.kill(server.process.pid, sig)
    if sig == signal.SIGKILL:
        server.process.wait(10)


def node_id_of(server: LiveServer) -> str:
    status = get_json(server, "/api/v2/cluster")
    node_id: str = status["node_id"]
    return node_id
