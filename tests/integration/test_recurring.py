"""Recurring jobs fired by the engine with an injected clock (no waiting for real DST)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.domain import JobDefinition, JobStatus
from app.domain.business_calendars import CalendarInUseError
from app.domain.records import ExecutionQuery
from app.engine import InMemoryExecutionStore, NewExecutionEngine
from app.persistence import SqlExecutionStore, upgrade_to_head
from tests.support.steps import Probe, install_probe, uninstall_probe


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def probe() -> Iterator[Probe]:
    yield install_probe()
    uninstall_probe()


@pytest.fixture(params=["memory", "sqlite"])
async def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        shared = InMemoryExecutionStore()
        return lambda: shared
    url = f"sqlite+aiosqlite:///{tmp_path / 'recurring.db'}"
    await upgrade_to_head(url)
    return lambda: SqlExecutionStore(url)


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 3, 7, 12, 0, tzinfo=UTC))


@pytest.fixture
async def engine(
    store_factory: Any, clock: Clock, probe: Probe
) -> AsyncIterator[NewExecutionEngine]:
    eng = make(store_factory, clock)
    await eng.start()
    # The tests move the clock (backwards too): not while the first pass, which read the
    # clock at start, is still looking for due jobs.
    await eng._recurring.wait_idle()  # type: ignore[union-attr]
    yield eng
    await eng.stop(wait_for_jobs=False)


def make(store_factory: Any, clock: Clock, **kw: Any) -> NewExecutionEngine:
    return NewExecutionEngine(
        store=store_factory(),
        clock=clock,
        poll_interval_seconds=3600,
        misfire_grace_seconds=300,
        **kw,
    )


def job(
    job_id: str, schedule: dict[str, Any], tz: str = "America/New_York", **steps: Any
) -> JobDefinition:
    step = {"step_id": "a", "type": "probe", **steps}
    return JobDefinition(
        job_id=job_id, job_name=job_id, timezone=tz, steps=[step], schedule_config=schedule
    )


async def history(engine: NewExecutionEngine, job_id: str) -> list[Any]:
    page = await engine.store.list_executions(ExecutionQuery(job_id=job_id, limit=200))
    return sorted(page.items, key=lambda e: e.metadata.get("scheduled_for", ""))


async def settle(engine: NewExecutionEngine, job_id: str, count: int) -> list[Any]:
    """Evaluate schedules now, then wait until ``count`` executions of the job have ended."""
    await engine._recurring.fire_due()  # type: ignore[union-attr]
    await engine._scheduler.run_due()
    async with asyncio.timeout(10):
        while True:
            items = await history(engine, job_id)
            if len(items) >= count and all(e.status.is_terminal for e in items):
                return items
            await asyncio.sleep(0.01)


async def test_fixed_time_in_gap_fires_once_after_the_gap(
    engine: NewExecutionEngine, clock: Clock
) -> None:
    assert engine.jobs is not None
    stored = await engine.jobs.create(job("gap", {"type": "cron", "expression": "30 2 * * *"}))
    assert stored.next_fire_at == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT
    clock.now = datetime(2026, 3, 8, 7, 0, 1, tzinfo=UTC)
    runs = await settle(engine, "gap", 1)
    assert [r.metadata["scheduled_for"] for r in runs] == ["2026-03-08T07:00:00+00:00"]
    assert runs[0].status is JobStatus.SUCCESS
    await engine._recurring.fire_due()  # type: ignore[union-attr]
    assert len(await history(engine, "gap")) == 1  # evaluated again: no second fire
    after = await engine.jobs.get("gap")
    assert after.next_fire_at == datetime(2026, 3, 9, 6, 30, tzinfo=UTC)
    assert after.last_fire_at == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


async def test_fixed_time_in_repeated_hour_fires_once_even_across_a_restart(
    store_factory: Any, clock: Clock, probe: Probe
) -> None:
    clock.now = datetime(2026, 10, 31, 12, 0, tzinfo=UTC)
    first = make(store_factory, clock)
    await first.start()
    assert first.jobs is not None
    await first.jobs.create(job("fold", {"type": "cron", "expression": "30 1 * * *"}))
    clock.now = datetime(2026, 11, 1, 5, 30, 1, tzinfo=UTC)  # 01:30 EDT
    await settle(first, "fold", 1)
    await first.stop()
    clock.now = datetime(2026, 11, 1, 6, 10, tzinfo=UTC)  # restart at 01:10 EST (fold=1)
    second = make(store_factory, clock)
    await second.start()
    try:
        clock.now = datetime(2026, 11, 1, 6, 30, 1, tzinfo=UTC)  # 01:30 EST
        await second._recurring.fire_due()  # type: ignore[union-attr]
        assert len(await history(second, "fold")) == 1
        assert second.jobs is not None
        assert (await second.jobs.get("fold")).next_fire_at == datetime(
            2026, 11, 2, 6, 30, tzinfo=UTC
        )
    finally:
        await second.stop()


async def test_wildcard_hour_follows_elapsed_time_through_fall_back(
    engine: NewExecutionEngine, clock: Clock
) -> None:
    clock.now = datetime(2026, 11, 1, 4, 50, tzinfo=UTC)
    assert engine.jobs is not None
    await engine.jobs.create(job("hourly", {"type": "cron", "expression": "0 * * * *"}))
    fired = []
    for hour in (5, 6, 7):  # 01:00 EDT, 01:00 EST, 02:00 EST
        clock.now = datetime(2026, 11, 1, hour, 0, 1, tzinfo=UTC)
        runs = await settle(engine, "hourly", len(fired) + 1)
        fired = [r.metadata["scheduled_for"] for r in runs]
    assert fired == [
        "2026-11-01T05:00:00+00:00",
        "2026-11-01T06:00:00+00:00",
        "2026-11-01T07:00:00+00:00",
    ]


@pytest.mark.parametrize(
    ("policy", "ran", "recorded"), [("run_once", 1, 9), ("skip", 0, 10), ("run_all", 5, 5)]
)
async def test_misfire_policies_record_every_fire_that_did_not_run(
    engine: NewExecutionEngine, clock: Clock, policy: str, ran: int, recorded: int
) -> None:
    assert engine.jobs is not None
    await engine.jobs.create(
        job("every", {"type": "interval", "every_seconds": 60, "misfire_policy": policy})
    )
    # Down for 10.5 minutes: 10 fires are due, 5 within the 300 s grace, none on time.
    clock.now = clock.now + timedelta(minutes=10, seconds=30)
    runs = await settle(engine, "every", 10)
    succeeded = [r for r in runs if r.status is JobStatus.SUCCESS]
    others = [r for r in runs if r.status is not JobStatus.SUCCESS]
    assert (len(succeeded), len(others)) == (ran, recorded)
    reasons = {(r.error_message or "").split(":")[0] for r in others}
    assert reasons <= {"missed", "skipped"}
    assert all(r.error_message for r in others)
    if policy == "run_once":
        assert succeeded[0].metadata["scheduled_for"] == max(
            r.metadata["scheduled_for"] for r in runs
        )


@pytest.mark.parametrize("overlap", ["skip", "replace", "queue", "allow"])
async def test_overlap_policies(
    engine: NewExecutionEngine, clock: Clock, probe: Probe, overlap: str
) -> None:
    assert engine.jobs is not None
    await engine.jobs.create(
        job(
            "long",
            {"type": "interval", "every_seconds": 60, "overlap_policy": overlap},
            gate="open",
        )
    )
    clock.now = clock.now + timedelta(seconds=61)  # the first fire is one interval in
    await engine._recurring.fire_due()  # type: ignore[union-attr]
    await engine._scheduler.run_due()
    first = None
    async with asyncio.timeout(10):
        while not (active := engine.active_execution_ids("long")):
            await asyncio.sleep(0.01)
        first = active[0]
        await probe.started[f"{first}:a"].wait()
    clock.now = clock.now + timedelta(seconds=60)
    await engine._recurring.fire_due()  # type: ignore[union-attr]
    await engine._scheduler.run_due()
    if overlap == "allow":
        async with asyncio.timeout(10):
            while probe.active_total < 2:
                await asyncio.sleep(0.01)
    if overlap == "queue":
        async with asyncio.timeout(10):
            while len(waiting := engine.active_execution_ids("long")) < 2:
                await asyncio.sleep(0.01)
        for _ in range(50):  # give a wrongly unserialised run every chance to start
            await asyncio.sleep(0)
        assert probe.active_total == 1
        status = engine.get_execution_status(waiting[1])
        assert status is not None and status["status"] == "pending"
    probe.gates["open"].set()
    runs = await settle(engine, "long", 2)
    statuses = {r.execution_id: r for r in runs}
    second = next(r for r in runs if r.execution_id != first)
    if overlap == "skip":
        assert statuses[first].status is JobStatus.SUCCESS
        assert second.status is JobStatus.CANCELLED
        assert f"execution {first}" in (second.error_message or "")
    elif overlap == "replace":
        assert statuses[first].status is JobStatus.CANCELLED
        assert second.status is JobStatus.SUCCESS
    else:
        assert {r.status for r in runs} == {JobStatus.SUCCESS}
        if overlap == "queue":
            assert second.start_time is not None and statuses[first].end_time is not None
            assert second.start_time >= statuses[first].end_time
            assert probe.peak_total == 1
        else:
            assert probe.peak_total == 2


async def test_disabled_job_stops_firing(engine: NewExecutionEngine, clock: Clock) -> None:
    assert engine.jobs is not None
    await engine.jobs.create(job("off", {"type": "interval", "every_seconds": 60}))
    await engine.jobs.set_enabled("off", False)
    clock.now = clock.now + timedelta(minutes=5)
    await engine._recurring.fire_due()  # type: ignore[union-attr]
    assert await history(engine, "off") == []
    assert (await engine.jobs.get("off")).next_fire_at is None


async def test_two_replicas_fire_each_time_once(tmp_path: Path, clock: Clock, probe: Probe) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'replicas.db'}"
    await upgrade_to_head(url)
    engines = [
        NewExecutionEngine(store=SqlExecutionStore(url), clock=clock, poll_interval_seconds=3600)
        for _ in range(2)
    ]
    for eng in engines:
        await eng.start()
    try:
        assert engines[0].jobs is not None
        await engines[0].jobs.create(job("both", {"type": "interval", "every_seconds": 60}))
        for _ in range(3):
            clock.now = clock.now + timedelta(seconds=60)
            await asyncio.gather(*(e._recurring.fire_due() for e in engines))  # type: ignore[union-attr]
        await asyncio.gather(*(e._scheduler.run_due() for e in engines))
        runs = await settle(engines[0], "both", 3)
        assert len(runs) == 3
        assert len({r.metadata["scheduled_for"] for r in runs}) == 3
    finally:
        for eng in engines:
            await eng.stop()


# -- several schedules per job ---------------------------------------------------------
def job_with(schedules: list[dict[str, Any]], **fields: Any) -> JobDefinition:
    return JobDefinition(
        job_id="multi",
        job_name="multi",
        timezone="Europe/London",
        steps=[{"step_id": "a", "type": "probe"}],
        schedules=schedules,
        **fields,
    )


async def test_two_schedules_that_coincide_fire_once_and_name_their_source(
    engine: NewExecutionEngine, clock: Clock
) -> None:
    assert engine.jobs is not None
    clock.now = datetime(2026, 1, 4, 12, 0, tzinfo=UTC)  # a Sunday
    await engine.jobs.create(
        job_with(
            [
                {"name": "mondays", "schedule_config": {"type": "cron", "expression": "0 9 * * 1"}},
                {
                    "name": "weekdays",
                    "schedule_config": {
                        "type": "calendar",
                        "frequency": "weekly",
                        "weekdays": ["monday", "tuesday"],
                        "at": "09:00",
                    },
                },
            ]
        )
    )
    clock.now = datetime(2026, 1, 5, 9, 0, 1, tzinfo=UTC)  # Monday 09:00: both fire
    runs = await settle(engine, "multi", 1)
    assert [(r.metadata["scheduled_for"], r.metadata["schedule_name"]) for r in runs] == [
        ("2026-01-05T09:00:00+00:00", "mondays")
    ]
    clock.now = datetime(2026, 1, 6, 9, 0, 1, tzinfo=UTC)  # Tuesday: only "weekdays"
    runs = await settle(engine, "multi", 2)
    assert [r.metadata["schedule_name"] for r in runs] == ["mondays", "weekdays"]
    assert len({r.metadata["scheduled_for"] for r in runs}) == 2


async def test_one_schedule_disabled_the_other_keeps_firing(
    engine: NewExecutionEngine, clock: Clock
) -> None:
    assert engine.jobs is not None
    clock.now = datetime(2026, 1, 4, 12, 0, tzinfo=UTC)
    await engine.jobs.create(
        job_with(
            [
                {"name": "early", "schedule_config": {"type": "cron", "expression": "0 8 * * *"}},
                {"name": "late", "schedule_config": {"type": "cron", "expression": "0 20 * * *"}},
            ]
        )
    )
    stored = await engine.jobs.set_schedule_enabled("multi", "late", False)
    assert stored.next_fire_at == datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    again = await engine.jobs.set_schedule_enabled("multi", "late", False)
    assert again.version == stored.version  # idempotent: no new version
    clock.now = datetime(2026, 1, 5, 8, 0, 1, tzinfo=UTC)
    runs = await settle(engine, "multi", 1)
    assert [r.metadata["schedule_name"] for r in runs] == ["early"]
    assert (await engine.jobs.get("multi")).next_fire_at == datetime(2026, 1, 6, 8, 0, tzinfo=UTC)
    clock.now = datetime(2026, 1, 6, 8, 10, tzinfo=UTC)  # ten minutes late: recorded missed
    runs = await settle(engine, "multi", 2)
    assert runs[1].error_message.endswith("(schedule early)")


# -- business calendars ---------------------------------------------------------------------
async def test_a_bank_holiday_is_skipped_and_recorded(
    engine: NewExecutionEngine, clock: Clock
) -> None:
    assert engine.jobs is not None
    clock.now = datetime(2026, 12, 23, 12, 0, tzinfo=UTC)
    await engine.jobs.calendars.create({"name": "uk", "country": "GB", "subdivision": "ENG"})
    stored = await engine.jobs.create(
        JobDefinition(
            job_id="daily",
            job_name="daily",
            timezone="Europe/London",
            steps=[{"step_id": "a", "type": "probe"}],
            schedule_config={
                "type": "cron",
                "expression": "0 9 * * 1-5",
                "exclude": {"calendar": "uk"},
            },
        )
    )
    assert stored.next_fire_at == datetime(2026, 12, 24, 9, 0, tzinfo=UTC)
    clock.now = datetime(2026, 12, 24, 9, 0, 1, tzinfo=UTC)
    await settle(engine, "daily", 1)
    # Christmas Day (Friday) is excluded: recorded, not run; Monday 28 (Boxing Day observed) too.
    clock.now = datetime(2026, 12, 25, 9, 0, 1, tzinfo=UTC)
    runs = await settle(engine, "daily", 2)
    assert runs[1].error_message == "excluded by calendar uk"
    assert runs[1].metadata["scheduled_for"] == "2026-12-25T09:00:00+00:00"
    assert (await engine.jobs.get("daily")).next_fire_at == datetime(2026, 12, 28, 9, tzinfo=UTC)
    with pytest.raises(CalendarInUseError):
        await engine.jobs.calendars.delete("uk")


async def test_a_bank_holiday_fire_moves_to_the_next_business_day(
    engine: NewExecutionEngine, clock: Clock
) -> None:
    assert engine.jobs is not None
    clock.now = datetime(2026, 12, 20, 12, 0, tzinfo=UTC)
    await engine.jobs.calendars.create({"name": "xmas", "dates": ["2026-12-25", "2026-12-28"]})
    await engine.jobs.create(
        JobDefinition(
            job_id="xmas",
            job_name="xmas",
            timezone="Europe/London",
            steps=[{"step_id": "a", "type": "probe"}],
            schedule_config={
                "type": "cron",
                "expression": "0 9 25 12 *",
                "exclude": {"calendar": "xmas", "on_excluded": "next_business_day"},
            },
        )
    )
    assert (await engine.jobs.get("xmas")).next_fire_at == datetime(2026, 12, 29, 9, tzinfo=UTC)
    clock.now = datetime(2026, 12, 29, 9, 0, 1, tzinfo=UTC)
    runs = await settle(engine, "xmas", 1)
    assert [r.metadata["scheduled_for"] for r in runs] == ["2026-12-29T09:00:00+00:00"]
    assert runs[0].status is JobStatus.SUCCESS
