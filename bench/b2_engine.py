"""B2 engine overhead: jobs of one trivial step run one after another through
``execute_job_now`` with the real SqlExecutionStore on SQLite, against awaiting the same
step coroutine in a bare loop. A diagnostic row repeats it on the in-memory store, which
separates the engine's own cost from the store's."""

from __future__ import annotations

import time

from app.domain.enums import JobStatus
from app.domain.models import JobDefinition
from app.engine.engine import NewExecutionEngine
from app.steps.context import ExecutionContext
from app.steps.resources import StepResources
from bench import profile
from bench.common import Figure, Workspace, fmt, judge
from bench.engines import running_engine
from bench.steps import NoopStep, install_noop, noop_job

TARGET_US = 300.0
WARMUP = 100


async def _through_engine(engine: NewExecutionEngine, job: JobDefinition, n: int) -> float:
    for _ in range(WARMUP):
        await engine.execute_job_now(job)
    t0 = time.perf_counter()
    for _ in range(n):
        result = await engine.execute_job_now(job)
        if result.status is not JobStatus.SUCCESS:
            raise RuntimeError(f"B2 job ended {result.status}: {result.error_message}")
    return (time.perf_counter() - t0) / n * 1e6


async def _bare(job: JobDefinition, n: int) -> float:
    context = ExecutionContext(job, "bare", resources=StepResources())
    config = job.steps[0]
    for _ in range(WARMUP):
        await NoopStep(config, context).execute()
    t0 = time.perf_counter()
    for _ in range(n):
        result = await NoopStep(config, context).execute()
        assert result.success
    return (time.perf_counter() - t0) / n * 1e6


async def run(ws: Workspace, quick: bool) -> list[Figure]:
    n = 1_000 if quick else 10_000
    install_noop()
    job = JobDefinition.from_dict(noop_job("bench-b2"))
    async with running_engine(ws.sqlite_url("b2")) as engine:
        with profile.sampling("b2_engine_sqlite"):
            engine_us = await _through_engine(engine, job, n)
    async with running_engine("memory://") as engine:
        memory_us = await _through_engine(engine, job, n)
    bare_us = await _bare(job, n)
    return [
        Figure(
            bench="B2",
            name="Engine overhead per job (execute_job_now, SQLite store)",
            value=engine_us,
            unit="us/job",
            baseline=bare_us,
            baseline_label="await the step coroutine in a bare loop",
            ratio=engine_us / bare_us if bare_us else None,
            ratio_label="service / baseline (x)",
            target=f"<= {TARGET_US:.0f} us/job",
            passed=judge(engine_us, TARGET_US, at_most=True),
            value_text=f"{fmt(engine_us)} us/job ({fmt(1e6 / engine_us)} jobs/s)",
            baseline_text=f"{fmt(bare_us, 2)} us/job",
            details={"jobs": n, "warmup": WARMUP, "sequential": True},
            notes=["profiled run: slower than normal"] if profile.enabled() else [],
        ),
        Figure(
            bench="B2",
            name="  diagnostic: same on the in-memory store",
            value=memory_us,
            unit="us/job",
            baseline=bare_us,
            baseline_label="bare loop",
            ratio=memory_us / bare_us if bare_us else None,
            ratio_label="service / baseline (x)",
            value_text=f"{fmt(memory_us)} us/job",
            baseline_text=f"{fmt(bare_us, 2)} us/job",
            details={"jobs": n, "store": "memory://"},
            notes=["no target: shows how much of B2 is the engine and how much the store"],
        ),
    ]
