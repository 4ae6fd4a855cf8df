"""B1 HTTP execute throughput: 32 closed-loop clients post ``POST /api/v2/jobs/execute`` with
one ``SELECT 1`` SQL step, against the minimal FastAPI app of ``bench.baseline_app`` doing the
same database work, on PostgreSQL and on SQLite."""

from __future__ import annotations

import json

from bench import profile
from bench.common import Figure, Workspace, fmt, judge, migrate, pg_admin_fetchval, summary_ms
from bench.loadgen import LoadResult, closed_loop
from bench.server import uvicorn_server
from bench.steps import sql_job

CLIENTS = 32
TARGET_RATIO = 0.5
PATH = "/api/v2/jobs/execute"


async def _load(server_host: str, port: int, pid: int, seconds: float, warmup: float) -> LoadResult:
    body = json.dumps(sql_job("bench-b1")).encode()
    return await closed_loop(
        server_host,
        port,
        "POST",
        PATH,
        body,
        clients=CLIENTS,
        seconds=seconds,
        warmup_seconds=warmup,
        server_pid=pid,
    )


async def _sessions(url: str) -> int | None:
    """Sessions PostgreSQL has opened on the database so far (pg_stat_database.sessions)."""
    if not url.startswith("postgresql"):
        return None
    name = url.rsplit("/", 1)[1]
    value = await pg_admin_fetchval(
        "SELECT sessions FROM pg_stat_database WHERE datname = $1", name
    )
    return int(value) if value is not None else None


def _delta(before: int | None, after: int | None) -> int | None:
    return after - before if before is not None and after is not None else None


async def run_backend(ws: Workspace, backend: str, seconds: float, warmup: float) -> Figure:
    if backend == "postgresql":
        app_history = await ws.pg_database("b1_app")
        app_sql = app_history
        base_history = await ws.pg_database("b1_base")
        base_sql = base_history
        label = "PostgreSQL"
    else:
        app_history, app_sql = ws.sqlite_url("b1_app"), ws.sqlite_url("b1_app_sql")
        base_history, base_sql = ws.sqlite_url("b1_base"), ws.sqlite_url("b1_base_sql")
        label = "SQLite"
    await migrate(base_history)

    app_env = {
        "V2_DATABASE_URL": app_history,
        "V2_CONNECTIONS": json.dumps({"bench": app_sql}),
        "V2_RATE_LIMIT_PER_MINUTE": "0",  # measure throughput, not the limiter
    }
    async with uvicorn_server(
        "app.main:create_app", app_env, ws.path / f"b1_app_{backend}.log"
    ) as server:
        sessions0 = await _sessions(app_history)
        with profile.sampling(f"b1_{backend}_service", server.pid):
            app = await _load(server.host, server.port, server.pid, seconds, warmup)
        sessions = await _sessions(app_history)
    base_env = {"BENCH_HISTORY_URL": base_history, "BENCH_SQL_URL": base_sql}
    async with uvicorn_server(
        "bench.baseline_app:create_app", base_env, ws.path / f"b1_base_{backend}.log"
    ) as server:
        base_sessions0 = await _sessions(base_history)
        base = await _load(server.host, server.port, server.pid, seconds, warmup)
        base_sessions = await _sessions(base_history)

    app_lat, base_lat = summary_ms(app.latencies), summary_ms(base.latencies)
    ratio = app.per_second / base.per_second if base.per_second else None
    notes = []
    if profile.enabled():
        notes.append("profiled run (py-spy attached to the service): slower than normal")
    if app.errors or base.errors:
        notes.append(
            f"errors: service {app.errors} (statuses {app.statuses}), baseline {base.errors}; "
            f"first bad body: {(app.sample_body or base.sample_body)[:300]!r}"
        )
    return Figure(
        bench="B1",
        name=f"HTTP execute throughput, {label}",
        value=app.per_second,
        unit="exec/s",
        baseline=base.per_second,
        baseline_label="minimal FastAPI + "
        + ("asyncpg" if backend == "postgresql" else "aiosqlite"),
        ratio=ratio,
        ratio_label="service / baseline",
        target=f"ratio >= {TARGET_RATIO}",
        passed=judge(ratio, TARGET_RATIO, at_most=False) if not app.errors else False,
        value_text=(
            f"{fmt(app.per_second)} exec/s, p50 {fmt(app_lat['p50_ms'])} ms, "
            f"p99 {fmt(app_lat['p99_ms'])} ms"
        ),
        baseline_text=(
            f"{fmt(base.per_second)} exec/s, p50 {fmt(base_lat['p50_ms'])} ms, "
            f"p99 {fmt(base_lat['p99_ms'])} ms"
        ),
        details={
            "clients": CLIENTS,
            "seconds": seconds,
            "warmup_seconds": warmup,
            "service": app.summary(),
            "baseline": base.summary(),
            # PostgreSQL sessions opened during warm-up + measurement (pool churn)
            "service_new_db_sessions": _delta(sessions0, sessions),
            "baseline_new_db_sessions": _delta(base_sessions0, base_sessions),
        },
        notes=notes,
    )


async def run(ws: Workspace, quick: bool) -> list[Figure]:
    seconds, warmup = (3.0, 0.5) if quick else (20.0, 3.0)
    return [
        await run_backend(ws, "postgresql", seconds, warmup),
        await run_backend(ws, "sqlite", seconds, warmup),
    ]
