"""B6 step overhead: one job of 40 sequential ``SELECT 1`` SQL steps on PostgreSQL (history
on the same database), against 40 bare asyncpg queries on one connection. A diagnostic row
runs the same job on the in-memory store, which separates the SQL step's own cost from the
history writes."""

from __future__ import annotations

import time

import asyncpg

from app.domain.enums import JobStatus
from app.domain.models import JobDefinition
from app.engine.engine import NewExecutionEngine
from bench import profile
from bench.common import Figure, Workspace, asyncpg_dsn, fmt, judge, median
from bench.engines import running_engine
from bench.steps import sql_job

STEPS = 40
TARGET_X = 3.0
WARMUP = 2


async def _engine_runs(engine: NewExecutionEngine, job: JobDefinition, runs: int) -> list[float]:
    out = []
    for i in range(WARMUP + runs):
        t0 = time.perf_counter()
        result = await engine.execute_job_now(job)
        elapsed = time.perf_counter() - t0
        if result.status is not JobStatus.SUCCESS:
            raise RuntimeError(f"B6 job ended {result.status}: {result.error_message}")
        if i >= WARMUP:
            out.append(elapsed)
    return out


async def _bare_runs(url: str, runs: int) -> list[float]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        out = []
        for i in range(WARMUP + runs):
            t0 = time.perf_counter()
            for _ in range(STEPS):
                await conn.fetchval("SELECT 1")
            if i >= WARMUP:
                out.append(time.perf_counter() - t0)
        return out
    finally:
        await conn.close()


async def run(ws: Workspace, quick: bool) -> list[Figure]:
    runs = 5 if quick else 20
    url = await ws.pg_database("b6")
    job = JobDefinition.from_dict(sql_job("bench-b6", STEPS))
    connections = {"bench": url}
    async with running_engine(url, connections) as engine:
        with profile.sampling("b6_engine_postgresql"):
            engine_ms = median(await _engine_runs(engine, job, runs)) * 1e3
    async with running_engine("memory://", connections) as engine:
        memory_ms = median(await _engine_runs(engine, job, runs)) * 1e3
    bare_ms = median(await _bare_runs(url, runs)) * 1e3
    await ws.drop_pg_database(url)
    ratio = engine_ms / bare_ms
    return [
        Figure(
            bench="B6",
            name=f"One job of {STEPS} SELECT 1 SQL steps, PostgreSQL",
            value=engine_ms,
            unit="ms",
            baseline=bare_ms,
            baseline_label=f"{STEPS} bare asyncpg queries, one connection",
            ratio=ratio,
            ratio_label="service / baseline (x)",
            target=f"<= {TARGET_X:.0f}x baseline",
            passed=judge(ratio, TARGET_X, at_most=True),
            value_text=f"{fmt(engine_ms)} ms ({fmt(engine_ms / STEPS, 2)} ms/step)",
            baseline_text=f"{fmt(bare_ms, 2)} ms ({fmt(bare_ms / STEPS * 1e3, 0)} us/query)",
            details={"runs": runs, "warmup": WARMUP, "median": True},
            notes=["profiled run: slower than normal"] if profile.enabled() else [],
        ),
        Figure(
            bench="B6",
            name="  diagnostic: same job, in-memory store (no history writes)",
            value=memory_ms,
            unit="ms",
            baseline=bare_ms,
            baseline_label="bare asyncpg",
            ratio=memory_ms / bare_ms,
            ratio_label="service / baseline (x)",
            value_text=f"{fmt(memory_ms)} ms ({fmt(memory_ms / STEPS, 2)} ms/step)",
            baseline_text=f"{fmt(bare_ms, 2)} ms",
            details={"runs": runs, "store": "memory://"},
            notes=["no target: separates the SQL step's own cost from the history writes"],
        ),
    ]
