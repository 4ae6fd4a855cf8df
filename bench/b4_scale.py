"""B4 pending scale: many one-off runs scheduled far in the future while the service runs
(uvicorn subprocess). Figures: the server's RSS, the time to create the runs, and the p99
latency of ``GET /api/v2/execution/status`` (and ``GET /api/v2/executions`` when the
service has that route) while they are pending. Baselines from the same server before any
run was created (RSS, latencies) and a bulk insert of the same rows (creation).

Runs are created through ``POST /api/v2/jobs/schedule/batch`` (1,000 per request, 4
clients) for up to a time budget, after a short sample of ``POST /api/v2/jobs/schedule``
(one per request, 32 clients; a diagnostic row); the remainder, if any, is bulk-inserted
(``bench.bulk``: the rows the store writes, 5,000 per statement), which is also the baseline
rate. The figures say how many went which way.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from app.domain.models import JobDefinition
from bench.bulk import bulk_schedule
from bench.common import (
    Figure,
    Workspace,
    fmt,
    judge,
    migrate,
    pg_connection,
    rss_mib,
    summary_ms,
)
from bench.loadgen import HttpConnection, send_all, sequential_latencies
from bench.server import Server, uvicorn_server
from bench.steps import sql_job

TARGET_RSS_MIB = 300.0
TARGET_P99_MS = 50.0
CLIENTS = 32
STATUS_PATH = "/api/v2/execution/status"
LIST_PATH = "/api/v2/executions"
JOB_ID = "bench-b4"
BULK_SAMPLE = 50_000
BATCH_ITEMS = 1_000  # the batch endpoint's limit
BATCH_CLIENTS = 4
SINGLE_MAX = 20_000
TARGET_CREATE_RATIO = 0.3


def _hwm_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


async def _has_list_route(server: Server) -> bool:
    conn = HttpConnection(server.host, server.port)
    try:
        status, body = await conn.request("GET", "/openapi.json")
    finally:
        await conn.close()
    if status != 200:
        return False
    return "get" in json.loads(body).get("paths", {}).get(LIST_PATH, {})


async def _probe(server: Server, count: int, with_list: bool) -> dict[str, Any]:
    status_lat, status_codes = await sequential_latencies(
        server.host, server.port, "GET", STATUS_PATH, count
    )
    out: dict[str, Any] = {"status": summary_ms(status_lat), "status_codes": status_codes}
    if with_list:
        list_lat, list_codes = await sequential_latencies(
            server.host, server.port, "GET", LIST_PATH, count
        )
        out["list"] = summary_ms(list_lat)
        out["list_codes"] = list_codes
    return out


async def _bulk_rate(ws: Workspace, backend: str, job: JobDefinition, count: int) -> float:
    url = ws.sqlite_url("b4_bulk") if backend == "sqlite" else await ws.pg_database("b4_bulk")
    await migrate(url)
    far = datetime.now(UTC) + timedelta(days=3650)
    t0 = time.perf_counter()
    await bulk_schedule(url, job, count, lambda i: far + timedelta(seconds=i))
    rate = count / (time.perf_counter() - t0)
    if backend == "postgresql":
        await ws.drop_pg_database(url)
    return rate


async def _scheduled_pending(server: Server) -> int | None:
    conn = HttpConnection(server.host, server.port)
    try:
        status, body = await conn.request("GET", STATUS_PATH)
    finally:
        await conn.close()
    if status != 200:
        return None
    return int(json.loads(body)["engine"]["scheduled_pending"])


async def run_backend(
    ws: Workspace,
    backend: str,
    total: int,
    http_budget: float,
    probes: int,
    single_budget: float,
) -> list[Figure]:
    url = ws.sqlite_url("b4") if backend == "sqlite" else await ws.pg_database("b4")
    label = f"{'SQLite' if backend == 'sqlite' else 'PostgreSQL'}, {total:,} pending"
    job_dict = sql_job(JOB_ID)
    job = JobDefinition.from_dict({**job_dict, "timeout_seconds": 3600})
    far = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3650)
    env = {
        "V2_DATABASE_URL": url,
        "V2_CONNECTIONS": json.dumps({"bench": url}),
        "V2_RATE_LIMIT_PER_MINUTE": "0",  # creation speed, not the limiter
    }
    async with uvicorn_server("app.main:create_app", env, ws.path / f"b4_{backend}.log") as server:
        with_list = await _has_list_route(server)
        await _probe(server, 50, with_list)  # warm-up
        empty = await _probe(server, probes, with_list)
        rss_empty = rss_mib(server.pid)

        # Create: a short sample one run per request (POST /jobs/schedule), then through
        # POST /jobs/schedule/batch (BATCH_ITEMS per request) for up to http_budget
        # seconds, the rest in bulk.
        def schedule_body(i: int) -> dict[str, Any]:
            return {"job": job_dict, "scheduled_time": (far + timedelta(seconds=i)).isoformat()}

        conn = HttpConnection(server.host, server.port)
        singles = [
            conn.build("POST", "/api/v2/jobs/schedule", json.dumps(schedule_body(i)).encode())
            for i in range(min(total, SINGLE_MAX))
        ]
        single_answered, single_seconds, single_errors, single_bad = await send_all(
            server.host, server.port, singles, clients=CLIENTS, max_seconds=single_budget
        )
        del singles
        single_created = single_answered - single_errors
        sizes: list[int] = []
        batches: list[bytes] = []
        # Only as many batches as the budget could take at 10,000 runs/s (JSON of a million
        # items is slow to build and large).
        last = min(total, single_created + int(http_budget * 10_000))
        for start in range(single_created, last, BATCH_ITEMS):
            end = min(last, start + BATCH_ITEMS)
            sizes.append(end - start)
            body = {"items": [schedule_body(i) for i in range(start, end)]}
            batches.append(
                conn.build("POST", "/api/v2/jobs/schedule/batch", json.dumps(body).encode())
            )
        answered, http_seconds, http_errors, bad = await send_all(
            server.host, server.port, batches, clients=BATCH_CLIENTS, max_seconds=http_budget
        )
        del batches
        # send_all sends in order and waits for every answer: the first `answered` went; a
        # refused batch (atomic) wrote nothing, and all but the last batch are full
        batch_created = sum(sizes[:answered]) - http_errors * BATCH_ITEMS
        batch_created = max(0, batch_created)
        http_created = single_created + batch_created
        rss_after_http = rss_mib(server.pid)
        remaining = total - http_created
        bulk_seconds = 0.0
        if remaining > 0:
            t0 = time.perf_counter()
            await bulk_schedule(
                url, job, remaining, lambda i: far + timedelta(seconds=http_created + i)
            )
            bulk_seconds = time.perf_counter() - t0
        if backend == "postgresql":
            async with pg_connection(url) as pg:
                await pg.execute("VACUUM ANALYZE job_executions_v2")
                await pg.execute("VACUUM ANALYZE scheduled_runs_v2")
        pending = await _scheduled_pending(server)
        await _probe(server, 20, with_list)  # warm caches after the bulk insert
        full = await _probe(server, probes, with_list)
        rss_full = rss_mib(server.pid)
        hwm = _hwm_mib(server.pid)
    if backend == "postgresql":
        await ws.drop_pg_database(url)
    if not bulk_seconds:
        # Everything went through the API: time a bulk insert of the same rows on a scratch
        # database of the same kind for the baseline rate.
        bulk_rate = await _bulk_rate(ws, backend, job, min(total, BULK_SAMPLE))
    else:
        bulk_rate = remaining / bulk_seconds

    http_rate = batch_created / http_seconds if http_seconds else 0.0
    single_rate = single_created / single_seconds if single_seconds else 0.0
    creation_seconds = single_seconds + http_seconds + bulk_seconds
    how = (
        f"{single_created:,} through POST /jobs/schedule in {single_seconds:.1f} s, "
        f"{batch_created:,} through POST /jobs/schedule/batch ({BATCH_ITEMS:,} per request, "
        f"{BATCH_CLIENTS} clients) in {http_seconds:.1f} s"
        + (f", {remaining:,} bulk-inserted in {bulk_seconds:.0f} s" if remaining > 0 else "")
    )
    notes = [f"created: {how}"]
    if http_errors or single_errors:
        notes.append(
            f"{http_errors} batch and {single_errors} single requests failed: "
            f"{(bad or single_bad)[:300]!r}"
        )
    if pending is not None and pending != total:
        notes.append(f"status reports {pending} scheduled_pending, expected {total}")
    if backend == "postgresql":
        notes.append("VACUUM ANALYZE after creation (the state autovacuum reaches)")
    common = {"pending": pending, "created_http": http_created, "created_bulk": max(remaining, 0)}

    figures = [
        Figure(
            bench="B4",
            name=f"Server RSS, {label}",
            value=max(rss_full, rss_after_http),
            unit="MiB",
            baseline=rss_empty,
            baseline_label="same server before creating any run",
            ratio=max(rss_full, rss_after_http) / rss_empty,
            ratio_label="service / baseline (x)",
            target=f"<= {TARGET_RSS_MIB:.0f} MB",
            passed=judge(max(rss_full, rss_after_http), TARGET_RSS_MIB, at_most=True),
            value_text=f"{fmt(max(rss_full, rss_after_http))} MiB (peak VmHWM {fmt(hwm)} MiB)",
            baseline_text=f"{fmt(rss_empty)} MiB with 0 pending",
            details={
                "rss_empty_mib": rss_empty,
                "rss_after_http_create_mib": rss_after_http,
                "rss_full_mib": rss_full,
                "vm_hwm_mib": hwm,
                **common,
            },
            notes=notes,
        ),
        Figure(
            bench="B4",
            name=f"Create the runs through POST /jobs/schedule/batch, {label}",
            value=http_rate,
            unit="runs/s",
            baseline=bulk_rate,
            baseline_label="bulk insert of the same rows (runs/s)",
            ratio=(http_rate / bulk_rate) if bulk_rate else None,
            ratio_label="API rate / bulk rate",
            target=f"ratio >= {TARGET_CREATE_RATIO}",
            passed=judge(
                http_rate / bulk_rate if bulk_rate else None, TARGET_CREATE_RATIO, at_most=False
            )
            and not http_errors,
            value_text=(
                f"{fmt(http_rate)} runs/s ({batch_created:,} in {fmt(http_seconds)} s; "
                f"all {total:,} in {fmt(creation_seconds)} s)"
            ),
            baseline_text=f"bulk {fmt(bulk_rate)} runs/s" if bulk_rate else "-",
            details={
                "http_seconds": http_seconds,
                "http_per_second": http_rate,
                "single_seconds": single_seconds,
                "single_per_second": single_rate,
                "bulk_seconds": bulk_seconds,
                "bulk_per_second": bulk_rate,
                "http_budget_seconds": http_budget,
                "batch_items": BATCH_ITEMS,
                "batch_clients": BATCH_CLIENTS,
                "clients": CLIENTS,
                **common,
            },
            notes=[f"created: {how}"],
        ),
        Figure(
            bench="B4",
            name=f"  diagnostic: one run per request, POST /jobs/schedule, {label}",
            value=single_rate,
            unit="runs/s",
            baseline=bulk_rate,
            baseline_label="bulk insert of the same rows (runs/s)",
            ratio=(single_rate / bulk_rate) if bulk_rate else None,
            ratio_label="API rate / bulk rate",
            value_text=(
                f"{fmt(single_rate)} runs/s ({single_created:,} in {fmt(single_seconds)} s, "
                f"{CLIENTS} clients)"
            ),
            baseline_text=f"bulk {fmt(bulk_rate)} runs/s" if bulk_rate else "-",
        ),
        _latency_figure("GET /api/v2/execution/status p99", label, full["status"], empty["status"]),
    ]
    if with_list:
        figures.append(
            _latency_figure("GET /api/v2/executions p99", label, full["list"], empty["list"])
        )
    else:
        figures.append(
            Figure(
                bench="B4",
                name=f"GET /api/v2/executions p99, {label}",
                value=None,
                unit="ms",
                target=f"p99 <= {TARGET_P99_MS:.0f} ms",
                passed=None,
                value_text="skipped: the service has no GET /api/v2/executions route yet",
                notes=["route absent from /openapi.json when the bench ran"],
            )
        )
    return figures


def _latency_figure(
    what: str, label: str, full: dict[str, float], empty: dict[str, float]
) -> Figure:
    return Figure(
        bench="B4",
        name=f"{what}, {label}",
        value=full["p99_ms"],
        unit="ms (p99)",
        baseline=empty["p99_ms"],
        baseline_label="same request, same server, 0 pending",
        ratio=full["p99_ms"] / empty["p99_ms"] if empty["p99_ms"] else None,
        ratio_label="service / baseline (x)",
        target=f"p99 <= {TARGET_P99_MS:.0f} ms",
        passed=judge(full["p99_ms"], TARGET_P99_MS, at_most=True),
        value_text=f"p50 {fmt(full['p50_ms'])}, p99 {fmt(full['p99_ms'])} ms",
        baseline_text=f"p50 {fmt(empty['p50_ms'])}, p99 {fmt(empty['p99_ms'])} ms",
        details={"with_pending": full, "empty": empty},
    )


async def run(ws: Workspace, quick: bool) -> list[Figure]:
    # (backend, pending runs, batch API budget s, probes, single-request sample s)
    if quick:
        plan = [("sqlite", 10_000, 1.5, 30, 0.5), ("postgresql", 50_000, 1.5, 30, 0.5)]
    else:
        plan = [("sqlite", 100_000, 90.0, 300, 5.0), ("postgresql", 1_000_000, 60.0, 300, 5.0)]
    figures: list[Figure] = []
    for backend, total, budget, probes, single in plan:
        figures.extend(await run_backend(ws, backend, total, budget, probes, single))
    return figures
