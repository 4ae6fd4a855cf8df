"""PgQueuer draining N trivial jobs on PostgreSQL (the B5-peer).

Set up as PgQueuer's README shows: ``PgQueuer.from_asyncpg_connection``, ``install()`` of its
schema, one ``@pgq.entrypoint`` whose coroutine does nothing, the jobs enqueued in one batch
``enqueue`` call before the clock starts, then ``run(mode=drain)`` with its default batch size
until the queue is empty. The clock covers ``run`` only, as B5's covers ``engine.start()`` to
the last finished job.

What PgQueuer does not do that the service does, per job: no history rows (a job row is
deleted on completion, a log row is appended; there is no execution or step record with start,
end, status and output), no per-timezone queues or limits, no retries with backoff (unless the
job raises ``RetryRequested`` into a retry executor), no job definitions validated against a
schema, no lease fencing of a completion by attempt.
"""

from __future__ import annotations

import time
from importlib import metadata

import asyncpg

from bench.common import asyncpg_dsn

ENTRYPOINT = "bench_noop"


def version() -> str:
    return metadata.version("pgqueuer")


async def drain(url: str, n: int) -> dict[str, float | int]:
    """Enqueue ``n`` jobs into a fresh database ``url`` and drain them; seconds and counts."""
    from pgqueuer import PgQueuer
    from pgqueuer.types import QueueExecutionMode

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        pgq = PgQueuer.from_asyncpg_connection(conn)
        await pgq.qm.queries.install()
        done = 0

        @pgq.entrypoint(ENTRYPOINT)
        async def noop(job: object) -> None:
            nonlocal done
            done += 1

        for start in range(0, n, 5_000):  # batch enqueue, the documented bulk path
            size = min(5_000, n - start)
            await pgq.qm.queries.enqueue([ENTRYPOINT] * size, [None] * size, [0] * size)
        t0 = time.perf_counter()
        await pgq.qm.run(mode=QueueExecutionMode.drain)
        seconds = time.perf_counter() - t0
        left = int(await conn.fetchval("SELECT count(*) FROM pgqueuer"))
    finally:
        await conn.close()
    return {"seconds": seconds, "done": done, "left": left}
