"""``ExecutionStore.add_scheduled_runs`` on every store: many one-off runs and their PENDING
history rows in one write, claimable like runs added one by one; all or none when one row
cannot be written; runs keyed by a fire are refused."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from app.domain import JobDefinition, JobStatus
from app.domain.records import ScheduledRun
from app.domain.timeutil import utc_now
from tests.integration.conftest import SQL_BACKENDS, StoreFactory

ALL_BACKENDS = ["memory", *SQL_BACKENDS]


def _job(job_id: str = "bulk", timezone: str = "UTC") -> JobDefinition:
    return JobDefinition(
        job_id=job_id,
        job_name=job_id,
        steps=[{"step_id": "s1", "type": "shell", "script": "echo hi"}],
        timezone=timezone,
    )


@pytest.mark.parametrize("backend", ALL_BACKENDS)
async def test_runs_are_stored_pending_and_claimable(
    make_store: StoreFactory, backend: str
) -> None:
    store = await make_store(backend)
    soon = utc_now() + timedelta(seconds=30)
    runs = [
        ScheduledRun(
            execution_id=f"b{i}",
            job=_job(timezone="Europe/Berlin" if i % 2 else "UTC"),
            scheduled_for=soon + timedelta(seconds=i),
            requested_by="etl",
        )
        for i in range(50)
    ]

    await store.add_scheduled_runs(runs)

    for run in (runs[0], runs[49]):
        stored = await store.get_execution(run.execution_id)
        assert stored is not None
        assert stored.status == JobStatus.PENDING
        assert stored.timezone == run.job.timezone
    due = await store.due_scheduled_runs(soon + timedelta(seconds=100), 100)
    assert [r.execution_id for r in due] == [r.execution_id for r in runs]
    assert due[1].job.timezone == "Europe/Berlin" and due[1].requested_by == "etl"
    claimed = await store.claim_due_runs(soon + timedelta(seconds=100), 100, "node-a")
    assert len(claimed) == 50


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_one_row_that_cannot_be_written_writes_none(
    make_store: StoreFactory, backend: str
) -> None:
    store = await make_store(backend)
    soon = utc_now() + timedelta(minutes=5)
    await store.add_scheduled_run(
        ScheduledRun(execution_id="taken", job=_job(), scheduled_for=soon)
    )
    runs = [
        ScheduledRun(execution_id=eid, job=_job("other"), scheduled_for=soon)
        for eid in ("new-1", "taken", "new-2")
    ]

    with pytest.raises(IntegrityError):
        await store.add_scheduled_runs(runs)

    assert await store.get_execution("new-1") is None
    assert await store.get_execution("new-2") is None
    due = await store.due_scheduled_runs(soon, 10)
    assert [r.execution_id for r in due] == ["taken"]


@pytest.mark.parametrize("backend", ALL_BACKENDS)
async def test_runs_keyed_by_a_fire_are_refused(make_store: StoreFactory, backend: str) -> None:
    store = await make_store(backend)
    soon = utc_now() + timedelta(minutes=5)
    runs = [
        ScheduledRun(execution_id="one-off", job=_job(), scheduled_for=soon),
        ScheduledRun(execution_id="fire", job=_job(), scheduled_for=soon, keyed=True),
    ]

    with pytest.raises(ValueError, match="fire"):
        await store.add_scheduled_runs(runs)

    assert await store.get_execution("one-off") is None
