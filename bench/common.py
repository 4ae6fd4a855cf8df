"""Shared pieces of the benchmarks: figures, statistics, databases, process probes.

Every benchmark returns :class:`Figure` rows: the measured value, the baseline measured in
the same run, their ratio and the issue's target. Nothing here imports the app at module
import time except where a helper needs its models.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"

PG_HOST = os.environ.get("V2_BENCH_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("V2_BENCH_PG_PORT", "5432"))
PG_USER = os.environ.get("V2_BENCH_PG_USER", "postgres")

CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- figures -------------------------------------------------------------------------------------
@dataclass
class Figure:
    """One row of the results table."""

    bench: str  # "B1"
    name: str  # "HTTP execute throughput (PostgreSQL)"
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    ratio: float | None = None  # value / baseline, or baseline / value: see ratio_label
    ratio_label: str = ""
    target: str = ""
    passed: bool | None = None  # None: no target for this row
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    value_text: str = ""  # how the table shows the value (default: value + unit)
    baseline_text: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def judge(value: float | None, limit: float, *, at_most: bool) -> bool | None:
    if value is None or math.isnan(value):
        return False
    return value <= limit if at_most else value >= limit


# -- statistics ----------------------------------------------------------------------------------
def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summary_ms(seconds: Iterable[float]) -> dict[str, float]:
    """p50 / p99 / max / mean in milliseconds, and the count."""
    values = sorted(seconds)
    if not values:
        return {"n": 0, "p50_ms": math.nan, "p99_ms": math.nan, "max_ms": math.nan}
    return {
        "n": len(values),
        "p50_ms": percentile(values, 50) * 1e3,
        "p99_ms": percentile(values, 99) * 1e3,
        "max_ms": values[-1] * 1e3,
        "mean_ms": sum(values) / len(values) * 1e3,
    }


def median(values: Sequence[float]) -> float:
    return percentile(sorted(values), 50)


# -- processes -----------------------------------------------------------------------------------
def rss_mib(pid: int) -> float:
    """VmRSS of a process in MiB (from /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds used so far by ``pid`` (default: this process)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields_[11]) + int(fields_[12])) / CLK_TCK


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


# -- databases -----------------------------------------------------------------------------------
class Workspace:
    """A temporary directory for SQLite files and logs, and the PostgreSQL databases made
    for this run; everything is removed by :meth:`cleanup`."""

    def __init__(self, keep: bool = False) -> None:
        self.run_id = uuid.uuid4().hex[:10]
        self.path = Path(tempfile.mkdtemp(prefix=f"jsv2_bench_{self.run_id}_"))
        self.keep = keep
        self._pg_databases: list[str] = []

    def sqlite_url(self, name: str) -> str:
        return f"sqlite+aiosqlite:///{self.sqlite_path(name)}"

    def sqlite_path(self, name: str) -> Path:
        return self.path / f"{name}.db"

    async def pg_database(self, tag: str) -> str:
        """Create a fresh database ``jsv2_bench_<run>_<tag>``; its SQLAlchemy URL."""
        name = f"jsv2_bench_{self.run_id}_{tag}"
        await pg_admin(f'CREATE DATABASE "{name}"')
        self._pg_databases.append(name)
        return f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"

    async def drop_pg_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        with contextlib.suppress(ValueError):
            self._pg_databases.remove(name)

    async def cleanup(self) -> None:
        for name in list(self._pg_databases):
            with contextlib.suppress(Exception):
                await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._pg_databases.clear()
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)


async def pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def pg_admin_fetchval(sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


def asyncpg_dsn(url: str) -> str:
    """``postgresql+asyncpg://...`` -> ``postgresql://...`` for asyncpg itself."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def sqlite_file(url: str) -> str:
    return url.split(":///", 1)[1]


@contextlib.asynccontextmanager
async def pg_connection(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        yield conn
    finally:
        await conn.close()


async def migrate(url: str) -> None:
    from app.persistence.migrate import upgrade_to_head

    await upgrade_to_head(url)


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"
