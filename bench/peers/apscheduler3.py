"""APScheduler 3.11 given one-off jobs due at set times (the B3-peer and APScheduler's
B3-capacity steps).

Set up as APScheduler's user guide shows for an asyncio application with persistent jobs:
``AsyncIOScheduler`` with a ``SQLAlchemyJobStore`` (SQLAlchemy's default ``postgresql://``
driver, psycopg 3) on the same PostgreSQL server as the service, the default ``AsyncIOExecutor`` and
job defaults (``misfire_grace_time`` 1 s: a run later than that is skipped and reported as
missed). Each job is a ``date`` trigger calling a module-level coroutine, referenced by its
textual name as a persistent job store requires.

The jobs are added while the scheduler is started paused (each ``add_job`` is one INSERT);
the scheduler is resumed before the first is due. Lateness is the moment the coroutine starts
minus its ``run_date``, on the wall clock like the service's recorded ``start_time``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib import metadata
from typing import Any

from bench.common import cpu_seconds

# run_date (epoch seconds) -> when the job's coroutine started (epoch seconds)
_STARTED: list[tuple[float, float]] = []
PILOT = 200


def version() -> str:
    return metadata.version("apscheduler")


async def fire(due: float) -> None:
    """The job: records when it started (textual reference ``bench.peers.apscheduler3:fire``)."""
    _STARTED.append((due, time.time()))


def _sync_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def run_schedule(
    url: str, count: int, when: Callable[[int, datetime], datetime], *, window: float
) -> dict[str, Any]:
    """Schedule ``count`` one-off jobs, job ``i`` due at ``when(i, t0)``, and let them run.

    ``t0`` is chosen after a pilot so that adding all jobs finishes before the first is due.
    Returns the lateness list (seconds), how many were missed and the CPU per start."""
    from apscheduler.events import EVENT_JOB_MISSED
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    _STARTED.clear()
    missed = 0

    def on_missed(event: Any) -> None:
        nonlocal missed
        missed += 1

    store = SQLAlchemyJobStore(url=_sync_url(url))
    scheduler = AsyncIOScheduler(jobstores={"default": store}, timezone=UTC)
    scheduler.add_listener(on_missed, EVENT_JOB_MISSED)
    scheduler.start(paused=True)
    try:
        far = datetime.now(UTC) + timedelta(days=365)
        t = time.perf_counter()
        for i in range(PILOT):
            scheduler.add_job(fire, "date", run_date=far, args=[far.timestamp()], id=f"pilot{i}")
        rate = PILOT / (time.perf_counter() - t)
        for i in range(PILOT):
            scheduler.remove_job(f"pilot{i}")
        lead = 1.25 * count / rate + 2.0
        t0 = datetime.now(UTC) + timedelta(seconds=lead)
        t = time.perf_counter()
        for i in range(count):
            due = when(i, t0)
            scheduler.add_job(fire, "date", run_date=due, args=[due.timestamp()], id=f"j{i}")
        create_seconds = time.perf_counter() - t
        margin = (t0 - datetime.now(UTC)).total_seconds()
        scheduler.resume()
        await asyncio.sleep(max(0.0, margin - 0.5))  # CPU counts from 0.5 s before the first
        cpu0 = cpu_seconds()
        deadline = time.monotonic() + window + 60
        while len(_STARTED) + missed < count and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # APScheduler has no "all done" event to wait on
        cpu = cpu_seconds() - cpu0
    finally:
        scheduler.shutdown(wait=False)
        store.engine.dispose()
    late = [started - due for due, started in _STARTED]
    return {
        "lateness": late,
        "missed": missed,
        "not_run": count - len(late) - missed,
        "cpu_per_start_us": cpu / max(1, len(late)) * 1e6,
        "create_seconds": create_seconds,
        "margin_before_first_due_seconds": margin,
    }
