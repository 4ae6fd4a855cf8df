"""The misfire counter follows the policies' outcomes of a real recurring schedule (engine
with an injected clock, memory and SQLite stores), and start-up recovery counts its misses."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.engine import InMemoryExecutionStore
from app.engine.metrics import EngineMetrics
from app.persistence import SqlExecutionStore, upgrade_to_head
from tests.integration.test_recurring import Clock, job, make, settle
from tests.support.steps import Probe, install_probe, uninstall_probe


@pytest.fixture
def probe() -> Iterator[Probe]:
    yield install_probe()
    uninstall_probe()


@pytest.fixture(params=["memory", "sqlite"])
async def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        shared = InMemoryExecutionStore()
        return lambda: shared
    url = f"sqlite+aiosqlite:///{tmp_path / 'misfires.db'}"
    await upgrade_to_head(url)
    return lambda: SqlExecutionStore(url)


def misfires(metrics: EngineMetrics) -> dict[str, float]:
    text = metrics.render().decode()
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "jobscheduler_misfires"
        for sample in family.samples
        if sample.name == "jobscheduler_misfires_total"
    }


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("run_once", {"missed": 5, "coalesced": 4}),
        ("skip", {"missed": 5, "skipped": 5}),
        ("run_all", {"missed": 5}),
    ],
)
async def test_misfires_are_counted_by_policy_outcome(
    store_factory: Any, probe: Probe, policy: str, expected: dict[str, float]
) -> None:
    clock = Clock(datetime(2026, 3, 7, 12, 0, tzinfo=UTC))
    engine = make(store_factory, clock)
    metrics = EngineMetrics(engine)
    engine.observers.add(metrics)
    await engine.start()
    try:
        assert engine.jobs is not None
        await engine.jobs.create(
            job("every", {"type": "interval", "every_seconds": 60, "misfire_policy": policy})
        )
        # Down for 10.5 minutes: 10 fires are due, 5 within the 300 s grace, none on time.
        clock.now = clock.now + timedelta(minutes=10, seconds=30)
        await settle(engine, "every", 10)
        assert misfires(metrics) == expected
    finally:
        await engine.stop(wait_for_jobs=False)


async def test_recovery_counts_runs_missed_while_down(store_factory: Any, probe: Probe) -> None:
    clock = Clock(datetime(2026, 3, 7, 12, 0, tzinfo=UTC))
    first = make(store_factory, clock)
    await first.start()
    once = job("once", {"type": "interval", "every_seconds": 60})
    await first.schedule_instant(once, clock.now + timedelta(minutes=1))
    await first.stop()
    clock.now = clock.now + timedelta(hours=1)  # far beyond the misfire grace
    second = make(store_factory, clock)
    metrics = EngineMetrics(second)
    second.observers.add(metrics)
    await second.start()
    try:
        assert second.recovery_report["missed"] == 1
        assert misfires(metrics) == {"missed": 1}
    finally:
        await second.stop(wait_for_jobs=False)
