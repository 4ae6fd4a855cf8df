"""``python -m bench [--quick] [--only B1,B3] [--output PATH]``: run the benchmarks, print
one table, write the results as JSON (default ``bench/results/latest.json``; ``--quick``
writes ``bench/results/quick.json``)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

# Figures must not depend on a developer's V2_* environment (the bench sets what it needs).
for _name in [n for n in os.environ if n.startswith("V2_") and not n.startswith("V2_BENCH_")]:
    del os.environ[_name]

from bench.common import RESULTS_DIR, ROOT, Figure, Workspace  # noqa: E402
from bench.report import render_table  # noqa: E402

BENCHMARKS = {
    "B1": "bench.b1_http",
    "B2": "bench.b2_engine",
    "B3": "bench.b3_lateness",
    "B3-PEER": "bench.b3_peer",
    "B3-CAPACITY": "bench.b3_capacity:run_capacity",
    "B3-BURST": "bench.b3_capacity:run_burst",
    "B4": "bench.b4_scale",
    "B5": "bench.b5_drain",
    "B5-PEER": "bench.b5_peer",
    "B6": "bench.b6_steps",
    "B7": "bench.b7_scaleout:run_b7",
    "B8": "bench.b7_scaleout:run_b8",
}
# Left out of --quick unless named with --only (bench-quick stays under two minutes with one
# peer, B5-peer, in it).
FULL_ONLY = ("B3-PEER", "B3-CAPACITY", "B7", "B8")
LIBRARIES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "asyncpg",
    "aiosqlite",
    "pydantic",
    "httpx",
    "uvloop",
    "apscheduler",
    "pgqueuer",
    "psycopg",
)


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = platform.python_version()
    out["sqlite"] = sqlite3.sqlite_version
    return out


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    return info


def _git() -> dict[str, Any]:
    def read(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = read("status", "--porcelain", "--untracked-files=no", "--", "app")
    return {
        "commit": read("rev-parse", "HEAD"),
        "app_modified": bool(status) if status is not None else None,
    }


async def _pg_version() -> str | None:
    import asyncpg

    from bench.common import PG_HOST, PG_PORT, PG_USER

    try:
        conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    except (OSError, asyncpg.PostgresError) as exc:
        raise SystemExit(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT}: {exc}") from exc
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


async def _run(
    selected: list[str], quick: bool, keep: bool
) -> tuple[list[Figure], dict[str, float], str | None]:
    pg_version = await _pg_version()
    ws = Workspace(keep=keep)
    figures: list[Figure] = []
    timings: dict[str, float] = {}
    try:
        for key in selected:
            module_name, _, function = BENCHMARKS[key].partition(":")
            benchmark = getattr(importlib.import_module(module_name), function or "run")
            print(f"[bench] {key} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            try:
                got = await benchmark(ws, quick)
            except Exception as exc:  # one broken benchmark must not hide the others
                traceback.print_exc()
                got = [
                    Figure(
                        bench=key,
                        name=f"{key} failed",
                        value=None,
                        unit="",
                        passed=False,
                        value_text=f"error: {type(exc).__name__}: {exc}"[:200],
                        notes=[traceback.format_exc()[-2000:]],
                    )
                ]
            timings[key] = time.perf_counter() - t0
            print(f"[bench] {key} done in {timings[key]:.0f} s", file=sys.stderr, flush=True)
            figures.extend(got)
    finally:
        await ws.cleanup()
    return figures, timings, pg_version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="scaled down, under two minutes")
    parser.add_argument("--only", default="", help="comma-separated subset, e.g. B1,B4,B3-peer")
    parser.add_argument("--output", type=Path, default=None, help="where to write the JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample B1 (server), B2, B3-burst, B5, B6 with py-spy into bench/results/profiles/ "
        "(slows them down; figures are marked)",
    )
    args = parser.parse_args(argv)
    selected = [s.strip().upper() for s in args.only.split(",") if s.strip()] or [
        key for key in BENCHMARKS if not (args.quick and key in FULL_ONLY)
    ]
    unknown = [s for s in selected if s not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    output = args.output or RESULTS_DIR / ("quick.json" if args.quick else "latest.json")
    if args.profile:
        from bench import profile

        profile.enable()
        if args.output is None:
            output = RESULTS_DIR / "profiles" / "results.json"

    started = datetime.now(UTC)
    load_start = os.getloadavg()  # the machine is shared: say how busy it was
    t0 = time.perf_counter()
    # The server runs on uvloop (uvicorn picks it when installed): so do the in-process runs.
    try:
        import uvloop
    except ImportError:
        uvloop = None
    loop_name = "uvloop" if uvloop is not None else "asyncio"
    runner = uvloop.run if uvloop is not None else asyncio.run
    figures, timings, pg_version = runner(_run(selected, args.quick, args.keep))
    duration = time.perf_counter() - t0

    table = render_table(figures)
    print(table)
    missed = [f for f in figures if f.passed is False]
    result = {
        "command": "python -m bench" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        "mode": ("quick" if args.quick else "full") + (" (profiled)" if args.profile else ""),
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "duration_seconds": round(duration, 1),
        "seconds_per_benchmark": {k: round(v, 1) for k, v in timings.items()},
        "cpu_count": os.cpu_count(),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "machine": _machine(),
        "event_loop": loop_name,
        "postgresql": pg_version,
        "versions": _versions(),
        "git": _git(),
        "summary": {
            "passed": sum(1 for f in figures if f.passed is True),
            "missed": len(missed),
            "missed_rows": [f"{f.bench} {f.name.strip()}" for f in missed],
        },
        "figures": [f.to_json() for f in figures],
        "table_markdown": table,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    tmp.replace(output)
    loads = "/".join(f"{x:.2f}" for x in load_start), "/".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"\n{len(figures)} figures, {len(missed)} missed target; {duration:.0f} s; "
        f"load average (1/5/15 min) {loads[0]} at start, {loads[1]} at end; wrote {output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
