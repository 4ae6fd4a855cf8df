"""B3-capacity and B3-burst: how many starts a second the scheduler sustains on time, and a
burst measured against a baseline held to the same limits.

B3-capacity steps the even start rate (250, 500, 1,000, 2,000, 4,000 runs/s for 10 s each;
1 s each in quick mode) on SQLite and on PostgreSQL, and gives APScheduler 3.11 the same steps
(``bench.peers.apscheduler3``). The figure is the highest rate whose p99 lateness is within
20 ms (and no run missed); the steps stop at the first rate that misses. The runs of a step
are written by ``bench.bulk`` (the rows ``schedule_job`` writes) into the database of a
running engine, due from 2 s after the write, so the step measures starting, not creating.
CPU per start is the benchmark process's CPU from 0.5 s before the first run is due (the
engine claims 0.25 s ahead) until the step's last run finished, divided by its runs (the
engine runs in this process).

B3-burst: 1,000 runs due at one instant spread over 10 timezones, with
``V2_QUEUE_MAX_CONCURRENT=100`` and ``V2_MAX_WORKERS=1000``. Baseline: bare event-loop timers
firing at the same instant and running the same trivial step coroutine under the same two
semaphores (one of 100 per timezone, one of 1,000 in all). The 5-at-a-time figure with the
default limits stays in B3 as a diagnostic.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from app.domain.models import JobDefinition
from app.engine.engine import NewExecutionEngine
from app.persistence import SqlExecutionStore
from app.persistence.models import JobExecutionV2
from app.steps.context import ExecutionContext
from app.steps.resources import StepResources
from bench import profile
from bench.bulk import bulk_schedule
from bench.common import Figure, Workspace, cpu_seconds, fmt, summary_ms
from bench.engines import running_engine
from bench.peers import apscheduler3
from bench.steps import NoopStep, install_noop, noop_job

RATES = (250, 500, 1_000, 2_000, 4_000)
TARGET_P99_MS = 20.0
TARGET_CAPACITY = {"PostgreSQL": 2_000, "SQLite": 1_000}
TARGET_PEER_FACTOR = 2.0
LEAD_SECONDS = 2.0
CPU_LEAD_SECONDS = 0.5
BURST_TIMEZONES = (
    "UTC",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Moscow",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Sydney",
    "America/Sao_Paulo",
    "America/New_York",
    "America/Los_Angeles",
)
BURST_QUEUE_LIMIT = 100
BURST_WORKERS = 1_000
BURST_TARGET_P99_MS = 50.0
BURST_TARGET_MAX_MS = 100.0


def _finished(engine: NewExecutionEngine) -> int:
    total = 0
    for status in engine.get_queue_status().values():
        total += int(
            status.get("completed", 0) + status.get("failed", 0) + status.get("cancelled", 0)
        )
    return total


async def _lateness(url: str, job_ids: list[str]) -> tuple[list[float], int]:
    """Lateness (s) of the recorded runs of ``job_ids`` and how many never started."""
    store = SqlExecutionStore(url)
    await store.open()
    try:
        async with store.engine.connect() as conn:
            job = JobExecutionV2
            rows = await conn.execute(
                select(job.scheduled_for, job.start_time).where(job.job_id.in_(job_ids))
            )
            late, not_started = [], 0
            for scheduled_for, start_time in rows:
                if start_time is None:
                    not_started += 1
                else:
                    late.append((start_time - scheduled_for).total_seconds())
            return late, not_started
    finally:
        await store.close()


async def _wait_finished(engine: NewExecutionEngine, target: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _finished(engine) < target and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # the engine has no completion event to wait on


async def service_steps(
    url: str, window: float, rates: tuple[int, ...] = RATES
) -> list[dict[str, Any]]:
    """Run the rate steps on one started engine; one dict per step measured (the lateness
    summary under ``lateness``); stops after the first step that misses."""
    steps: list[dict[str, Any]] = []
    async with running_engine(url) as engine:
        finished_before = 0
        for rate in rates:
            count = int(rate * window)
            job = JobDefinition.from_dict(noop_job(f"bench-cap-{rate}"))
            t_write = time.perf_counter()
            # due from LEAD_SECONDS after the write; the write itself is not timed
            anchor = datetime.now(UTC) + timedelta(seconds=LEAD_SECONDS + count / 20_000)
            await bulk_schedule(
                url, job, count, lambda i, a=anchor, n=count: a + timedelta(seconds=window * i / n)
            )
            write_seconds = time.perf_counter() - t_write
            margin = (anchor - datetime.now(UTC)).total_seconds()
            # CPU counts from shortly before the first run is claimed (0.25 s look-ahead)
            await asyncio.sleep(max(0.0, margin - CPU_LEAD_SECONDS))
            cpu0 = cpu_seconds()
            await _wait_finished(engine, finished_before + count, window + 120)
            cpu = cpu_seconds() - cpu0
            finished_before = _finished(engine)
            late, not_started = await _lateness(url, [job.job_id])
            s = summary_ms(late)
            ok = not_started == 0 and s["n"] == count and s["p99_ms"] <= TARGET_P99_MS
            steps.append(
                {
                    "rate": rate,
                    "runs": count,
                    "lateness": s,
                    "not_started": not_started + (count - s["n"] - not_started),
                    "cpu_per_start_us": cpu / max(1, s["n"]) * 1e6,
                    "write_seconds": write_seconds,
                    "margin_before_first_due_seconds": margin,
                    "ok": ok,
                }
            )
            if not ok:
                break
    return steps


async def peer_steps(
    url: str, window: float, rates: tuple[int, ...] = RATES
) -> list[dict[str, Any]]:
    """The same steps for APScheduler 3.11 (a fresh scheduler and job store per step)."""
    steps: list[dict[str, Any]] = []
    for rate in rates:
        count = int(rate * window)
        got = await apscheduler3.run_schedule(
            url, count, lambda i, t0, n=count: t0 + timedelta(seconds=window * i / n), window=window
        )
        s = summary_ms(got.pop("lateness"))
        ok = got["missed"] == 0 and got["not_run"] == 0 and s["p99_ms"] <= TARGET_P99_MS
        steps.append(
            {
                "rate": rate,
                "runs": count,
                "lateness": s,
                "not_started": got["missed"] + got["not_run"],
                **got,
                "ok": ok,
            }
        )
        if not ok:
            break
    return steps


def _capacity(steps: list[dict[str, Any]]) -> int:
    best = 0
    for step in steps:
        if not step["ok"]:
            break
        best = step["rate"]
    return best


def _steps_text(steps: list[dict[str, Any]]) -> str:
    parts = []
    for s in steps:
        mark = "" if s["ok"] else " MISS"
        parts.append(
            f"{s['rate']}/s p99 {fmt(s['lateness']['p99_ms'])} ms, "
            f"{fmt(s['cpu_per_start_us'], 0)} us CPU/start{mark}"
        )
    return "; ".join(parts)


async def run_capacity(ws: Workspace, quick: bool) -> list[Figure]:
    install_noop()
    window = 1.0 if quick else 10.0
    results: dict[str, list[dict[str, Any]]] = {}
    for label in ("SQLite", "PostgreSQL"):
        url = ws.sqlite_url("b3cap") if label == "SQLite" else await ws.pg_database("b3cap")
        results[label] = await service_steps(url, window)
        if label == "PostgreSQL":
            await ws.drop_pg_database(url)
    peer_url = await ws.pg_database("b3cap_aps")
    peer = await peer_steps(peer_url, window)
    await ws.drop_pg_database(peer_url)
    peer_cap = _capacity(peer)
    figures = []
    for label, steps in results.items():
        cap = _capacity(steps)
        need = TARGET_CAPACITY[label]
        ratio = cap / peer_cap if peer_cap else None
        # when APScheduler sustains no step at all, any sustained rate is more than twice its
        beats_peer = (ratio or 0) >= TARGET_PEER_FACTOR if peer_cap else cap > 0
        passed = cap >= need and beats_peer
        figures.append(
            Figure(
                bench="B3-capacity",
                name=f"Highest even start rate with p99 <= 20 ms, {label}",
                value=float(cap),
                unit="starts/s",
                baseline=float(peer_cap),
                baseline_label="APScheduler 3.11, same steps, PostgreSQL job store",
                ratio=ratio,
                ratio_label="service / APScheduler",
                target=f">= {need:,}/s and >= {TARGET_PEER_FACTOR:g}x APScheduler",
                passed=passed,
                value_text=f"{cap:,}/s ({_steps_text(steps)})",
                baseline_text=f"{peer_cap:,}/s ({_steps_text(peer)})",
                details={"window_seconds": window, "steps": steps, "peer_steps": peer},
                notes=[f"APScheduler {apscheduler3.version()}"],
            )
        )
    return figures


# -- burst ----------------------------------------------------------------------------------------
async def _service_burst(url: str, per_tz: int, tag: str) -> dict[str, Any]:
    jobs = [
        JobDefinition.from_dict({**noop_job(f"bench-burst-{i}"), "timezone": tz})
        for i, tz in enumerate(BURST_TIMEZONES)
    ]
    async with running_engine(
        url, queue_max_concurrent=BURST_QUEUE_LIMIT, max_workers=BURST_WORKERS
    ) as engine:
        instant = datetime.now(UTC) + timedelta(seconds=LEAD_SECONDS + 1.0)
        for job in jobs:
            await bulk_schedule(url, job, per_tz, lambda i: instant)
        margin = (instant - datetime.now(UTC)).total_seconds()
        await asyncio.sleep(max(0.0, margin - CPU_LEAD_SECONDS))
        with profile.sampling(f"b3_burst_{tag}"):
            cpu0 = cpu_seconds()
            await _wait_finished(engine, per_tz * len(jobs), 120)
            cpu = cpu_seconds() - cpu0
    late, not_started = await _lateness(url, [j.job_id for j in jobs])
    return {
        "lateness": late,
        "not_started": not_started,
        "margin": margin,
        "cpu_per_start_us": cpu / max(1, len(late)) * 1e6,
    }


async def _baseline_burst(per_tz: int) -> list[float]:
    """Bare timers at one instant; each run awaits the per-timezone and the global semaphore,
    then runs the same trivial step coroutine; lateness when the step starts."""
    loop = asyncio.get_running_loop()
    workers = asyncio.Semaphore(BURST_WORKERS)
    queues = {tz: asyncio.Semaphore(BURST_QUEUE_LIMIT) for tz in BURST_TIMEZONES}
    resources = StepResources()
    late: list[float] = []
    tasks: list[asyncio.Task[None]] = []
    target = time.perf_counter() + 1.0
    definitions = {
        tz: JobDefinition.from_dict({**noop_job(f"bench-burst-{i}"), "timezone": tz})
        for i, tz in enumerate(BURST_TIMEZONES)
    }

    async def one(tz: str) -> None:
        async with queues[tz], workers:
            late.append(time.perf_counter() - target)
            definition = definitions[tz]
            context = ExecutionContext(definition, "x", resources=resources)
            await NoopStep(definition.steps[0], context).execute()

    def fire(tz: str) -> None:
        if time.perf_counter() < target:  # uvloop rounds timers to 1 ms
            loop.call_later(target - time.perf_counter(), fire, tz)
            return
        tasks.append(loop.create_task(one(tz)))

    for tz in BURST_TIMEZONES:
        for _ in range(per_tz):
            loop.call_later(max(0.0, target - time.perf_counter()), fire, tz)
    total = per_tz * len(BURST_TIMEZONES)
    while len(tasks) < total:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    return late


async def run_burst(ws: Workspace, quick: bool) -> list[Figure]:
    install_noop()
    per_tz = 100  # 1,000 in all, quick or not: the burst is small
    base = summary_ms(await _baseline_burst(per_tz))
    figures = []
    for label in ("SQLite", "PostgreSQL"):
        url = ws.sqlite_url("b3burst") if label == "SQLite" else await ws.pg_database("b3burst")
        got = await _service_burst(url, per_tz, label.lower())
        if label == "PostgreSQL":
            await ws.drop_pg_database(url)
        s = summary_ms(got["lateness"])
        passed = (
            got["not_started"] == 0
            and s["n"] == per_tz * len(BURST_TIMEZONES)
            and s["p99_ms"] <= BURST_TARGET_P99_MS
            and s["max_ms"] <= BURST_TARGET_MAX_MS
        )
        figures.append(
            Figure(
                bench="B3-burst",
                name=f"Burst of 1,000 at one instant, 10 timezones, limits 100/1,000, {label}",
                value=s["p99_ms"],
                unit="ms (p99)",
                baseline=base["p99_ms"],
                baseline_label="bare timers + the same two semaphores, same step coroutine",
                ratio=s["p99_ms"] / base["p99_ms"] if base["p99_ms"] else None,
                ratio_label="service / baseline (p99)",
                target=f"p99 <= {BURST_TARGET_P99_MS:.0f} ms, max <= {BURST_TARGET_MAX_MS:.0f} ms",
                passed=passed,
                value_text=(
                    f"p50 {fmt(s['p50_ms'])}, p99 {fmt(s['p99_ms'])}, max {fmt(s['max_ms'])} ms; "
                    f"{fmt(got['cpu_per_start_us'], 0)} us CPU/start"
                ),
                baseline_text=(
                    f"p50 {fmt(base['p50_ms'], 2)}, p99 {fmt(base['p99_ms'], 2)}, "
                    f"max {fmt(base['max_ms'], 2)} ms"
                ),
                details={
                    "lateness": s,
                    "baseline": base,
                    **{k: v for k, v in got.items() if k != "lateness"},
                },
            )
        )
    return figures
