"""The ExecutionStore contract, run against every backend: the in-memory store, the SQL
store on SQLite (a fresh migrated file per test) and on PostgreSQL (one migrated database
for this module, emptied before each test).

The last section covers what only the SQL store offers (concurrent claims from several
store instances, leases, restart recovery, retention).
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.domain import (
    ConfigurationError,
    JobDefinition,
    JobExecutionResult,
    JobStatus,
    StepExecutionResult,
    StepStatus,
)
from app.domain.records import (
    TRIGGER_NOW,
    TRIGGER_QUEUED,
    TRIGGER_SCHEDULE,
    TRIGGER_SCHEDULED,
    DuplicateScheduledRunError,
    ExecutionQuery,
    ScheduledRun,
)
from app.engine.ports import ExecutionStore
from app.persistence import SqlExecutionStore, upgrade_to_head
from app.persistence.store import SchemaMissingError, StoreNotOpenError
from tests.integration.conftest import BACKENDS, SQL_BACKENDS, StoreFactory

T0 = datetime(2030, 3, 10, 12, 0, 0, 123456, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")


# -- builders ---------------------------------------------------------------------------------
def job_def(job_id: str = "job-1", *, timezone: str = "Europe/Berlin") -> JobDefinition:
    return JobDefinition(
        job_id=job_id,
        job_name=f"Job {job_id}",
        description="nightly load",
        timezone=timezone,
        steps=[
            {"step_id": "extract", "type": "shell", "command": "echo hi"},
            {"step_id": "load", "type": "sql", "query": "select 1", "connection_name": "dw"},
        ],
        max_retries=2,
        timeout_seconds=600,
        schedule_config={"type": "cron", "expression": "0 2 * * *"},
        metadata={"owner": "data-team", "tags": ["a", "b"]},
        created_at=datetime(2030, 1, 1, tzinfo=UTC),
    )


def result_of(
    execution_id: str,
    status: JobStatus,
    *,
    job: JobDefinition | None = None,
    **fields: Any,
) -> JobExecutionResult:
    job = job or job_def()
    return JobExecutionResult(
        execution_id=execution_id,
        job_id=job.job_id,
        job_name=job.job_name,
        status=status,
        timezone=job.timezone,
        **fields,
    )


def step_of(step_id: str, status: StepStatus, **fields: Any) -> StepExecutionResult:
    return StepExecutionResult(
        step_id=step_id, step_name=f"Step {step_id}", step_type="shell", status=status, **fields
    )


def assert_utc(value: datetime | None) -> None:
    assert value is not None
    assert value.utcoffset() == timedelta(0)


# -- the port is implemented ------------------------------------------------------------------
async def test_store_implements_the_port(store: Any) -> None:
    assert isinstance(store, ExecutionStore)


# -- execution history ------------------------------------------------------------------------
async def test_pending_running_steps_finished_round_trip(store: Any) -> None:
    job = job_def()
    await store.record_pending("exec-1", job, trigger=TRIGGER_NOW, requested_by="alice@example.com")

    pending = await store.get_execution("exec-1")
    assert pending == JobExecutionResult(
        execution_id="exec-1",
        job_id="job-1",
        job_name="Job job-1",
        status=JobStatus.PENDING,
        timezone="Europe/Berlin",
        metadata={"trigger": "now", "requested_by": "alice@example.com"},
    )

    # Start time given in Berlin time: it is the same instant, returned in UTC.
    started = T0.astimezone(BERLIN)
    await store.record_job(
        result_of("exec-1", JobStatus.RUNNING, start_time=started, metadata={"trigger": "now"})
    )
    running = await store.get_execution("exec-1")
    assert running.status is JobStatus.RUNNING
    assert running.start_time == T0
    assert_utc(running.start_time)

    s1_start, s1_end = T0 + timedelta(seconds=1), T0 + timedelta(seconds=3, microseconds=7)
    await store.record_step(
        "exec-1", step_of("extract", StepStatus.RUNNING, start_time=s1_start), 0
    )
    mid = await store.get_execution("exec-1")
    assert [(s.step_id, s.status) for s in mid.steps] == [("extract", StepStatus.RUNNING)]

    extract = step_of(
        "extract",
        StepStatus.SUCCESS,
        start_time=s1_start,
        end_time=s1_end,
        duration_seconds=2.000007,
        output="hello\nworld\n",
        metadata={"exit_code": 0, "bytes": 12},
    )
    load = step_of(
        "load",
        StepStatus.FAILED,
        start_time=s1_end,
        end_time=s1_end + timedelta(seconds=1),
        duration_seconds=1.0,
        error_message="relation does not exist",
        metadata={"rows": None},
    )
    await store.record_step("exec-1", extract, 0)
    await store.record_step("exec-1", step_of("load", StepStatus.RUNNING, start_time=s1_end), 0)
    await store.record_step("exec-1", load, 0)
    final = result_of(
        "exec-1",
        JobStatus.FAILED,
        start_time=started,
        end_time=T0 + timedelta(seconds=5),
        duration_seconds=5.0,
        error_message="step load failed",
        retry_count=0,
        metadata={"trigger": "now", "attempts": 1},
    )
    await store.record_job(final)

    got = await store.get_execution("exec-1")
    expected = result_of(
        "exec-1",
        JobStatus.FAILED,
        start_time=T0,
        end_time=T0 + timedelta(seconds=5),
        duration_seconds=5.0,
        error_message="step load failed",
        retry_count=0,
        metadata={"trigger": "now", "attempts": 1},
        steps=[extract, load],
    )
    # Written without attempt summaries (as before attempts were recorded): the attempt is
    # rebuilt from the step rows.
    assert got is not None and [(a.attempt, a.status, a.path) for a in got.attempts] == [
        (0, JobStatus.FAILED, ["extract", "load"])
    ]
    assert got.attempts[0].steps == [extract, load]
    assert dataclasses.replace(got, attempts=[]) == expected
    for value in (
        got.start_time,
        got.end_time,
        *(t for s in got.steps for t in (s.start_time, s.end_time)),
    ):
        assert_utc(value)


async def test_record_job_creates_the_row_without_record_pending(store: Any) -> None:
    await store.record_job(
        result_of("exec-2", JobStatus.SUCCESS, start_time=T0, end_time=T0, retry_count=3)
    )
    got = await store.get_execution("exec-2")
    assert got is not None
    assert (got.status, got.retry_count, got.steps) == (JobStatus.SUCCESS, 3, [])


async def test_record_pending_does_not_overwrite_an_existing_execution(store: Any) -> None:
    await store.record_job(result_of("exec-3", JobStatus.RUNNING, start_time=T0))
    await store.record_pending("exec-3", job_def(), trigger=TRIGGER_QUEUED)
    got = await store.get_execution("exec-3")
    assert got.status is JobStatus.RUNNING


async def test_unknown_execution_is_none(store: Any) -> None:
    assert await store.get_execution("nope") is None


async def test_retries_show_the_latest_attempt_steps(store: Any) -> None:
    await store.record_pending("exec-r", job_def(), trigger=TRIGGER_NOW)
    await store.record_step("exec-r", step_of("extract", StepStatus.SUCCESS, output="a0"), 0)
    await store.record_step("exec-r", step_of("load", StepStatus.FAILED, error_message="x"), 0)
    await store.record_job(result_of("exec-r", JobStatus.RETRYING, retry_count=1))
    before = await store.get_execution("exec-r")
    assert [(s.step_id, s.status) for s in before.steps] == [
        ("extract", StepStatus.SUCCESS),
        ("load", StepStatus.FAILED),
    ]

    await store.record_step("exec-r", step_of("extract", StepStatus.RUNNING), 1)
    during = await store.get_execution("exec-r")
    assert [(s.step_id, s.status) for s in during.steps] == [("extract", StepStatus.RUNNING)]

    await store.record_step("exec-r", step_of("extract", StepStatus.SUCCESS, output="a1"), 1)
    await store.record_step("exec-r", step_of("load", StepStatus.SUCCESS), 1)
    await store.record_job(result_of("exec-r", JobStatus.SUCCESS, retry_count=1))
    after = await store.get_execution("exec-r")
    assert after.retry_count == 1
    assert [(s.step_id, s.status, s.output) for s in after.steps] == [
        ("extract", StepStatus.SUCCESS, "a1"),
        ("load", StepStatus.SUCCESS, None),
    ]


async def test_steps_come_back_in_the_order_they_started(store: Any) -> None:
    await store.record_pending("exec-o", job_def(), trigger=TRIGGER_NOW)
    for step_id in ("zeta", "alpha", "mid"):
        await store.record_step("exec-o", step_of(step_id, StepStatus.RUNNING), 0)
    await store.record_step("exec-o", step_of("zeta", StepStatus.SUCCESS), 0)  # update
    got = await store.get_execution("exec-o")
    assert [s.step_id for s in got.steps] == ["zeta", "alpha", "mid"]


async def test_naive_datetimes_are_refused(store: Any) -> None:
    with pytest.raises(ValueError, match="naive"):
        await store.record_job(
            result_of("exec-n", JobStatus.RUNNING, start_time=datetime(2030, 1, 1, 12))
        )


# -- listing ----------------------------------------------------------------------------------
async def test_cursor_pagination_visits_every_execution_once_newest_first(store: Any) -> None:
    ids = [f"exec-{i:03d}" for i in range(25)]
    for execution_id in ids:
        await store.record_pending(execution_id, job_def(), trigger=TRIGGER_NOW)

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await store.list_executions(ExecutionQuery(limit=7, cursor=cursor))
        seen.extend(item.execution_id for item in page.items)
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 4
    assert seen == list(reversed(ids))


async def test_list_filters(store: Any) -> None:
    berlin, tokyo = job_def("berlin-job"), job_def("tokyo-job", timezone="Asia/Tokyo")
    rows = [
        ("b-ok", berlin, JobStatus.SUCCESS, T0),
        ("b-fail", berlin, JobStatus.FAILED, T0 + timedelta(hours=1)),
        ("t-ok", tokyo, JobStatus.SUCCESS, T0 + timedelta(hours=2)),
        ("t-pending", tokyo, JobStatus.PENDING, None),
    ]
    for execution_id, job, status, start in rows:
        await store.record_pending(execution_id, job, trigger=TRIGGER_NOW)
        if status is not JobStatus.PENDING:
            await store.record_step(execution_id, step_of("extract", StepStatus.SUCCESS), 0)
            await store.record_job(result_of(execution_id, status, job=job, start_time=start))

    async def ids(**filters: Any) -> list[str]:
        page = await store.list_executions(ExecutionQuery(**filters))
        return [item.execution_id for item in page.items]

    assert await ids() == ["t-pending", "t-ok", "b-fail", "b-ok"]
    assert await ids(job_id="berlin-job") == ["b-fail", "b-ok"]
    assert await ids(status=JobStatus.SUCCESS) == ["t-ok", "b-ok"]
    assert await ids(timezone="Asia/Tokyo") == ["t-pending", "t-ok"]
    # started_after is inclusive, started_before exclusive; not started never matches.
    assert await ids(started_after=T0 + timedelta(hours=1)) == ["t-ok", "b-fail"]
    assert await ids(started_before=T0 + timedelta(hours=1)) == ["b-ok"]
    assert await ids(
        started_after=T0.astimezone(BERLIN), started_before=T0 + timedelta(hours=2)
    ) == ["b-fail", "b-ok"]
    assert await ids(job_id="tokyo-job", status=JobStatus.FAILED) == []

    page = await store.list_executions(ExecutionQuery(job_id="berlin-job", limit=1))
    assert [i.execution_id for i in page.items] == ["b-fail"]
    assert [s.step_id for s in page.items[0].steps] == ["extract"]
    rest = await store.list_executions(
        ExecutionQuery(job_id="berlin-job", limit=1, cursor=page.next_cursor)
    )
    assert [i.execution_id for i in rest.items] == ["b-ok"]
    assert rest.next_cursor is None


@pytest.mark.parametrize(
    "query",
    [
        ExecutionQuery(cursor="not a cursor"),
        ExecutionQuery(cursor="WyJ4Il0"),  # base64 JSON, wrong shape
        ExecutionQuery(limit=0),
    ],
)
async def test_bad_cursor_or_limit_is_a_field_error(store: Any, query: ExecutionQuery) -> None:
    with pytest.raises(ConfigurationError) as info:
        await store.list_executions(query)
    assert info.value.errors[0].field in ("cursor", "limit")


# -- scheduled work ---------------------------------------------------------------------------
async def test_scheduled_runs_add_due_claim_cancel_count_next(store: Any) -> None:
    job = job_def()
    runs = {
        name: ScheduledRun(
            execution_id=name,
            job=job,
            scheduled_for=T0 + timedelta(minutes=minutes),
            requested_by="bob",
        )
        for name, minutes in (("r10", 10), ("r5", 5), ("r20", 20))
    }
    assert await store.count_scheduled_runs() == 0
    assert await store.next_scheduled_time() is None
    for run in runs.values():
        await store.add_scheduled_run(run)

    assert await store.count_scheduled_runs() == 3
    assert await store.count_scheduled_runs(limit=2) == 2  # counting stops at the limit
    assert await store.count_scheduled_runs(limit=5) == 3
    next_time = await store.next_scheduled_time()
    assert next_time == T0 + timedelta(minutes=5)
    assert_utc(next_time)

    history = await store.get_execution("r5")
    assert history.status is JobStatus.PENDING
    assert history.metadata == {
        "trigger": TRIGGER_SCHEDULED,
        "scheduled_for": runs["r5"].scheduled_for.isoformat(),
        "requested_by": "bob",
    }

    due = await store.due_scheduled_runs(T0 + timedelta(minutes=10), 10)
    assert [r.execution_id for r in due] == ["r5", "r10"]
    assert due[0] == runs["r5"]  # the job definition round-trips exactly
    assert due[0].timezone == "Europe/Berlin"
    assert_utc(due[0].scheduled_for)
    assert [r.execution_id for r in await store.due_scheduled_runs(T0 + timedelta(hours=1), 1)] == [
        "r5"
    ]
    assert await store.due_scheduled_runs(T0, 10) == []

    assert await store.claim_scheduled_run("r5", "owner-a") is True
    assert await store.claim_scheduled_run("r5", "owner-b") is False
    assert await store.cancel_scheduled_run("r5") is False  # claimed: not cancellable here
    assert await store.count_scheduled_runs() == 2
    assert await store.next_scheduled_time() == T0 + timedelta(minutes=10)
    assert [
        r.execution_id for r in await store.due_scheduled_runs(T0 + timedelta(hours=1), 10)
    ] == ["r10", "r20"]

    assert await store.cancel_scheduled_run("r10") is True
    assert await store.cancel_scheduled_run("r10") is False
    assert await store.claim_scheduled_run("r10", "owner-a") is False
    cancelled = await store.get_execution("r10")
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.error_message == "cancelled before it started"
    assert_utc(cancelled.end_time)

    assert await store.cancel_scheduled_run("unknown") is False
    assert await store.claim_scheduled_run("unknown", "owner-a") is False
    assert await store.count_scheduled_runs() == 1
    assert await store.next_scheduled_time() == T0 + timedelta(minutes=20)


async def test_a_run_that_started_is_never_due_again(store: Any) -> None:
    await store.add_scheduled_run(ScheduledRun("r1", job_def(), T0))
    assert await store.claim_scheduled_run("r1", "owner-a") is True
    await store.record_job(result_of("r1", JobStatus.RUNNING, start_time=T0))
    assert await store.requeue_claimed_runs(expired_only=False) == 0  # it started
    assert await store.due_scheduled_runs(T0, 10) == []
    assert await store.count_scheduled_runs() == 0
    assert await store.claim_scheduled_run("r1", "owner-b") is False


async def test_a_recurring_fire_is_stored_once(store: Any) -> None:
    """Decision: a second run fired by a schedule for the same (job_id, scheduled_for)
    raises DuplicateScheduledRunError and writes nothing (not even its history row)."""
    job = job_def()
    await store.add_scheduled_run(ScheduledRun("fire-1", job, T0, trigger=TRIGGER_SCHEDULE))
    with pytest.raises(DuplicateScheduledRunError) as info:
        # The same instant written in another zone is the same fire.
        await store.add_scheduled_run(
            ScheduledRun("fire-2", job, T0.astimezone(BERLIN), trigger=TRIGGER_SCHEDULE)
        )
    assert (info.value.job_id, info.value.scheduled_for) == ("job-1", T0)
    assert await store.get_execution("fire-2") is None
    assert await store.count_scheduled_runs() == 1

    # Still refused once the first fire was claimed; other jobs and one-off runs are free.
    assert await store.claim_scheduled_run("fire-1", "owner-a")
    with pytest.raises(DuplicateScheduledRunError):
        await store.add_scheduled_run(ScheduledRun("fire-3", job, T0, trigger=TRIGGER_SCHEDULE))
    await store.add_scheduled_run(
        ScheduledRun("other-job", job_def("job-2"), T0, trigger=TRIGGER_SCHEDULE)
    )
    await store.add_scheduled_run(ScheduledRun("one-off-1", job, T0))
    await store.add_scheduled_run(ScheduledRun("one-off-2", job, T0))
    await store.add_scheduled_run(
        ScheduledRun("next-fire", job, T0 + timedelta(days=1), trigger=TRIGGER_SCHEDULE)
    )
    assert await store.count_scheduled_runs() == 4


# -- hostile data -----------------------------------------------------------------------------
async def test_hostile_text_is_stored_and_read_back(store: Any) -> None:
    nasty = "nul\x00byte emoji \U0001f680\U0001f4a9 undecodable \udcff end"
    cleaned = "nul\ufffdbyte emoji \U0001f680\U0001f4a9 undecodable \ufffd end"
    await store.record_pending("exec-h", job_def(), trigger=TRIGGER_NOW)
    await store.record_step(
        "exec-h",
        step_of(
            "extract",
            StepStatus.FAILED,
            output=nasty,
            error_message="boom\x00",
            metadata={"note": "json keeps \x00 and \U0001f680 exactly", "k\x00": [1, "\x00"]},
        ),
        0,
    )
    await store.record_job(
        result_of("exec-h", JobStatus.FAILED, error_message=nasty, metadata={"e": "\U0001f680"})
    )
    got = await store.get_execution("exec-h")
    assert got.error_message == cleaned
    assert got.metadata == {"e": "\U0001f680", "sanitized_fields": ["error_message"]}
    (step,) = got.steps
    assert step.output == cleaned
    assert step.error_message == "boom\ufffd"
    assert step.metadata == {
        "note": "json keeps \x00 and \U0001f680 exactly",
        "k\x00": [1, "\x00"],
        "sanitized_fields": ["output", "error_message"],
    }
    listed = await store.list_executions(ExecutionQuery())
    assert listed.items[0].steps[0].output == cleaned


async def test_huge_output_is_capped_and_flagged(store: Any) -> None:
    big = "\U0001f680" + "x" * 1_499_998 + "\U0001f4a9"  # 1.5 million characters
    await store.record_pending("exec-big", job_def(), trigger=TRIGGER_NOW)
    await store.record_step(
        "exec-big", step_of("extract", StepStatus.SUCCESS, output=big, metadata={"a": 1}), 0
    )
    await store.record_step("exec-big", step_of("load", StepStatus.SUCCESS, output="small"), 0)
    got = await store.get_execution("exec-big")
    capped, small = got.steps
    assert capped.output == big[:1_000_000]
    assert capped.metadata == {
        "a": 1,
        "output_truncated": True,
        "output_original_chars": 1_500_000,
    }
    assert (small.output, small.metadata) == ("small", {})


@pytest.mark.parametrize("backend", BACKENDS)
async def test_output_cap_is_configurable(make_store: StoreFactory, backend: str) -> None:
    store = await make_store(backend, max_output_chars=5)
    await store.record_pending("exec-c", job_def(), trigger=TRIGGER_NOW)
    await store.record_step("exec-c", step_of("s", StepStatus.SUCCESS, output="123456"), 0)
    (step,) = (await store.get_execution("exec-c")).steps
    assert (step.output, step.metadata["output_truncated"]) == ("12345", True)


# -- SQL store only: several instances, leases, recovery, retention ---------------------------
@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_concurrent_claims_of_one_run_have_one_winner(
    make_store: StoreFactory, backend: str
) -> None:
    one, two = await make_store(backend), await make_store(backend)
    for i in range(20):
        await one.add_scheduled_run(ScheduledRun(f"race-{i}", job_def(), T0))
    for i in range(20):
        wins = await asyncio.gather(
            one.claim_scheduled_run(f"race-{i}", "replica-1"),
            two.claim_scheduled_run(f"race-{i}", "replica-2"),
        )
        assert sorted(wins) == [False, True]
    assert await one.count_scheduled_runs() == 0


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_concurrent_batch_claims_split_the_due_runs(
    make_store: StoreFactory, backend: str
) -> None:
    stores = [await make_store(backend) for _ in range(3)]
    for i in range(60):
        await stores[0].add_scheduled_run(
            ScheduledRun(f"due-{i:02d}", job_def(), T0 + timedelta(seconds=i))
        )
    await stores[0].add_scheduled_run(ScheduledRun("later", job_def(), T0 + timedelta(days=1)))

    async def drain(store: SqlExecutionStore, owner: str) -> list[str]:
        got: list[str] = []
        while batch := await store.claim_due_runs(T0 + timedelta(hours=1), 7, owner):
            assert [r.scheduled_for for r in batch] == sorted(r.scheduled_for for r in batch)
            assert {r.attempt for r in batch} == {1}
            got.extend(r.execution_id for r in batch)
        return got

    claimed = await asyncio.gather(*(drain(s, f"replica-{n}") for n, s in enumerate(stores)))
    everything = [eid for part in claimed for eid in part]
    assert sorted(everything) == [f"due-{i:02d}" for i in range(60)]  # each exactly once
    assert await stores[0].count_scheduled_runs() == 1


async def test_claim_fencing_lease_and_requeue(sql_store: SqlExecutionStore) -> None:
    store = sql_store
    await store.add_scheduled_run(ScheduledRun("run-1", job_def(), T0))
    (claimed,) = await store.claim_due_runs(T0, 10, "replica-1")
    assert (claimed.execution_id, claimed.attempt) == ("run-1", 1)

    # The claimer died before starting it: its run goes back to pending, attempt 2 next.
    assert await store.requeue_claimed_runs(expired_only=True) == 0  # lease still valid
    assert await store.requeue_claimed_runs(owner="replica-1", expired_only=False) == 1
    (again,) = await store.claim_due_runs(T0, 10, "replica-2")
    assert again.attempt == 2


async def test_history_writes_of_a_lost_claim_are_discarded(sql_store: SqlExecutionStore) -> None:
    """A node that lost its claim (paused past its lease, then resumed) cannot overwrite the
    record of the node that took the run over: its job and step writes are fenced off."""
    url = sql_store.url
    stale = SqlExecutionStore(url, owner="stale-node")
    fresh = SqlExecutionStore(url, owner="fresh-node")
    async with stale, fresh:
        await stale.add_scheduled_run(ScheduledRun("run-f", job_def(), T0))
        assert [r.attempt for r in await stale.claim_due_runs(T0, 10)] == [1]
        await stale.record_job(result_of("run-f", JobStatus.RUNNING, start_time=T0))
        await stale.record_step("run-f", step_of("extract", StepStatus.RUNNING), 0)
        # The stale node's lease ran out: the run is taken over and settled by another node.
        (orphan,) = await fresh.find_orphaned(30)
        assert (orphan.owner, orphan.attempt) == ("stale-node", 1)
        assert await fresh.take_over(orphan, "interrupted on node stale-node") is True
        assert await fresh.take_over(orphan, "a second settlement") is False  # one wins
        # The stale node wakes up and goes on writing: nothing of it lands.
        await stale.record_step("run-f", step_of("extract", StepStatus.SUCCESS), 0)
        await stale.record_step("run-f", step_of("load", StepStatus.SUCCESS), 0)
        await stale.record_job(result_of("run-f", JobStatus.SUCCESS, end_time=T0))
        stored = await fresh.get_execution("run-f")
        assert stored is not None and stored.status is JobStatus.FAILED
        assert stored.error_message == "interrupted on node stale-node"
        assert [(s.step_id, s.status) for s in stored.steps] == [("extract", StepStatus.FAILED)]


@pytest.mark.parametrize("backend", ["postgresql"])  # leases on the database clock
async def test_expired_leases_are_requeued(make_store: StoreFactory, backend: str) -> None:
    store = await make_store(backend, lease_seconds=0.05)
    await store.add_scheduled_run(ScheduledRun("run-e", job_def(), T0))
    await store.add_scheduled_run(ScheduledRun("run-s", job_def(), T0))
    assert await store.claim_scheduled_run("run-e", "replica-1")
    assert await store.claim_scheduled_run("run-s", "replica-1")
    await store.record_job(result_of("run-s", JobStatus.RUNNING, start_time=T0))  # started
    deadline = asyncio.get_running_loop().time() + 10
    requeued = 0
    while requeued == 0 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)  # poll until the database clock passes the lease
        requeued = await store.requeue_claimed_runs(expired_only=True)
    assert requeued == 1
    assert [r.execution_id for r in await store.due_scheduled_runs(T0, 10)] == ["run-e"]


async def test_restart_recovery_finds_and_ends_interrupted_runs(make_store: StoreFactory) -> None:
    dead = await make_store("sqlite", owner="dead-process")
    started = datetime.now(UTC) - timedelta(seconds=5)
    await dead.record_pending("queued-1", job_def(), trigger=TRIGGER_QUEUED)
    await dead.add_scheduled_run(ScheduledRun("sched-1", job_def(), T0))
    await dead.record_job(result_of("run-1", JobStatus.RUNNING, start_time=started))
    await dead.record_step("run-1", step_of("extract", StepStatus.SUCCESS), 0)
    await dead.record_step("run-1", step_of("load", StepStatus.RUNNING, start_time=started), 0)
    await dead.record_job(result_of("done-1", JobStatus.SUCCESS, start_time=T0, end_time=T0))

    fresh = await make_store("sqlite", owner="new-process")
    running = await fresh.find_running()
    assert [r.execution_id for r in running] == ["run-1"]
    assert [s.step_id for s in running[0].steps] == ["extract", "load"]
    assert await fresh.find_running(owner="new-process") == []
    in_flight = await fresh.find_running(include_queued=True)
    assert [r.execution_id for r in in_flight] == ["queued-1", "run-1"]

    assert await fresh.mark_interrupted("run-1", owner="someone-else") is False
    assert await fresh.mark_interrupted("run-1") is True
    assert await fresh.mark_interrupted("run-1") is False
    assert await fresh.mark_interrupted("done-1") is False
    got = await fresh.get_execution("run-1")
    assert (got.status, got.error_message) == (JobStatus.FAILED, "interrupted")
    assert got.duration_seconds >= 5
    assert [(s.step_id, s.status) for s in got.steps] == [
        ("extract", StepStatus.SUCCESS),
        ("load", StepStatus.FAILED),
    ]
    assert await fresh.find_running() == []

    definition = await fresh.get_job_definition("sched-1")
    assert definition == job_def()
    assert await fresh.get_job_definition("run-1") is None  # recorded without a definition
    assert await fresh.mark_missed("sched-1", "missed: due while the service was down")
    missed = await fresh.get_execution("sched-1")
    assert (missed.status, missed.error_message) == (
        JobStatus.FAILED,
        "missed: due while the service was down",
    )
    assert await fresh.count_scheduled_runs() == 0


async def test_purge_history_deletes_only_old_finished_executions(
    sql_store: SqlExecutionStore,
) -> None:
    store = sql_store
    for i in range(7):
        await store.record_job(result_of(f"old-{i}", JobStatus.SUCCESS, start_time=T0, end_time=T0))
        await store.record_step(f"old-{i}", step_of("extract", StepStatus.SUCCESS), 0)
    await store.record_job(
        result_of("new", JobStatus.FAILED, start_time=T0, end_time=T0 + timedelta(days=40))
    )
    await store.record_job(result_of("old-running", JobStatus.RUNNING, start_time=T0))
    await store.add_scheduled_run(ScheduledRun("waiting", job_def(), T0))

    assert await store.purge_history(T0 + timedelta(days=30), batch_size=3) == 7
    left = await store.list_executions(ExecutionQuery())
    assert sorted(i.execution_id for i in left.items) == ["new", "old-running", "waiting"]
    assert await store.get_execution("old-0") is None
    assert await store.count_scheduled_runs() == 1


async def test_an_unmigrated_database_is_refused_with_a_clear_error(sqlite_url: str) -> None:
    store = SqlExecutionStore(sqlite_url)
    with pytest.raises(SchemaMissingError, match="make migrate"):
        await store.open()
    await upgrade_to_head(sqlite_url)
    async with SqlExecutionStore(sqlite_url) as opened:
        assert await opened.count_scheduled_runs() == 0
    with pytest.raises(StoreNotOpenError):
        await opened.count_scheduled_runs()


async def test_unsupported_database_is_refused() -> None:
    store = SqlExecutionStore("mysql+aiomysql://root@127.0.0.1/x")
    with pytest.raises(ValueError, match="unsupported database"):
        await store.open()
