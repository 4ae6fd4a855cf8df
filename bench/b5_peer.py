"""B5-peer: PgQueuer draining the same number of trivial jobs as B5 (20,000; 2,000 in quick
mode) on the same PostgreSQL server, against the service's drain measured in this module the
same way as B5 (``bench.b5_drain``). See ``bench.peers.pgqueuer_drain`` for the setup and for
what PgQueuer does not do per job that the service does."""

from __future__ import annotations

from app.domain.models import JobDefinition
from bench.b5_drain import JOB_ID, _count_success, _engine_drain
from bench.common import Figure, Workspace, fmt, judge
from bench.peers import pgqueuer_drain
from bench.steps import install_noop, noop_job

TARGET_RATIO = 0.5


async def run(ws: Workspace, quick: bool) -> list[Figure]:
    n = 2_000 if quick else 20_000
    install_noop()
    job = JobDefinition.from_dict(noop_job(JOB_ID))
    url = await ws.pg_database("b5peer")
    engine_seconds = await _engine_drain(url, job, n)
    engine_done = await _count_success(url)
    await ws.drop_pg_database(url)
    peer_url = await ws.pg_database("b5peer_pgq")
    peer = await pgqueuer_drain.drain(peer_url, n)
    await ws.drop_pg_database(peer_url)
    ours, theirs = engine_done / engine_seconds, int(peer["done"]) / float(peer["seconds"])
    ratio = ours / theirs if theirs else None
    return [
        Figure(
            bench="B5-peer",
            name=f"Drain {n:,} due trivial jobs, PostgreSQL, vs PgQueuer",
            value=ours,
            unit="jobs/s",
            baseline=theirs,
            baseline_label=f"PgQueuer {pgqueuer_drain.version()}, run(mode=drain), defaults",
            ratio=ratio,
            ratio_label="service / PgQueuer",
            target=f"ratio >= {TARGET_RATIO}",
            passed=judge(ratio, TARGET_RATIO, at_most=False) and engine_done == n,
            value_text=f"{fmt(ours)} jobs/s ({fmt(engine_seconds)} s)",
            baseline_text=f"{fmt(theirs)} jobs/s ({fmt(float(peer['seconds']))} s)",
            details={"jobs": n, "engine_finished": engine_done, "pgqueuer": peer},
            notes=[
                "PgQueuer keeps no history rows (its job row is deleted, a log row appended), "
                "has no per-timezone queues or limits and no retries unless the job raises "
                "RetryRequested into a retry executor; the service writes the execution and "
                "step rows, fences completion by lease and attempt, and retries per policy"
            ],
        )
    ]
