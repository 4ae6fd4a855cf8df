"""The SQL store's group commit on SQLite and PostgreSQL: progress writes of many executions
share one transaction, a newer state replaces a queued one, every later call of the store
sees what was queued before it, a bad row fails alone, and nothing queued is lost on close.
A second store instance on the same database shows what is really in it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from app.domain import JobDefinition, JobExecutionResult, JobStatus, StepExecutionResult
from app.domain.enums import StepStatus
from app.domain.records import ScheduledRun
from app.domain.timeutil import utc_now
from app.engine import InMemoryExecutionStore, NewExecutionEngine
from app.persistence.models import JobExecutionV2, StepExecutionV2
from tests.integration.conftest import SQL_BACKENDS, StoreFactory
from tests.support.steps import Probe, install_probe, uninstall_probe

on_sql = pytest.mark.parametrize("backend", SQL_BACKENDS)


def _job(job_id: str = "gc") -> JobDefinition:
    return JobDefinition(
        job_id=job_id,
        job_name=job_id,
        steps=[{"step_id": "s1", "type": "probe"}],
        timezone="UTC",
    )


def _result(execution_id: str, status: JobStatus = JobStatus.RUNNING) -> JobExecutionResult:
    return JobExecutionResult(
        execution_id=execution_id,
        job_id="gc",
        job_name="gc",
        status=status,
        timezone="UTC",
        start_time=utc_now(),
        metadata={"trigger": "now"},
    )


def _step(step_id: str, status: StepStatus) -> StepExecutionResult:
    return StepExecutionResult(
        step_id=step_id, step_name=step_id, step_type="probe", status=status, start_time=utc_now()
    )


async def _count(store: Any, entity: Any) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(entity))).scalar_one())


@on_sql
async def test_progress_of_many_executions_is_one_transaction(
    backend: str, make_store: StoreFactory
) -> None:
    store = await make_store(backend)
    ids = [f"e{i:02d}" for i in range(40)]
    for eid in ids:  # one event-loop turn: nothing is written until the writer runs
        await store.record_pending(eid, _job(), trigger="now", durable=False)
        await store.record_job(_result(eid), durable=False)
        await store.record_step(eid, _step("s1", StepStatus.RUNNING), 0, durable=False)
    await store.flush()
    assert store._history.batches == 1
    assert store._history.rows_written == 3 * len(ids)
    other = await make_store(backend)  # a second connection pool: what is committed
    assert await _count(other, JobExecutionV2) == len(ids)
    assert await _count(other, StepExecutionV2) == len(ids)
    got = await other.get_execution("e07")
    assert got.status is JobStatus.RUNNING and [s.status for s in got.steps] == [StepStatus.RUNNING]


@on_sql
async def test_a_newer_queued_state_replaces_the_older_one(
    backend: str, make_store: StoreFactory
) -> None:
    store = await make_store(backend)
    await store.record_job(_result("e1"), durable=False)
    running = _step("s1", StepStatus.RUNNING)
    await store.record_step("e1", running, 0, durable=False)
    done = _step("s1", StepStatus.SUCCESS)
    done.finish(StepStatus.SUCCESS, running.start_time + timedelta(seconds=1))
    await store.record_step("e1", done, 0, durable=False)
    final = _result("e1", JobStatus.SUCCESS)
    await store.record_job(final)  # durable: returns once committed
    assert store._history.rows_written == 2  # one job row, one step row
    other = await make_store(backend)
    got = await other.get_execution("e1")
    assert got.status is JobStatus.SUCCESS
    assert [s.status for s in got.steps] == [StepStatus.SUCCESS]


@on_sql
async def test_every_later_call_sees_what_was_queued_before_it(
    backend: str, make_store: StoreFactory
) -> None:
    store = await make_store(backend)
    await store.record_job(_result("e1"), durable=False)
    for i in range(5):
        await store.record_step("e1", _step(f"s{i}", StepStatus.SUCCESS), 0, durable=False)
    got = await store.get_execution("e1")  # no flush: the read waits for the writer
    assert got is not None and got.status is JobStatus.RUNNING
    # Steps new in one batch keep the order they were recorded in.
    assert [s.step_id for s in got.steps] == [f"s{i}" for i in range(5)]
    assert [r.execution_id for r in await store.find_running()] == ["e1"]


@on_sql
async def test_a_bad_row_fails_alone(backend: str, make_store: StoreFactory) -> None:
    store = await make_store(backend)
    await store.record_job(_result("good"), durable=False)
    # An attempt number no INTEGER column holds: the database (or its driver) refuses it.
    with pytest.raises((OverflowError, DBAPIError)):
        await store.record_step("good", _step("s1", StepStatus.RUNNING), 2**70)
    other = await make_store(backend)
    got = await other.get_execution("good")
    assert got is not None and got.status is JobStatus.RUNNING
    assert got.steps == []


@on_sql
async def test_close_writes_what_is_queued(backend: str, make_store: StoreFactory) -> None:
    store = await make_store(backend)
    await store.record_job(_result("e1", JobStatus.SUCCESS), durable=False)
    await store.close()
    other = await make_store(backend)
    got = await other.get_execution("e1")
    assert got is not None and got.status is JobStatus.SUCCESS


@pytest.fixture
def probe() -> Any:
    yield install_probe()
    uninstall_probe()


@on_sql
async def test_execute_now_returns_only_once_its_result_is_committed(
    backend: str, make_store: StoreFactory, probe: Probe
) -> None:
    store = await make_store(backend)
    reader = await make_store(backend)
    engine = NewExecutionEngine(max_workers=4, store=store)
    await engine.start()
    try:
        job = JobDefinition(
            job_id="gc",
            job_name="gc",
            steps=[
                {"step_id": "a", "type": "probe"},
                {"step_id": "b", "type": "probe"},
            ],
            timezone="UTC",
        )
        result = await engine.execute_job_now(job)
        assert result.status is JobStatus.SUCCESS
        stored = await reader.get_execution(result.execution_id)  # the other pool
        assert stored is not None and stored.status is JobStatus.SUCCESS
        assert [(s.step_id, s.status) for s in stored.steps] == [
            ("a", StepStatus.SUCCESS),
            ("b", StepStatus.SUCCESS),
        ]
    finally:
        await engine.stop()


class BrokenStore(InMemoryExecutionStore):
    """Its progress writes fail, as a database that went away would."""

    async def record_step(self, *args: Any, **kwargs: Any) -> None:
        raise ConnectionError("the database went away")


async def test_an_execution_whose_recording_fails_ends_failed(probe: Probe) -> None:
    engine = NewExecutionEngine(max_workers=2, store=BrokenStore())
    await engine.start()
    try:
        result = await engine.execute_job_now(_job())
        assert result.status is JobStatus.FAILED
        assert result.error_message == "internal error: ConnectionError: the database went away"
        assert result.end_time is not None
    finally:
        await engine.stop()


@on_sql
async def test_scheduled_runs_started_in_one_batch_are_marked_started_together(
    backend: str, make_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    store = await make_store(backend)
    soon = utc_now() + timedelta(hours=1)
    ids = [f"r{i}" for i in range(10)]
    for eid in ids:
        await store.add_scheduled_run(
            ScheduledRun(execution_id=eid, job=_job(), scheduled_for=soon)
        )
    assert len(await store.claim_due_runs(soon, 10)) == 10  # runs start only once claimed
    for eid in ids:
        started = _result(eid)
        started.metadata["trigger"] = "scheduled"
        await store.record_job(started, durable=False)
    await store.flush()
    assert store._history.batches == 1  # not retried row by row
    assert "retrying" not in caplog.text
    assert await store.count_scheduled_runs() == 0  # none of them can fire any more
    assert await store.due_scheduled_runs(soon, 100) == []
