"""The cluster's queue depths (``cluster_waiting_by_timezone`` of the status): runs due and
not started on any node, per timezone; runs waiting for a later time, running and ended
ones do not count."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path

from app.domain import JobStatus
from app.domain.records import ScheduledRun
from app.domain.timeutil import utc_now
from app.engine.engine import NewExecutionEngine
from app.persistence import SqlExecutionStore, upgrade_to_head
from tests.integration.test_store_contract import job_def, result_of


async def test_only_due_and_queued_runs_count(sql_store: SqlExecutionStore) -> None:
    store = sql_store
    now = utc_now()
    berlin, tokyo = job_def("b", timezone="Europe/Berlin"), job_def("t", timezone="Asia/Tokyo")
    # Queued at once on some node, not started: counts.
    await store.record_pending("queued-1", berlin, trigger="queued")
    await store.record_pending("queued-2", tokyo, trigger="now")
    # Due a minute ago, not claimed yet: counts. Due in an hour: does not.
    await store.add_scheduled_run(ScheduledRun("due", tokyo, now - timedelta(minutes=1)))
    for i in range(5):
        later = ScheduledRun(f"later-{i}", berlin, now + timedelta(hours=1 + i))
        await store.add_scheduled_run(later)
    # Running and finished ones do not count.
    await store.record_pending("running", berlin, trigger="now")
    await store.record_job(result_of("running", JobStatus.RUNNING, job=berlin))
    await store.record_pending("done", tokyo, trigger="now")
    await store.record_job(result_of("done", JobStatus.SUCCESS, job=tokyo))

    waiting = await store.waiting_by_timezone(now)

    assert waiting == {"Europe/Berlin": 1, "Asia/Tokyo": 2}
    assert await store.waiting_by_timezone(now + timedelta(hours=2, minutes=1)) == {
        "Europe/Berlin": 3,
        "Asia/Tokyo": 2,
    }


async def test_a_sqlite_store_is_exclusive_and_postgresql_is_shared(
    sql_store: SqlExecutionStore,
) -> None:
    assert sql_store.exclusive is sql_store.url.startswith("sqlite")


async def test_a_sqlite_node_keeps_its_lease_while_a_long_write_holds_the_file(
    tmp_path: Path,
) -> None:
    """On SQLite only this process serves the file, so a heartbeat that cannot commit for
    longer than the node timeout (another writer holds the file) does not stop the node
    from taking work: nobody else can take it over."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'one.db'}"
    await upgrade_to_head(url)
    engine = NewExecutionEngine(
        store=SqlExecutionStore(url), heartbeat_seconds=0.05, node_timeout_seconds=0.3
    )
    await engine.start()
    writer = sqlite3.connect(tmp_path / "one.db", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # holds the write lock: no heartbeat commits

        async def heartbeat_age() -> float:
            health = await engine.health_check()
            return float(health["node"]["last_heartbeat_age_seconds"] or 0.0)

        while await heartbeat_age() < 0.6:  # twice the node timeout without a heartbeat
            await asyncio.sleep(0.05)
        health = await engine.health_check()
        assert health["node"]["lease_valid"] is True
        assert health["healthy"] is True, health["failure"]
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        await engine.stop()
