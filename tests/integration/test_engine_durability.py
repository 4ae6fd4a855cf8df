"""The engine on the database store: what survives a stop or a crash, misfires, retention.

A crash is simulated by writing the rows a dead process leaves (a RUNNING execution, a
claimed run) with the store itself, then starting a new engine on the same database. The
real ``kill -9`` of a server process is in tests/e2e.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from app.domain import JobDefinition, JobExecutionResult, JobStatus
from app.domain.records import TRIGGER_NOW, ExecutionQuery, ScheduledRun
from app.domain.timeutil import utc_now
from app.engine import NewExecutionEngine
from app.persistence import SqlExecutionStore
from tests.support.steps import Probe, install_probe, uninstall_probe


@pytest.fixture
def probe() -> Iterator[Probe]:
    yield install_probe()
    uninstall_probe()


@pytest.fixture
def db_url(migrated_db_url: str) -> str:
    return migrated_db_url


def job(job_id: str = "d", **kw: object) -> JobDefinition:
    return JobDefinition(
        job_id=job_id, job_name=job_id, steps=[{"step_id": "a", "type": "probe"}], **kw
    )  # type: ignore[arg-type]


def make_engine(url: str, **kw: object) -> NewExecutionEngine:
    return NewExecutionEngine(store=SqlExecutionStore(url), poll_interval_seconds=0.05, **kw)  # type: ignore[arg-type]


async def test_scheduled_run_survives_a_stop_and_runs_once(db_url: str, probe: Probe) -> None:
    first = make_engine(db_url)
    await first.start()
    when = utc_now() + timedelta(milliseconds=600)
    execution_id = await first.schedule_job(job("later"), when)
    await first.stop()
    assert probe.runs["a"] == 0

    await _runs_once_on_a_new_engine(db_url, probe, execution_id, when)


async def _runs_once_on_a_new_engine(
    db_url: str, probe: Probe, execution_id: str, when: datetime
) -> None:
    """A new engine on the database runs ``execution_id`` once, not before ``when``."""
    second = make_engine(db_url)
    await second.start()
    try:
        await probe.started[f"{execution_id}:a"].wait()
        result = await second.wait_for(execution_id)
        assert result is not None and result.status is JobStatus.SUCCESS
        assert result.start_time is not None and result.start_time >= when
        stored = await second.store.get_execution(execution_id)
        assert stored is not None and stored.status is JobStatus.SUCCESS
        assert probe.runs["a"] == 1
        assert await second.store.count_scheduled_runs() == 0
    finally:
        await second.stop()


async def _leave_running(store: SqlExecutionStore, job_def: JobDefinition, **kw: object) -> str:
    """Rows as a process killed in the middle of a job leaves them."""
    execution_id = f"crashed-{job_def.job_id}"
    await store.record_pending(execution_id, job_def, trigger=TRIGGER_NOW)
    await store.record_job(
        JobExecutionResult(
            execution_id=execution_id,
            job_id=job_def.job_id,
            job_name=job_def.job_name,
            status=JobStatus.RUNNING,
            timezone=job_def.timezone,
            start_time=utc_now(),
            **kw,
        )
    )  # type: ignore[arg-type]
    return execution_id


async def test_running_at_crash_ends_failed_interrupted(db_url: str, probe: Probe) -> None:
    async with SqlExecutionStore(db_url) as store:
        crashed = await _leave_running(store, job("c1"))
    engine = make_engine(db_url)
    await engine.start()
    try:
        assert engine.recovery_report["interrupted"] == 1
        stored = await engine.store.get_execution(crashed)
        assert stored is not None and stored.status is JobStatus.FAILED
        assert "interrupted" in (stored.error_message or "")
    finally:
        await engine.stop()


async def test_a_run_handed_to_its_queue_at_crash_is_not_run_again(
    db_url: str, probe: Probe
) -> None:
    due = utc_now() - timedelta(seconds=1)
    async with SqlExecutionStore(db_url) as store:
        for name in ("dispatched", "only-claimed"):
            await store.add_scheduled_run(
                ScheduledRun(execution_id=name, job=job(name), scheduled_for=due)
            )
        claimed = await store.claim_due_runs(utc_now(), 10, owner="dead-process")
        assert {r.execution_id for r in claimed} == {"dispatched", "only-claimed"}
        # The process handed one to its queue, then died before the job wrote anything.
        await store.mark_run_dispatched("dispatched")
    engine = make_engine(db_url)
    await engine.start()
    try:
        await probe.started["only-claimed:a"].wait()  # never handed over: it runs now
        assert (await engine.wait_for("only-claimed")).status is JobStatus.SUCCESS  # type: ignore[union-attr]
        stored = await engine.store.get_execution("dispatched")
        assert stored is not None and stored.status is JobStatus.FAILED
        assert "before it started" in (stored.error_message or "")
        assert probe.runs["a"] == 1  # the dispatched one did not run a second time
    finally:
        await engine.stop()


async def test_running_at_crash_with_retries_left_is_retried(db_url: str, probe: Probe) -> None:
    async with SqlExecutionStore(db_url) as store:
        crashed = await _leave_running(store, job("c2", max_retries=2))
    engine = make_engine(db_url)
    await engine.start()
    try:
        assert engine.recovery_report["retried"] == 1
        stored = await engine.store.get_execution(crashed)
        assert stored is not None and stored.status is JobStatus.FAILED
        retry_id = (stored.error_message or "").rsplit(" ", 1)[-1]
        await probe.started[f"{retry_id}:a"].wait()
        result = await engine.wait_for(retry_id)
        assert result is not None and result.status is JobStatus.SUCCESS
        assert result.job_id == "c2"
    finally:
        await engine.stop()


async def test_misfires_run_within_grace_and_are_recorded_missed_beyond(
    db_url: str, probe: Probe
) -> None:
    now = utc_now()
    async with SqlExecutionStore(db_url) as store:
        await store.add_scheduled_run(
            ScheduledRun("late-ok", job("ok"), now - timedelta(seconds=30))
        )
        await store.add_scheduled_run(
            ScheduledRun("too-late", job("gone"), now - timedelta(hours=2))
        )
    engine = make_engine(db_url, misfire_grace_seconds=300)
    await engine.start()
    try:
        assert engine.recovery_report["missed"] == 1
        missed = await engine.store.get_execution("too-late")
        assert missed is not None and missed.status is JobStatus.FAILED
        assert (missed.error_message or "").startswith("missed: due at")
        await probe.started["late-ok:a"].wait()
        ok = await engine.wait_for("late-ok")
        assert ok is not None and ok.status is JobStatus.SUCCESS
        assert probe.runs["a"] == 1
    finally:
        await engine.stop()


async def test_retention_purges_old_history(db_url: str, probe: Probe) -> None:
    engine = make_engine(
        db_url, history_retention_days=0.0000001, maintenance_interval_seconds=0.05
    )
    await engine.start()
    try:
        result = await engine.execute_job_now(job("old"))
        async with asyncio.timeout(10):
            while (await engine.store.get_execution(result.execution_id)) is not None:
                await asyncio.sleep(0.02)
        page = await engine.store.list_executions(ExecutionQuery(job_id="old"))
        assert page.items == []
    finally:
        await engine.stop()


async def test_history_rows_written_as_the_job_runs(db_url: str, probe: Probe) -> None:
    engine = make_engine(db_url)
    await engine.start()
    try:
        execution = await engine.submit_now(
            JobDefinition(
                job_id="live",
                job_name="live",
                steps=[
                    {"step_id": "hold", "type": "probe", "gate": "go"},
                    {"step_id": "b", "type": "probe"},
                ],
            )
        )
        await probe.started["hold"].wait()
        during = await engine.store.get_execution(execution.execution_id)
        assert during is not None and during.status is JobStatus.RUNNING
        assert [(s.step_id, s.status.value) for s in during.steps] == [("hold", "running")]
        probe.gates["go"].set()
        await asyncio.shield(execution.done)
        after = await engine.store.get_execution(execution.execution_id)
        assert after is not None and after.status is JobStatus.SUCCESS
        assert [s.status.value for s in after.steps] == ["success", "success"]
    finally:
        await engine.stop()


async def test_a_run_claimed_ahead_of_its_time_can_be_cancelled(db_url: str, probe: Probe) -> None:
    engine = make_engine(db_url, scheduler_lookahead_seconds=3600)
    await engine.start()
    try:
        execution_id = await engine.schedule_job(job("ahead"), utc_now() + timedelta(minutes=30))
        await wait_until(lambda: engine._scheduler.held == 1)  # claimed, its timer armed
        assert await engine.cancel_job(execution_id, cancelled_by="ops") is True
        assert engine._scheduler.held == 0
        stored = await engine.store.get_execution(execution_id)
        assert stored is not None and stored.status is JobStatus.CANCELLED
        assert stored.metadata["cancelled_by"] == "ops"
        assert await engine.cancel_job(execution_id) is False
        assert await engine.store.count_scheduled_runs() == 0
    finally:
        await engine.stop()
    assert probe.runs["a"] == 0


async def test_runs_claimed_ahead_go_back_to_pending_on_stop(db_url: str, probe: Probe) -> None:
    first = make_engine(db_url, scheduler_lookahead_seconds=3600)
    await first.start()
    when = utc_now() + timedelta(seconds=1)
    execution_id = await first.schedule_job(job("ahead"), when)
    await wait_until(lambda: first._scheduler.held == 1)
    await first.stop()
    assert probe.runs["a"] == 0
    reader = SqlExecutionStore(db_url)
    await reader.open()
    try:
        assert await reader.count_scheduled_runs() == 1  # pending again, not lost
        stored = await reader.get_execution(execution_id)
        assert stored is not None and stored.status is JobStatus.PENDING
    finally:
        await reader.close()

    await _runs_once_on_a_new_engine(db_url, probe, execution_id, when)


async def wait_until(predicate: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.01)
