"""The scheduler claims runs ahead of their time and starts them on a timer: never early,
whatever the timer's rounding, and never more than ``max_held`` at once; runs due now are
dispatched at once, each in a task of its own (so their durable writes share a batch)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from app.domain import JobDefinition
from app.domain.records import ScheduledRun
from app.engine import InMemoryExecutionStore
from app.engine.scheduler import Scheduler

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0
        self.reads = 0

    def __call__(self) -> datetime:
        self.reads += 1
        return self.now


def _job() -> JobDefinition:
    return JobDefinition(job_id="j", job_name="j", steps=[{"step_id": "a", "type": "probe"}])


async def _until(predicate: Any) -> None:
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.002)


async def _store_with(runs: dict[str, timedelta]) -> InMemoryExecutionStore:
    store = InMemoryExecutionStore()
    for execution_id, offset in runs.items():
        await store.add_scheduled_run(
            ScheduledRun(execution_id=execution_id, job=_job(), scheduled_for=T0 + offset)
        )
    return store


async def test_a_held_run_does_not_start_before_the_clock_reaches_its_time() -> None:
    clock = Clock()
    store = await _store_with({"r1": timedelta(milliseconds=20)})
    dispatched: list[str] = []

    async def dispatch(run: ScheduledRun) -> None:
        dispatched.append(run.execution_id)

    scheduler = Scheduler(
        store, dispatch, owner="o", clock=clock, lookahead_seconds=60, prepare_seconds=0
    )
    assert await scheduler.run_due() == 1
    assert scheduler.held == 1 and dispatched == []
    reads = clock.reads
    await _until(lambda: clock.reads > reads)  # the timer fired and read the clock ...
    assert dispatched == [] and scheduler.held == 1  # ... which says: not yet; re-armed
    clock.now = T0 + timedelta(milliseconds=20)
    await _until(lambda: dispatched == ["r1"])
    assert scheduler.held == 0


async def test_runs_due_now_start_at_once_and_later_ones_wait_in_order() -> None:
    clock = Clock()
    store = await _store_with(
        {"now": timedelta(0), "soon": timedelta(milliseconds=5), "later": timedelta(hours=1)}
    )
    dispatched: list[str] = []

    async def dispatch(run: ScheduledRun) -> None:
        dispatched.append(run.execution_id)

    scheduler = Scheduler(
        store, dispatch, owner="o", clock=clock, lookahead_seconds=1, prepare_seconds=0
    )
    assert await scheduler.run_due() == 2  # "later" is beyond the look-ahead: not claimed
    assert scheduler.held == 1  # "soon" waits for its timer; "now" is being dispatched
    await _until(lambda: dispatched == ["now"])
    clock.now = T0 + timedelta(milliseconds=5)
    await _until(lambda: dispatched == ["now", "soon"])
    assert await store.count_scheduled_runs() == 1


async def test_no_more_than_max_held_runs_are_claimed_ahead() -> None:
    clock = Clock()
    store = await _store_with({f"r{i}": timedelta(seconds=10 + i) for i in range(5)})

    async def dispatch(run: ScheduledRun) -> None:
        raise AssertionError("nothing is due")

    scheduler = Scheduler(store, dispatch, owner="o", clock=clock, lookahead_seconds=60, max_held=3)
    assert await scheduler.run_due() == 3
    assert await scheduler.run_due() == 0  # full
    assert await scheduler.next_due_time() is None  # so the loop waits instead of spinning
    assert await store.count_scheduled_runs() == 2
    assert sorted(scheduler.drop_held()) == ["r0", "r1", "r2"]
    assert scheduler.held == 0


async def test_runs_due_together_are_dispatched_together() -> None:
    clock = Clock()
    store = await _store_with({f"r{i}": timedelta(0) for i in range(3)})
    started: list[str] = []
    gate = asyncio.Event()

    async def dispatch(run: ScheduledRun) -> None:
        started.append(run.execution_id)
        await gate.wait()  # e.g. the durable "dispatched" write they should share

    scheduler = Scheduler(
        store, dispatch, owner="o", clock=clock, lookahead_seconds=1, prepare_seconds=0
    )
    assert await scheduler.run_due() == 3
    await _until(lambda: len(started) == 3)  # none waits for another's write
    gate.set()
    await scheduler.wait_dispatching()
    assert sorted(started) == ["r0", "r1", "r2"]
