"""A database outage is a transient fault: the service runs through a real dropped
connection (a TCP proxy between it and PostgreSQL, cut for 10 s and restored, without
restarting the shared server) and resumes by itself."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.cluster.conftest import Cluster, query, wait_for
from tests.conftest import PG_HOST, PG_PORT
from tests.e2e.server import free_port

CUT_SECONDS = 10.0


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to PostgreSQL. ``cut()`` drops every connection and
    refuses new ones (as a server that went away); ``restore()`` listens again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> CuttableProxy:
        self._thread.start()
        self.restore()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def restore(self) -> None:
        async def listen() -> None:
            self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)

        self._call(listen())

    def cut(self) -> None:
        async def drop() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
            for writer in list(self._links):
                writer.transport.abort()
            self._links.clear()

        self._call(drop())

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._links.difference_update((writer, up_writer))


@pytest.fixture
def proxy() -> Iterator[CuttableProxy]:
    with CuttableProxy((PG_HOST, PG_PORT)) as running:
        yield running


def ready(base_url: str) -> tuple[int, str]:
    try:
        response = httpx.get(f"{base_url}/ready", timeout=15)
    except httpx.TransportError as exc:
        return 0, str(exc)
    return response.status_code, response.text


def test_the_engine_rides_out_a_dropped_database_and_resumes(
    cluster: Cluster, proxy: CuttableProxy
) -> None:
    through_proxy = cluster.url.replace(f"{PG_HOST}:{PG_PORT}", f"127.0.0.1:{proxy.port}")
    node = cluster.start(V2_DATABASE_URL=through_proxy)
    job = {
        "job_id": "every-second",
        "job_name": "every second",
        "schedule_config": {"type": "interval", "every_seconds": 1},
        "steps": [{"step_id": "tick", "type": "shell", "script": "echo tick"}],
    }
    response = httpx.post(f"{node.base_url}/api/v2/jobs", json=job, timeout=10)
    assert response.status_code == 201, response.text

    def fires(status: str | None = None) -> int:
        sql = "SELECT count(*) AS n FROM job_executions_v2 WHERE trigger = 'schedule'"
        if status is not None:
            sql += f" AND status = '{status}'"
        return int(query(cluster.url, sql)[0]["n"])

    wait_for("three fires before the cut", lambda: fires("success") >= 3, timeout=30)
    cut_at = time.monotonic()
    proxy.cut()
    wait_for(
        "/ready to say the database is unreachable",
        lambda: (
            ready(node.base_url)[0] == 503 and "database unreachable" in ready(node.base_url)[1]
        ),
        timeout=CUT_SECONDS,
    )
    before_restore = fires()
    # The outage itself lasts CUT_SECONDS (the scenario, not a wait for anything).
    time.sleep(max(0.0, cut_at + CUT_SECONDS - time.monotonic()))
    proxy.restore()
    wait_for("/ready again", lambda: ready(node.base_url)[0] == 200, timeout=15)
    after = wait_for("fires after the cut", lambda: (n := fires("success")) >= 5 and n, timeout=30)
    assert after > 3
    assert fires() > before_restore
    response = httpx.post(f"{node.base_url}/api/v2/jobs/every-second/disable", timeout=10)
    assert response.status_code == 200
    wait_for(
        "every fire to end (none stuck by the outage)",
        lambda: fires("running") + fires("pending") == 0,
        timeout=15,
    )
    rows = query(
        cluster.url,
        "SELECT scheduled_for, status, error_message FROM job_executions_v2 "
        "WHERE trigger = 'schedule' ORDER BY scheduled_for",
    )
    # Every second from the first fire to the last has a record: it ran, or it was recorded
    # as coalesced into the catch-up run (misfire_policy run_once); none was lost.
    gaps = {
        (b["scheduled_for"] - a["scheduled_for"]).total_seconds()
        for a, b in itertools.pairwise(rows)
    }
    assert gaps == {1.0}
    statuses = {r["status"] for r in rows}
    assert statuses <= {"success", "cancelled"}
    coalesced = [r for r in rows if r["status"] == "cancelled"]
    # Recorded with their reason: coalesced into the catch-up run, or skipped while a run of
    # the job was still going (overlap_policy skip).
    assert any("coalesced" in (r["error_message"] or "") for r in coalesced)
    assert all((r["error_message"] or "").startswith("skipped: ") for r in coalesced)
    assert "engine failure" not in node.log()
