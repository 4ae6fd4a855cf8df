"""What a recovery retry flags: progress rows are written in batches, so the record of a
dead node's execution can trail what it did by several steps; every step not on record as
finished may run a second time, and the retry says so."""

from __future__ import annotations

from datetime import timedelta

from app.domain import JobDefinition, JobExecutionResult, JobStatus, StepExecutionResult
from app.domain.enums import StepStatus
from app.domain.timeutil import utc_now
from app.engine.memory_store import InMemoryExecutionStore
from app.engine.recovery import Recovery


def four_steps() -> JobDefinition:
    return JobDefinition(
        job_id="etl",
        job_name="ETL",
        max_retries=1,
        steps=[
            {"step_id": s, "type": "shell", "script": f"echo {s}"}
            for s in ("extract", "load", "index", "report")
        ],
    )


async def recovered(*on_record: tuple[str, StepStatus]) -> dict[str, object]:
    store = InMemoryExecutionStore()
    await store.open()
    job = four_steps()
    await store.record_pending("left", job, trigger="now")
    left = JobExecutionResult(
        execution_id="left",
        job_id=job.job_id,
        job_name=job.job_name,
        status=JobStatus.RUNNING,
        timezone=job.timezone,
        start_time=utc_now(),
    )
    await store.record_job(left)
    for step_id, status in on_record:
        step = StepExecutionResult(step_id, step_id, "shell", status, start_time=utc_now())
        await store.record_step("left", step, 0)
    recovery = Recovery(
        store,
        node_id="me",
        node_timeout_seconds=5,
        misfire_grace=timedelta(minutes=5),
        clock=utc_now,
    )
    report = await recovery.run_once(starting=True)
    assert report["retried"] == 1
    [retry] = await store.due_scheduled_runs(utc_now() + timedelta(seconds=1), 10)
    return retry.metadata


async def test_every_step_not_on_record_as_finished_is_flagged() -> None:
    # extract finished and load was running on record; index and report may have run too.
    metadata = await recovered(("extract", StepStatus.SUCCESS), ("load", StepStatus.RUNNING))
    assert metadata["retry_of"] == "left"
    assert metadata["possible_duplicate_of"] == "left"
    assert metadata["possible_duplicate_steps"] == ["load", "index", "report"]


async def test_with_nothing_on_record_every_step_is_flagged() -> None:
    metadata = await recovered()
    assert metadata["possible_duplicate_steps"] == ["extract", "load", "index", "report"]


async def test_a_failed_step_on_record_is_flagged_too() -> None:
    metadata = await recovered(("extract", StepStatus.SUCCESS), ("load", StepStatus.FAILED))
    assert metadata["possible_duplicate_steps"] == ["load", "index", "report"]
