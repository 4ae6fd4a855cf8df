"""``make soak``: R replicas on one PostgreSQL under kill -9, with a database restart.

R service processes (``python -m app``) share a fresh PostgreSQL database. Recurring jobs
fire every 2 s and one-off runs are scheduled through random replicas every second; every
job's SQL steps write a ledger row naming their execution. Every ``--kill-every`` seconds a
random replica is killed with SIGKILL and started again; in the middle of the run PostgreSQL
itself is restarted (``pg_ctlcluster ... restart``). At the end everything still running is
waited for, and the report counts:

* duplicate fires: recurring fires with more than one execution per (job_id, scheduled_for);
* lost runs: one-off runs acknowledged by a replica that have no execution, or never ended;
* stuck executions: not finished long after the end;
* doubled side effects: a step's ledger row written twice for one logical run (a run and
  its recovery retries), split into flagged (the retry says the step may run twice:
  ``possible_duplicate_steps``) and unflagged;
* failover times: from each kill until the killed node's running executions were settled.

Not part of CI. ``python scripts/soak.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.persistence import upgrade_to_head  # noqa: E402

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}

LEDGER_STEP = "INSERT INTO soak_ledger (execution_id, step) VALUES (:eid, :step)"


def soak_job(job_id: str, **extra: Any) -> dict[str, Any]:
    def ledger(step: str) -> dict[str, Any]:
        return {
            "step_id": step,
            "type": "sql",
            "connection_name": "ledger",
            "query": LEDGER_STEP,
            "parameters": {"eid": {"$from": "run.execution_id"}, "step": step},
            "fetch_results": False,
        }

    return {
        "job_id": job_id,
        "job_name": job_id,
        "max_retries": 3,
        "steps": [
            ledger("a"),
            {"step_id": "work", "type": "shell", "script": "sleep 1.5"},
            ledger("b"),
        ],
        **extra,
    }


@dataclass
class Replica:
    index: int
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Soak:
    url: str
    replicas: list[Replica]
    env: dict[str, str]
    acknowledged: list[str] = field(default_factory=list)
    kills: list[tuple[float, str]] = field(default_factory=list)  # (time, node id)
    node_ids: dict[int, str] = field(default_factory=dict)

    def start(self, replica: Replica) -> None:
        with replica.log.open("ab") as out:
            replica.process = subprocess.Popen(
                [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(replica.port)],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=out,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                status = httpx.get(f"{replica.url}/api/v2/cluster", timeout=2).json()
                self.node_ids[replica.index] = status["node_id"]
                return
            time.sleep(0.1)
        raise RuntimeError(f"replica {replica.index} did not start; see {replica.log}")

    def live(self) -> list[Replica]:
        return [r for r in self.replicas if r.process is not None and r.process.poll() is None]


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(database="postgres", **PG)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    for _ in range(50):
        try:
            conn = await asyncpg.connect(dsn)
            break
        except (OSError, asyncpg.PostgresError):
            await asyncio.sleep(0.2)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


def restart_postgres(cluster: str) -> float:
    version = sorted(os.listdir("/etc/postgresql"))[0]
    started = time.monotonic()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "restart"], check=True
    )
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--kill-every", type=float, default=20.0)
    parser.add_argument("--recurring-jobs", type=int, default=10)
    parser.add_argument("--no-pg-restart", action="store_true")
    parser.add_argument(
        "--pg-port",
        type=int,
        default=PG["port"],
        help="PostgreSQL port (default 5432); with --pg-cluster, soak a cluster of its own "
        "(e.g. `pg_createcluster 15 soak --port 5433 --start`) and leave the main one alone",
    )
    parser.add_argument(
        "--pg-cluster", default="main", help="the pg_ctlcluster name restarted mid-run"
    )
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = parser.parse_args()
    PG["port"] = args.pg_port

    name = f"jsv2_soak_{uuid.uuid4().hex[:8]}"
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+asyncpg://{PG['user']}@{PG['host']}:{PG['port']}/{name}"
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    asyncio.run(upgrade_to_head(url))
    asyncio.run(
        fetch(
            dsn,
            "CREATE TABLE soak_ledger (execution_id text, step text, at timestamptz DEFAULT now())",
        )
    )
    workdir = ROOT / "data" / name
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "V2_DATABASE_URL": url,
        "V2_AUTO_MIGRATE": "false",
        "V2_CONNECTIONS": json.dumps({"ledger": url}),
        "V2_HEARTBEAT_SECONDS": "1",
        "V2_NODE_TIMEOUT_SECONDS": "5",
        "V2_POLL_INTERVAL_SECONDS": "0.5",
        "V2_SHUTDOWN_GRACE_SECONDS": "5",
        "V2_RATE_LIMIT_PER_MINUTE": "0",
    }
    ports = [8100 + i for i in range(args.replicas)]
    soak = Soak(url, [Replica(i, p, workdir / f"replica{i}.log") for i, p in enumerate(ports)], env)
    for replica in soak.replicas:
        soak.start(replica)
    for i in range(args.recurring_jobs):
        job = soak_job(f"rec-{i:02d}", schedule_config={"type": "interval", "every_seconds": 2})
        httpx.post(f"{soak.replicas[0].url}/api/v2/jobs", json=job, timeout=10).raise_for_status()

    began = time.monotonic()
    end = began + args.minutes * 60
    next_kill = began + args.kill_every
    pg_restart_at = None if args.no_pg_restart else began + args.minutes * 30
    pg_restart_seconds = None
    submitted = 0
    print(f"soak: {args.replicas} replicas on {name} for {args.minutes} min", flush=True)
    while time.monotonic() < end:
        now = time.monotonic()
        live = soak.live()
        if live:
            target = random.choice(live)
            when = datetime.now(UTC) + timedelta(seconds=2)
            body = {"job": soak_job(f"once-{submitted:05d}"), "scheduled_time": when.isoformat()}
            with contextlib.suppress(httpx.HTTPError):
                response = httpx.post(f"{target.url}/api/v2/jobs/schedule", json=body, timeout=10)
                if response.status_code in (200, 201, 202):
                    soak.acknowledged.append(response.json()["execution_id"])
            submitted += 1
        if now >= next_kill and live:
            victim = random.choice(live)
            assert victim.process is not None
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait()
            soak.kills.append((time.time(), soak.node_ids[victim.index]))
            print(f"  {now - began:6.1f}s kill -9 replica {victim.index}", flush=True)
            soak.start(victim)
            next_kill = now + args.kill_every
        if pg_restart_at is not None and now >= pg_restart_at:
            pg_restart_seconds = restart_postgres(args.pg_cluster)
            print(f"  {now - began:6.1f}s PostgreSQL restarted ({pg_restart_seconds:.1f}s)")
            pg_restart_at = None
        time.sleep(1.0)

    for i in range(args.recurring_jobs):  # stop firing; wait for the rest to end
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(f"{soak.live()[0].url}/api/v2/jobs/rec-{i:02d}/disable", timeout=10)
    settle_deadline = time.monotonic() + 120
    while time.monotonic() < settle_deadline:
        rows = asyncio.run(
            fetch(
                dsn,
                "SELECT count(*) AS n FROM job_executions_v2 WHERE status IN "
                "('pending', 'running', 'retrying')",
            )
        )
        if rows[0]["n"] == 0:
            break
        time.sleep(1)
    report = build_report(dsn, soak, args, pg_restart_seconds)
    for replica in soak.live():
        assert replica.process is not None
        replica.process.send_signal(signal.SIGTERM)
        replica.process.wait(30)
    if not args.keep_database:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(json.dumps(report, indent=2, default=str))
    ok = report["duplicate_fires"] == report["lost_runs"] == report["stuck_executions"] == 0
    return 0 if ok and report["doubled_side_effects_unflagged"] == 0 else 1


def build_report(
    dsn: str, soak: Soak, args: argparse.Namespace, pg_restart_seconds: float | None
) -> dict[str, Any]:
    executions = asyncio.run(
        fetch(
            dsn,
            "SELECT execution_id, job_id, trigger, scheduled_for, status, owner, end_time, "
            "error_message, metadata_json FROM job_executions_v2",
        )
    )
    by_id = {r["execution_id"]: r for r in executions}
    meta = {r["execution_id"]: json.loads(r["metadata_json"] or "{}") for r in executions}
    fires: dict[tuple[str, Any], int] = {}
    for r in executions:
        if r["trigger"] == "schedule":
            key = (r["job_id"], r["scheduled_for"])
            fires[key] = fires.get(key, 0) + 1
    duplicate_fires = sum(1 for n in fires.values() if n > 1)
    stuck = [
        r["execution_id"] for r in executions if r["status"] in ("pending", "running", "retrying")
    ]
    lost = [eid for eid in soak.acknowledged if eid not in by_id]

    def root(execution_id: str) -> str:
        seen = set()
        while (parent := meta.get(execution_id, {}).get("retry_of")) and parent not in seen:
            seen.add(parent)
            execution_id = parent
        return execution_id

    ledger = asyncio.run(
        fetch(dsn, "SELECT execution_id, step FROM soak_ledger ORDER BY at, execution_id")
    )
    writes: dict[tuple[str, str], list[str]] = {}
    for row in ledger:
        writes.setdefault((root(row["execution_id"]), row["step"]), []).append(row["execution_id"])
    flagged = unflagged = 0
    for (_, step), writers in writes.items():
        for writer in writers[1:]:
            if step in meta.get(writer, {}).get("possible_duplicate_steps", []):
                flagged += 1
            else:
                unflagged += 1
    failovers = []
    for killed_at, node_id in soak.kills:
        settled = [
            r["end_time"].timestamp() - killed_at
            for r in executions
            if (r["error_message"] or "").startswith(f"interrupted on node {node_id}")
            and r["end_time"] is not None
        ]
        if settled:
            failovers.append(max(settled))
    return {
        "replicas": args.replicas,
        "minutes": args.minutes,
        "kills": len(soak.kills),
        "postgres_restart_seconds": pg_restart_seconds,
        "executions": len(executions),
        "one_off_acknowledged": len(soak.acknowledged),
        "recurring_fires": len(fires),
        "duplicate_fires": duplicate_fires,
        "lost_runs": len(lost),
        "stuck_executions": len(stuck),
        "doubled_side_effects_flagged": flagged,
        "doubled_side_effects_unflagged": unflagged,
        "interrupted": sum(
            1 for r in executions if "interrupted on node" in (r["error_message"] or "")
        ),
        "failover_seconds_p50": round(statistics.median(failovers), 2) if failovers else None,
        "failover_seconds_max": round(max(failovers), 2) if failovers else None,
        "status_counts": {
            s: sum(1 for r in executions if r["status"] == s)
            for s in sorted({r["status"] for r in executions})
        },
    }


if __name__ == "__main__":
    raise SystemExit(main())
