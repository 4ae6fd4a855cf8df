"""The cluster-wide serial lock of a job (overlap ``queue``, ``run_all`` catch-ups): one
holder at a time, idempotent for its holder, released only by its holder, and taken from a
holder whose node died or whose execution ended."""

from __future__ import annotations

import asyncio

from app.domain import JobStatus
from app.domain.cluster import NodeInfo
from app.persistence import SqlExecutionStore
from tests.integration.test_store_contract import result_of

TIMEOUT = 30.0


def node(node_id: str) -> NodeInfo:
    return NodeInfo(node_id=node_id, host="test-host", pid=1, version="test")


async def test_one_holder_at_a_time_released_only_by_it(sql_store: SqlExecutionStore) -> None:
    store = sql_store
    for name in ("node-a", "node-b"):
        await store.register_node(node(name))

    assert await store.acquire_serial("job", "exec-1", "node-a", TIMEOUT) is True
    assert await store.acquire_serial("job", "exec-1", "node-a", TIMEOUT) is True  # its own
    assert await store.acquire_serial("job", "exec-2", "node-b", TIMEOUT) is False
    assert await store.acquire_serial("other-job", "exec-3", "node-b", TIMEOUT) is True

    await store.release_serial("job", "exec-1", "node-b")  # not the holder: nothing changes
    await store.release_serial("job", "exec-2", "node-b")
    assert await store.acquire_serial("job", "exec-2", "node-b", TIMEOUT) is False

    await store.release_serial("job", "exec-1", "node-a")
    assert await store.acquire_serial("job", "exec-2", "node-b", TIMEOUT) is True


async def test_a_dead_node_s_lock_is_taken_over(sql_store: SqlExecutionStore) -> None:
    store = sql_store
    await store.register_node(node("node-b"))
    # node-a holds the lock but has no heartbeat at all (it died and was deregistered).
    assert await store.acquire_serial("job", "exec-1", "node-a", TIMEOUT) is True

    assert await store.acquire_serial("job", "exec-2", "node-b", TIMEOUT) is True
    assert await store.acquire_serial("job", "exec-1", "node-a", TIMEOUT) is False


async def test_a_lock_whose_execution_ended_is_stale(sql_store: SqlExecutionStore) -> None:
    store = sql_store
    for name in ("node-a", "node-b"):
        await store.register_node(node(name))
    await store.record_job(result_of("exec-1", JobStatus.RUNNING))
    assert await store.acquire_serial("job-1", "exec-1", "node-a", TIMEOUT) is True
    assert await store.acquire_serial("job-1", "exec-2", "node-b", TIMEOUT) is False

    # node-a is alive but could not release (the database was away when it ended).
    await store.record_job(result_of("exec-1", JobStatus.SUCCESS))
    assert await store.acquire_serial("job-1", "exec-2", "node-b", TIMEOUT) is True


async def test_concurrent_askers_have_one_winner(sql_store: SqlExecutionStore) -> None:
    url = sql_store.url
    stores = [SqlExecutionStore(url, owner=f"node-{i}") for i in range(6)]
    for s in stores:
        await s.open()
    try:
        for i, s in enumerate(stores):
            await s.register_node(node(f"node-{i}"))
        won = await asyncio.gather(
            *(
                s.acquire_serial("job", f"exec-{i}", f"node-{i}", TIMEOUT)
                for i, s in enumerate(stores)
            )
        )
        assert sorted(won) == [False] * 5 + [True]
    finally:
        for s in stores:
            await s.close()
