"""B7 scale-out drain and B8 failover: real service replicas (uvicorn subprocesses,
``bench.replica:create_app``) on one PostgreSQL database.

B7: 20,000 runs of a one-step trivial job (``bench_noop``, as B5) all due at one instant T,
with the default limits (5 per timezone queue, 10 workers per replica; a diagnostic row
repeats 1 replica with 50/50),
bulk-written (``bench.bulk``) while 1, 2 or 3 replicas are already up; the clock runs from T
until the last run is recorded successful. CPU from ``/proc``: each replica's process, the
PostgreSQL backends serving this benchmark's database (their command line names it), and
the server's shared processes (WAL writer, checkpointer, ...) apart. On 2 cores the replicas
and the database share the CPU: the row says how much of the machine was busy.

B8: with the service's default heartbeat (5 s) and node timeout (30 s), one replica runs 50
long jobs (one shell step, one retry allowed, no retry delay); two more replicas join; the
first is killed with SIGKILL together with its steps' process groups (a machine that dies
takes its children with it). Figures: from the kill until each job's retry starts on another
replica (p50/max, from the retries' recorded ``start_time``), and checks that every job ran
exactly once more, on a survivor, never while its first run was alive, and that no retry
ran twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.domain.models import JobDefinition
from bench.bulk import bulk_schedule
from bench.common import (
    CLK_TCK,
    Figure,
    Workspace,
    cpu_seconds,
    fmt,
    migrate,
    pg_connection,
    summary_ms,
)
from bench.loadgen import HttpConnection
from bench.server import Server, uvicorn_server
from bench.steps import noop_job

B7_JOBS = 20_000
B7_REPLICAS = (1, 2, 3)
B7_LEAD_SECONDS = 6.0
B8_JOBS = 50
B8_HOLD_SECONDS = 600
REPLICA_APP = "bench.replica:create_app"
WIDE_LIMITS = {"V2_QUEUE_MAX_CONCURRENT": "50", "V2_MAX_WORKERS": "50"}


def _env(url: str, **extra: str) -> dict[str, str]:
    return {
        "V2_DATABASE_URL": url,
        "V2_AUTO_MIGRATE": "false",
        "V2_RATE_LIMIT_PER_MINUTE": "0",
        **extra,
    }


def _postgres_cpu(database: str) -> tuple[float, float]:
    """CPU seconds so far of (the backends serving ``database``, the shared processes)."""
    ours = shared = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        if f" {database} " in cmdline:
            ours += cpu
        elif "postgres: " in cmdline and " postgres " not in cmdline.split(":", 2)[-1]:
            shared += cpu  # background processes (no database in their title)
    return ours, shared


async def _drain(ws: Workspace, replicas: int, **limits: str) -> dict[str, Any]:
    url = await ws.pg_database(f"b7_{replicas}{'_wide' if limits else ''}")
    database = url.rsplit("/", 1)[1]
    await migrate(url)
    job = JobDefinition.from_dict(noop_job("bench-b7"))
    async with contextlib.AsyncExitStack() as stack:
        servers: list[Server] = []
        for i in range(replicas):
            log = ws.path / f"b7_{replicas}_{i}.log"
            servers.append(
                await stack.enter_async_context(uvicorn_server(REPLICA_APP, _env(url), log))
            )
        due = datetime.now(UTC) + timedelta(seconds=B7_LEAD_SECONDS)
        await bulk_schedule(url, job, B7_JOBS, lambda i: due)
        await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
        t0 = time.perf_counter()
        cpu0 = [cpu_seconds(s.pid) for s in servers]
        db0 = _postgres_cpu(database)
        done = 0
        async with pg_connection(url) as conn:
            deadline = t0 + 600
            while time.perf_counter() < deadline:
                done = int(
                    await conn.fetchval(
                        "SELECT count(*) FROM job_executions_v2 "
                        "WHERE job_id = $1 AND status = 'success'",
                        job.job_id,
                    )
                )
                if done >= B7_JOBS:
                    break
                await asyncio.sleep(0.1)
        seconds = time.perf_counter() - t0
        cpu = [cpu_seconds(s.pid) - c for s, c in zip(servers, cpu0, strict=True)]
        db1 = _postgres_cpu(database)
    await ws.drop_pg_database(url)
    return {
        "replicas": replicas,
        "seconds": seconds,
        "finished": done,
        "jobs_per_second": done / seconds,
        "replica_cpu_seconds": cpu,
        "database_cpu_seconds": db1[0] - db0[0],
        "postgres_shared_cpu_seconds": db1[1] - db0[1],
    }


async def run_b7(ws: Workspace, quick: bool) -> list[Figure]:
    figures = []
    base: float | None = None
    plan: list[tuple[int, dict[str, str]]] = [(n, {}) for n in B7_REPLICAS]
    plan.append((1, WIDE_LIMITS))  # diagnostic: is the limit the per-replica concurrency?
    for n, limits in plan:
        r = await _drain(ws, n, **limits)
        rate = r["jobs_per_second"]
        base = base or rate
        busy = sum(r["replica_cpu_seconds"]) + r["database_cpu_seconds"]
        busy += r["postgres_shared_cpu_seconds"]
        machine = busy / (r["seconds"] * (os.cpu_count() or 1))
        per_replica = ", ".join(f"{c / r['seconds']:.0%}" for c in r["replica_cpu_seconds"])
        notes = []
        if r["finished"] != B7_JOBS:
            notes.append(f"finished {r['finished']}/{B7_JOBS} before the deadline")
        name = f"Drain {B7_JOBS:,} due jobs, {n} replica{'s' if n > 1 else ''}, PostgreSQL"
        if limits:
            name = "  diagnostic: " + name + ", V2_QUEUE_MAX_CONCURRENT=50, V2_MAX_WORKERS=50"
        figures.append(
            Figure(
                bench="B7",
                name=name,
                value=rate,
                unit="jobs/s",
                baseline=base,
                baseline_label="1 replica, same run",
                ratio=rate / base if base else None,
                ratio_label="n replicas / 1 replica",
                passed=None,
                value_text=(
                    f"{fmt(rate)} jobs/s ({fmt(r['seconds'])} s); CPU per replica {per_replica} "
                    f"of a core; database {r['database_cpu_seconds'] / r['seconds']:.0%}; "
                    f"machine {machine:.0%} busy"
                ),
                baseline_text=f"{fmt(base)} jobs/s",
                details=r,
                notes=notes,
            )
        )
    return figures


# -- B8 -------------------------------------------------------------------------------------------
# First run: note its pid, hold; a retry finds the mark, notes when it started and ends.
FIRST_THEN_QUICK = (
    'if [ -e "$MARK" ]; then echo "retry $(date +%s.%N)" >> "$LEDGER"; exit 0; fi; '
    'echo $$ > "$MARK"; echo "first $(date +%s.%N)" >> "$LEDGER"; sleep "$HOLD"'
)


def _long_job(i: int, root: Path) -> dict[str, Any]:
    return {
        "job_id": f"bench-b8-{i:02d}",
        "job_name": f"bench-b8-{i:02d}",
        "max_retries": 1,
        "retry_delay_seconds": 0,
        "timeout_seconds": B8_HOLD_SECONDS + 60,
        "steps": [
            {
                "step_id": "work",
                "type": "shell",
                "script": FIRST_THEN_QUICK,
                "parameters": {
                    "MARK": str(root / f"mark{i:02d}"),
                    "LEDGER": str(root / f"ledger{i:02d}"),
                    "HOLD": str(B8_HOLD_SECONDS),
                },
                "timeout": B8_HOLD_SECONDS + 30,
            }
        ],
    }


async def _submit(server: Server, job: dict[str, Any]) -> str:
    import json

    conn = HttpConnection(server.host, server.port)
    try:
        status, body = await conn.request(
            "POST", "/api/v2/jobs/execute?wait=false", json.dumps(job).encode()
        )
    finally:
        await conn.close()
    if status != 202:
        raise RuntimeError(f"execute answered {status}: {body[:300]!r}")
    return str(json.loads(body)["execution_id"])


def _pid(mark: Path) -> int:
    text = mark.read_text().strip() if mark.exists() else ""
    return int(text) if text else 0


async def run_b8(ws: Workspace, quick: bool) -> list[Figure]:
    url = await ws.pg_database("b8")
    await migrate(url)
    root = ws.path / "b8"
    root.mkdir()
    env = _env(url, V2_MAX_WORKERS="100", V2_QUEUE_MAX_CONCURRENT="100")
    marks = [root / f"mark{i:02d}" for i in range(B8_JOBS)]
    try:
        async with contextlib.AsyncExitStack() as stack:
            first = await stack.enter_async_context(
                uvicorn_server(REPLICA_APP, env, ws.path / "b8_0.log")
            )
            originals = [await _submit(first, _long_job(i, root)) for i in range(B8_JOBS)]
            deadline = time.monotonic() + 120
            while not all(_pid(m) for m in marks) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)  # the steps write their pid when they start
            for i in (1, 2):
                await stack.enter_async_context(
                    uvicorn_server(REPLICA_APP, env, ws.path / f"b8_{i}.log")
                )
            async with pg_connection(url) as conn:
                dead_node = await conn.fetchval(
                    "SELECT owner FROM job_executions_v2 WHERE execution_id = $1", originals[0]
                )
            killed_at = datetime.now(UTC)
            os.kill(first.pid, signal.SIGKILL)
            for mark in marks:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(_pid(mark), signal.SIGKILL)
            first.process.wait()
            async with pg_connection(url) as conn:
                deadline = time.monotonic() + 30 + 120  # node timeout + margin
                retries: list[Any] = []
                while time.monotonic() < deadline:
                    retries = await conn.fetch(
                        "SELECT execution_id, job_id, start_time, status, owner, metadata_json "
                        "FROM job_executions_v2 WHERE job_id LIKE 'bench-b8-%' "
                        "AND execution_id <> ALL($1::text[])",
                        originals,
                    )
                    if sum(1 for r in retries if r["status"] == "success") >= B8_JOBS:
                        break
                    await asyncio.sleep(0.2)
                originals_rows = await conn.fetch(
                    "SELECT execution_id, status, error_message FROM job_executions_v2 "
                    "WHERE execution_id = ANY($1::text[])",
                    originals,
                )
    finally:
        for mark in marks:
            with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                if _pid(mark):
                    os.killpg(_pid(mark), signal.SIGKILL)
        await ws.drop_pg_database(url)

    per_job: dict[str, list[Any]] = {}
    for r in retries:
        per_job.setdefault(r["job_id"], []).append(r)
    waits = [
        (r["start_time"] - killed_at).total_seconds()
        for rows in per_job.values()
        for r in rows
        if r["start_time"] is not None
    ]
    problems = []
    if len(per_job) != B8_JOBS:
        problems.append(f"{B8_JOBS - len(per_job)} jobs got no retry")
    twice = [job for job, rows in per_job.items() if len(rows) != 1]
    if twice:
        problems.append(f"{len(twice)} jobs have more than one retry: {twice[:5]}")
    on_dead = [r["execution_id"] for r in retries if r["owner"] == dead_node]
    if on_dead:
        problems.append(f"{len(on_dead)} retries ran on the killed node")
    early = [w for w in waits if w < 0]
    if early:
        problems.append(f"{len(early)} retries started before the kill (while the first ran)")
    ledger_runs = []
    for i in range(B8_JOBS):
        ledger = root / f"ledger{i:02d}"
        lines = ledger.read_text().split() if ledger.exists() else []
        ledger_runs.append(lines.count("first") + lines.count("retry"))
    if any(n != 2 for n in ledger_runs):
        problems.append(f"step runs per job (ledger) not all 2: {sorted(set(ledger_runs))}")
    not_failed = [r["execution_id"] for r in originals_rows if r["status"] != "failed"]
    if not_failed:
        problems.append(f"{len(not_failed)} first runs not recorded failed (interrupted)")
    s = summary_ms(waits)
    return [
        Figure(
            bench="B8",
            name=f"Failover: kill -9 the replica running {B8_JOBS} long jobs, 3 replicas",
            value=s["p50_ms"] / 1e3 if s["n"] else None,
            unit="s (p50)",
            baseline=30.0,
            baseline_label="V2_NODE_TIMEOUT_SECONDS (default) after which a node is dead",
            passed=not problems,
            target="every job retried once on a survivor, never concurrently",
            value_text=(
                f"kill -> retry start p50 {fmt(s['p50_ms'] / 1e3)} s, max "
                f"{fmt(s['max_ms'] / 1e3)} s; {len(per_job)}/{B8_JOBS} retried, "
                f"{'no' if not problems else len(problems)} problems"
            ),
            baseline_text="30 s node timeout, 5 s heartbeat (defaults)",
            details={
                "kill_to_retry_start": s,
                "problems": problems,
                "dead_node": dead_node,
                "retry_owners": sorted({str(r["owner"]) for r in retries}),
            },
            notes=problems,
        )
    ]
