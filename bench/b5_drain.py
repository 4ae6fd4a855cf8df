"""B5 drain: jobs (one trivial step) all due now on PostgreSQL; how fast does a started
engine finish them? Baseline: a bare asyncpg loop in this module doing the same claims
(``FOR UPDATE SKIP LOCKED``, lease, attempt) and completions (job row RUNNING, the step row,
job row SUCCESS, fenced run completion) on an identical database.

Both databases get the same rows through ``bench.bulk`` (what ``add_scheduled_run``
writes) before the clock starts; the engine's clock starts at ``engine.start()``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from app.domain.models import JobDefinition
from app.steps.context import ExecutionContext
from app.steps.resources import StepResources
from bench import profile
from bench.bulk import bulk_schedule
from bench.common import Figure, Workspace, asyncpg_dsn, fmt, judge, migrate, pg_connection
from bench.engines import running_engine
from bench.steps import NoopStep, install_noop, noop_job

TARGET_RATIO = 0.3
JOB_ID = "bench-b5"
WORKERS = 5  # the engine's default queue_max_concurrent
CLAIM_BATCH = 20  # WORKERS x CLAIM_BATCH = the engine scheduler's batch of 100
LEASE_SECONDS = 300

CLAIM = f"""
UPDATE scheduled_runs_v2 SET status = 'claimed', attempt = attempt + 1, lease_owner = $1,
  lease_expires_at = now() + interval '{LEASE_SECONDS} seconds'
WHERE execution_id IN (
  SELECT execution_id FROM scheduled_runs_v2
  WHERE status = 'pending' AND scheduled_for <= now()
  ORDER BY scheduled_for, execution_id LIMIT $2 FOR UPDATE SKIP LOCKED)
  AND status = 'pending'
RETURNING execution_id, attempt, job_definition_json
"""
START = """
UPDATE job_executions_v2 SET status = 'running', start_time = $2, owner = $3, attempt = $4,
  updated_at = $2
WHERE execution_id = $1
"""
STEP = """
INSERT INTO step_executions_v2 (step_execution_id, execution_id, step_id, step_name,
  step_type, status, start_time, end_time, duration_seconds, metadata_json, created_at,
  attempt, start_order, updated_at)
VALUES ($1, $2, $3, $3, $4, 'success', $5, $6, $7, '{"attempt":0}', $5, 0, 0, $6)
"""
FINISH = """
UPDATE job_executions_v2 SET status = 'success', end_time = $2, duration_seconds = $3,
  updated_at = $2
WHERE execution_id = $1
"""
COMPLETE = """
UPDATE scheduled_runs_v2 SET status = 'done'
WHERE execution_id = $1 AND status = 'claimed' AND lease_owner = $2 AND attempt = $3
"""


async def _count_success(url: str) -> int:
    async with pg_connection(url) as conn:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM job_executions_v2 WHERE job_id = $1 AND status = 'success'",
                JOB_ID,
            )
        )


async def _engine_drain(url: str, job: JobDefinition, n: int) -> float:
    due = datetime.now(UTC) - timedelta(seconds=1)
    async with running_engine(url, start=False) as engine:
        await bulk_schedule(url, job, n, lambda i: due)
        with profile.sampling("b5_engine_postgresql"):
            t0 = time.perf_counter()
            await engine.start()
            deadline = t0 + 1800
            while time.perf_counter() < deadline:
                status = engine.get_queue_status().get("UTC", {})
                if status.get("completed", 0) + status.get("failed", 0) >= n:
                    break
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - t0
    return elapsed


async def _baseline_drain(url: str, job: JobDefinition, n: int) -> float:
    await migrate(url)
    due = datetime.now(UTC) - timedelta(seconds=1)
    await bulk_schedule(url, job, n, lambda i: due)
    pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=WORKERS + 1, max_size=WORKERS + 1)
    owner = f"baseline-{uuid.uuid4().hex[:8]}"
    resources = StepResources()

    async def worker() -> None:
        async with pool.acquire() as conn:
            while True:
                claimed = await conn.fetch(CLAIM, owner, CLAIM_BATCH)
                if not claimed:
                    return
                for row in claimed:
                    definition = JobDefinition.from_dict(json.loads(row["job_definition_json"]))
                    execution_id, attempt = row["execution_id"], row["attempt"]
                    started = datetime.now(UTC)
                    await conn.execute(START, execution_id, started, owner, attempt)
                    config = definition.steps[0]
                    context = ExecutionContext(definition, execution_id, resources=resources)
                    result = await NoopStep(config, context).execute()
                    ended = datetime.now(UTC)
                    duration = (ended - started).total_seconds()
                    async with conn.transaction():
                        step_row = (uuid.uuid4().hex, execution_id, result.step_id)
                        await conn.execute(
                            STEP, *step_row, NoopStep.step_type, started, ended, duration
                        )
                        await conn.execute(FINISH, execution_id, ended, duration)
                        await conn.execute(COMPLETE, execution_id, owner, attempt)

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(WORKERS)))
        return time.perf_counter() - t0
    finally:
        await pool.close()


async def run(ws: Workspace, quick: bool) -> list[Figure]:
    n = 2_000 if quick else 20_000
    install_noop()
    job = JobDefinition.from_dict(noop_job(JOB_ID))
    engine_url = await ws.pg_database("b5")
    engine_seconds = await _engine_drain(engine_url, job, n)
    engine_done = await _count_success(engine_url)
    await ws.drop_pg_database(engine_url)
    base_url = await ws.pg_database("b5_base")
    base_seconds = await _baseline_drain(base_url, job, n)
    base_done = await _count_success(base_url)
    await ws.drop_pg_database(base_url)

    engine_rate, base_rate = engine_done / engine_seconds, base_done / base_seconds
    ratio = engine_rate / base_rate if base_rate else None
    notes = ["profiled run: slower than normal"] if profile.enabled() else []
    if engine_done != n or base_done != n:
        notes.append(f"finished: engine {engine_done}/{n}, baseline {base_done}/{n}")
    return [
        Figure(
            bench="B5",
            name=f"Drain {n:,} due jobs, PostgreSQL",
            value=engine_rate,
            unit="jobs/s",
            baseline=base_rate,
            baseline_label=f"bare asyncpg SKIP LOCKED loop, {WORKERS} workers",
            ratio=ratio,
            ratio_label="service / baseline",
            target=f"ratio >= {TARGET_RATIO}",
            passed=judge(ratio, TARGET_RATIO, at_most=False) and engine_done == n,
            value_text=f"{fmt(engine_rate)} jobs/s ({fmt(engine_seconds)} s)",
            baseline_text=f"{fmt(base_rate)} jobs/s ({fmt(base_seconds)} s)",
            details={
                "jobs": n,
                "engine_seconds": engine_seconds,
                "baseline_seconds": base_seconds,
                "engine_finished": engine_done,
                "baseline_finished": base_done,
                "baseline_workers": WORKERS,
                "baseline_claim_batch": CLAIM_BATCH,
            },
            notes=notes,
        )
    ]
