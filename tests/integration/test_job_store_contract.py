"""The JobStore contract (stored job definitions), run against every backend: the in-memory
store, the SQL store on SQLite (a fresh migrated file per test) and on PostgreSQL (one
migrated database for this module, emptied before each test).

The last section covers races only the SQL store can have: two store instances (two
replicas) writing the same job at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event

from app.domain import (
    ConfigurationError,
    JobDefinition,
    JobExecutionResult,
    JobStatus,
    StepExecutionResult,
    StepStatus,
)
from app.domain.jobs import (
    JobExistsError,
    JobNotFoundError,
    JobQuery,
    StoredJob,
    VersionConflictError,
)
from app.domain.records import TRIGGER_NOW, TRIGGER_SCHEDULE, ExecutionQuery
from app.engine.ports import JobStore
from tests.integration.conftest import SQL_BACKENDS, StoreFactory

T0 = datetime(2030, 3, 10, 12, 0, 0, 123456, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")


# -- builders ---------------------------------------------------------------------------------
def job_def(
    job_id: str = "nightly-load",
    *,
    timezone: str = "Europe/Berlin",
    enabled: bool = True,
    name: str | None = None,
) -> JobDefinition:
    return JobDefinition(
        job_id=job_id,
        job_name=name or f"Job {job_id}",
        description="nightly load — «quoted» ünïcode",
        timezone=timezone,
        steps=[
            {"step_id": "extract", "type": "shell", "command": "echo hi"},
            {"step_id": "load", "type": "sql", "query": "select 1", "connection_name": "dw"},
        ],
        enabled=enabled,
        max_retries=2,
        timeout_seconds=600,
        schedule_config={
            "type": "cron",
            "expression": "30 2 * * 1-5",
            "start_at": "2030-01-01T00:00:00",
            "misfire_policy": "run_all",
            "overlap_policy": "queue",
        },
        metadata={"owner": "data-team", "tags": ["a", "b"], "limits": {"rows": 10, "x": None}},
        retry_delay_seconds=1.5,
        retry_exponential_backoff=True,
    )


def assert_utc(value: datetime | None) -> None:
    assert value is not None
    assert value.utcoffset() == timedelta(0)


async def create_many(store: Any, specs: list[tuple[str, bool, str]]) -> None:
    for job_id, enabled, timezone in specs:
        await store.create_job(job_def(job_id, enabled=enabled, timezone=timezone), next_fire_at=T0)


async def all_pages(store: Any, query: JobQuery) -> list[list[str]]:
    pages: list[list[str]] = []
    while True:
        page = await store.list_jobs(query)
        pages.append([s.job_id for s in page.items])
        if page.next_cursor is None:
            return pages
        query = dataclasses.replace(query, cursor=page.next_cursor)


# -- the port is implemented ------------------------------------------------------------------
async def test_store_implements_the_job_store_port(store: Any) -> None:
    assert isinstance(store, JobStore)


# -- create and read --------------------------------------------------------------------------
async def test_create_and_get_round_trip_exactly(store: Any) -> None:
    job = job_def()
    job.created_at = datetime(2001, 1, 1, tzinfo=UTC)  # the store sets its own
    next_fire = (T0 + timedelta(microseconds=1)).astimezone(BERLIN)
    before = datetime.now(UTC)

    created = await store.create_job(job, next_fire_at=next_fire)

    after = datetime.now(UTC)
    assert isinstance(created, StoredJob)
    assert created.version == 1
    assert created.next_fire_at == T0 + timedelta(microseconds=1)
    assert_utc(created.next_fire_at)
    assert created.last_fire_at is None
    stamp = created.job.created_at
    assert stamp is not None and before <= stamp <= after
    assert_utc(stamp)
    assert created.job.updated_at == stamp
    assert_utc(created.job.updated_at)
    assert created.job == dataclasses.replace(job, created_at=stamp, updated_at=stamp)
    assert job.created_at == datetime(2001, 1, 1, tzinfo=UTC)  # the caller's copy untouched

    got = await store.get_job("nightly-load")
    assert got == created
    assert got.job.schedule_config == job.schedule_config
    assert got.job.metadata == {
        "owner": "data-team",
        "tags": ["a", "b"],
        "limits": {"rows": 10, "x": None},
    }
    assert_utc(got.next_fire_at)
    assert_utc(got.job.created_at)


async def test_get_of_an_unknown_job_is_none(store: Any) -> None:
    assert await store.get_job("nope") is None


async def test_duplicate_create_raises_and_keeps_the_first(store: Any) -> None:
    first = await store.create_job(job_def(name="first"), next_fire_at=T0)
    with pytest.raises(JobExistsError) as info:
        await store.create_job(job_def(name="second"), next_fire_at=None)
    assert info.value.job_id == "nightly-load"
    assert await store.get_job("nightly-load") == first


# -- listing ----------------------------------------------------------------------------------
async def test_list_filters_by_enabled_and_timezone(store: Any) -> None:
    await create_many(
        store,
        [
            ("a", True, "Europe/Berlin"),
            ("b", False, "Europe/Berlin"),
            ("c", True, "Asia/Kolkata"),
            ("d", False, "Asia/Kolkata"),
            ("e", True, "Europe/Berlin"),
        ],
    )

    async def ids(**filters: Any) -> list[str]:
        page = await store.list_jobs(JobQuery(**filters))
        assert page.next_cursor is None
        return [s.job_id for s in page.items]

    assert await ids() == ["a", "b", "c", "d", "e"]
    assert await ids(enabled=True) == ["a", "c", "e"]
    assert await ids(enabled=False) == ["b", "d"]
    assert await ids(timezone="Asia/Kolkata") == ["c", "d"]
    assert await ids(enabled=True, timezone="Europe/Berlin") == ["a", "e"]
    assert await ids(timezone="America/New_York") == []
    listed = (await store.list_jobs(JobQuery(timezone="Asia/Kolkata", enabled=False))).items
    assert listed == [await store.get_job("d")]


async def test_list_paginates_without_duplicates_or_gaps(store: Any) -> None:
    specs = [(f"job-{n:02d}", n % 3 != 0, "UTC") for n in range(23)]
    await create_many(store, list(reversed(specs)))

    pages = await all_pages(store, JobQuery(limit=5))
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [i for p in pages for i in p] == [job_id for job_id, _, _ in specs]

    enabled = await all_pages(store, JobQuery(enabled=True, limit=4))
    assert [i for p in enabled for i in p] == [job_id for job_id, on, _ in specs if on]
    assert all(len(p) == 4 for p in enabled[:-1])

    # A page size that divides the total exactly ends without an empty page.
    assert [len(p) for p in await all_pages(store, JobQuery(enabled=False, limit=4))] == [4, 4]


async def test_list_orders_by_code_point_on_every_backend(store: Any) -> None:
    ids = ["b", "B", "a_1", "a-1", "A", "z", "é", "a"]
    await create_many(store, [(i, True, "UTC") for i in ids])
    pages = await all_pages(store, JobQuery(limit=3))
    assert [i for p in pages for i in p] == sorted(ids)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (JobQuery(cursor="a"), "cursor"),  # not base64
        (JobQuery(cursor="__4"), "cursor"),  # base64 of bytes that are not UTF-8
        (JobQuery(limit=0), "limit"),
        (JobQuery(limit=-3), "limit"),
    ],
)
async def test_list_rejects_a_bad_cursor_or_limit(store: Any, query: JobQuery, field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        await store.list_jobs(query)
    assert [e.field for e in info.value.errors] == [field]


# -- update -----------------------------------------------------------------------------------
async def test_update_bumps_the_version_and_keeps_created_at(store: Any) -> None:
    created = await store.create_job(job_def(), next_fire_at=T0)
    assert await store.advance_job(
        "nightly-load",
        expected_next_fire_at=T0,
        next_fire_at=T0 + timedelta(days=1),
        last_fire_at=T0,
    )

    changed = job_def(name="renamed", timezone="Asia/Kolkata", enabled=False)
    changed.schedule_config = {"type": "interval", "every_seconds": 900}
    changed.metadata = {"owner": "ops"}
    changed.created_at = datetime(2001, 1, 1, tzinfo=UTC)  # ignored: the row's is kept
    new_fire = (T0 + timedelta(hours=5, microseconds=42)).astimezone(BERLIN)
    updated = await store.update_job(changed, expected_version=1, next_fire_at=new_fire)

    assert updated.version == 2
    assert updated.job.created_at == created.job.created_at
    assert updated.job.updated_at is not None
    assert_utc(updated.job.updated_at)
    assert updated.job.updated_at >= created.job.updated_at
    assert updated.job == dataclasses.replace(
        changed, created_at=created.job.created_at, updated_at=updated.job.updated_at
    )
    assert updated.next_fire_at == T0 + timedelta(hours=5, microseconds=42)
    assert_utc(updated.next_fire_at)
    assert updated.last_fire_at == T0  # fires are not the definition's business
    assert await store.get_job("nightly-load") == updated

    # The listing filters follow the new definition.
    assert (await store.list_jobs(JobQuery(enabled=True))).items == []
    kolkata = (await store.list_jobs(JobQuery(timezone="Asia/Kolkata"))).items
    assert [s.version for s in kolkata] == [2]

    # Without expected_version the write is unconditional; each one counts.
    again = await store.update_job(job_def(), expected_version=None, next_fire_at=None)
    assert again.version == 3
    assert again.next_fire_at is None
    assert again.job.created_at == created.job.created_at


async def test_a_stale_update_is_a_conflict_and_writes_nothing(store: Any) -> None:
    await store.create_job(job_def(), next_fire_at=T0)
    current = await store.update_job(job_def(name="v2"), expected_version=1, next_fire_at=T0)

    with pytest.raises(VersionConflictError) as info:
        await store.update_job(
            job_def(name="lost update"), expected_version=1, next_fire_at=T0 + timedelta(days=9)
        )
    assert (info.value.job_id, info.value.expected, info.value.actual) == ("nightly-load", 1, 2)
    assert await store.get_job("nightly-load") == current


async def test_update_of_a_missing_job_is_not_found(store: Any) -> None:
    for expected in (None, 1):
        with pytest.raises(JobNotFoundError) as info:
            await store.update_job(job_def("ghost"), expected_version=expected, next_fire_at=T0)
        assert info.value.job_id == "ghost"
    assert await store.get_job("ghost") is None


# -- delete -----------------------------------------------------------------------------------
async def test_delete_keeps_the_execution_history(store: Any) -> None:
    job = job_def()
    await store.create_job(job, next_fire_at=T0)
    await store.record_pending("exec-1", job, trigger=TRIGGER_SCHEDULE, scheduled_for=T0)
    before = await store.get_execution("exec-1")

    assert await store.delete_job("nightly-load") is True

    assert await store.get_job("nightly-load") is None
    assert (await store.list_jobs(JobQuery())).items == []
    assert await store.get_execution("exec-1") == before
    assert await store.get_job_definition("exec-1") == job
    assert await store.delete_job("nightly-load") is False


async def test_delete_with_a_version(store: Any) -> None:
    await store.create_job(job_def(), next_fire_at=T0)
    current = await store.update_job(job_def(name="v2"), expected_version=1, next_fire_at=T0)

    with pytest.raises(VersionConflictError) as info:
        await store.delete_job("nightly-load", expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert await store.get_job("nightly-load") == current

    assert await store.delete_job("nightly-load", expected_version=2) is True
    assert await store.get_job("nightly-load") is None
    assert await store.delete_job("nightly-load", expected_version=2) is False


async def test_a_deleted_job_id_can_be_created_again(store: Any) -> None:
    await store.create_job(job_def(), next_fire_at=T0)
    await store.update_job(job_def(), expected_version=1, next_fire_at=T0)
    await store.delete_job("nightly-load")
    again = await store.create_job(job_def(name="again"), next_fire_at=None)
    assert (again.version, again.job.job_name, again.next_fire_at) == (1, "again", None)


# -- firing -----------------------------------------------------------------------------------
async def test_due_jobs_are_enabled_ones_earliest_first(store: Any) -> None:
    fires: dict[str, tuple[datetime | None, bool]] = {
        "third": (T0 + timedelta(seconds=3), True),
        "first": (T0 + timedelta(seconds=1), True),
        "second-b": (T0 + timedelta(seconds=2), True),
        "second-a": (T0 + timedelta(seconds=2), True),
        "disabled": (T0, False),
        "no-fire": (None, True),
        "later": (T0 + timedelta(hours=1), True),
    }
    for job_id, (fire, enabled) in fires.items():
        await store.create_job(job_def(job_id, enabled=enabled), next_fire_at=fire)

    until = T0 + timedelta(seconds=3)
    due = await store.due_jobs(until, 10)
    assert [s.job_id for s in due] == ["first", "second-a", "second-b", "third"]
    assert due[0] == await store.get_job("first")
    assert [s.job_id for s in await store.due_jobs(until, 2)] == ["first", "second-a"]
    # ``until`` is inclusive, to the microsecond, in any zone.
    edge = (T0 + timedelta(seconds=1)).astimezone(BERLIN)
    assert [s.job_id for s in await store.due_jobs(edge, 10)] == ["first"]
    assert await store.due_jobs(edge - timedelta(microseconds=1), 10) == []


async def test_advance_job_is_a_compare_and_set(store: Any) -> None:
    created = await store.create_job(job_def(), next_fire_at=T0)
    following = T0 + timedelta(days=1, microseconds=1)

    moved = await store.advance_job(
        "nightly-load",
        expected_next_fire_at=T0.astimezone(BERLIN),  # the same instant in another zone
        next_fire_at=following,
        last_fire_at=T0,
    )
    assert moved is True
    got = await store.get_job("nightly-load")
    assert (got.next_fire_at, got.last_fire_at) == (following, T0)
    assert_utc(got.last_fire_at)
    assert got.version == 1  # not a user change
    assert got.job == created.job

    # A second replica acting on the same due fire loses, and changes nothing.
    again = await store.advance_job(
        "nightly-load",
        expected_next_fire_at=T0,
        next_fire_at=T0 + timedelta(days=7),
        last_fire_at=T0 + timedelta(days=7),
    )
    assert again is False
    assert await store.get_job("nightly-load") == got

    # One microsecond off is another value.
    assert not await store.advance_job(
        "nightly-load",
        expected_next_fire_at=following - timedelta(microseconds=1),
        next_fire_at=None,
        last_fire_at=T0,
    )
    assert not await store.advance_job(
        "ghost", expected_next_fire_at=T0, next_fire_at=None, last_fire_at=T0
    )

    # No more fires: the job is never due again.
    assert await store.advance_job(
        "nightly-load", expected_next_fire_at=following, next_fire_at=None, last_fire_at=following
    )
    done = await store.get_job("nightly-load")
    assert (done.next_fire_at, done.last_fire_at) == (None, following)
    assert await store.due_jobs(T0 + timedelta(days=365), 10) == []
    assert await store.next_job_fire_time() is None


async def test_next_job_fire_time_is_the_earliest_enabled_fire(store: Any) -> None:
    assert await store.next_job_fire_time() is None
    await store.create_job(job_def("off", enabled=False), next_fire_at=T0)
    await store.create_job(job_def("none"), next_fire_at=None)
    assert await store.next_job_fire_time() is None

    await store.create_job(job_def("late"), next_fire_at=T0 + timedelta(hours=2))
    await store.create_job(job_def("soon"), next_fire_at=T0 + timedelta(hours=1, microseconds=9))
    earliest = await store.next_job_fire_time()
    assert earliest == T0 + timedelta(hours=1, microseconds=9)
    assert_utc(earliest)

    await store.update_job(job_def("soon", enabled=False), expected_version=1, next_fire_at=None)
    assert await store.next_job_fire_time() == T0 + timedelta(hours=2)


# -- latest executions ------------------------------------------------------------------------
async def next_clock_tick() -> None:
    """Return once the clock has moved past now: what is recorded after this has a strictly
    later created_at than what was recorded before (never a tie)."""
    start = datetime.now(UTC)
    while datetime.now(UTC) <= start:
        await asyncio.sleep(0.001)


async def record_execution(
    store: Any,
    execution_id: str,
    job: JobDefinition,
    status: JobStatus,
    *,
    durable: bool = True,
    **fields: Any,
) -> None:
    """An execution of ``job`` with two steps, ending (or staying) in ``status``."""
    await store.record_pending(execution_id, job, trigger=TRIGGER_NOW, durable=durable)
    if status is JobStatus.PENDING:
        return
    steps = [
        StepExecutionResult(
            step_id=step_id, step_name=step_id, step_type="shell", status=StepStatus.SUCCESS
        )
        for step_id in ("extract", "load")
    ]
    for step in steps:
        await store.record_step(execution_id, step, 0, durable=durable)
    result = JobExecutionResult(
        execution_id=execution_id,
        job_id=job.job_id,
        job_name=job.job_name,
        status=status,
        timezone=job.timezone,
        steps=steps,
        metadata={"trigger": "now"},
        **fields,
    )
    await store.record_job(result, durable=durable)


async def without_steps(store: Any, execution_id: str) -> JobExecutionResult:
    found: JobExecutionResult | None = await store.get_execution(execution_id)
    assert found is not None and found.steps  # steps are stored...
    # ...but latest_executions leaves them out, and the attempts rebuilt from them.
    return dataclasses.replace(found, steps=[], attempts=[])


async def test_latest_executions_gives_each_jobs_newest_without_steps(store: Any) -> None:
    jobs = {job_id: job_def(job_id) for job_id in ("alpha", "beta", "gamma", "idle")}
    for job in jobs.values():
        await store.create_job(job, next_fire_at=None)
    # Interleaved across jobs, each job's executions recorded in execution_id order: a
    # later one has a later created_at or, on a tie, a higher execution_id; newest wins
    # either way.
    for n in range(4):
        for job_id in ("alpha", "beta", "gamma"):
            await record_execution(
                store,
                f"{job_id}-{n}",
                jobs[job_id],
                JobStatus.FAILED if n % 2 else JobStatus.SUCCESS,
                start_time=T0 + timedelta(minutes=n),
                end_time=T0 + timedelta(minutes=n, seconds=5),
                duration_seconds=5.0,
                error_message="exit 3" if n % 2 else None,
                retry_count=n,
            )
    # alpha's newest is recorded after a clock tick under a LOWER execution_id: created_at
    # decides before execution_id. beta's newest went through the group commit.
    await next_clock_tick()
    await record_execution(store, "alpha-0000", jobs["alpha"], JobStatus.SUCCESS)
    await record_execution(store, "beta-9", jobs["beta"], JobStatus.SUCCESS, durable=False)
    # History of a job that is no longer stored still counts.
    await record_execution(store, "gone-1", job_def("gone"), JobStatus.PENDING)

    latest = await store.latest_executions(["gamma", "idle", "alpha", "nope", "beta", "gone"])

    assert {job_id: r.execution_id for job_id, r in latest.items()} == {
        "alpha": "alpha-0000",
        "beta": "beta-9",
        "gamma": "gamma-3",
        "gone": "gone-1",
    }
    for job_id in ("alpha", "beta", "gamma"):
        assert latest[job_id].steps == []
        assert latest[job_id] == await without_steps(store, latest[job_id].execution_id)
        # The same one the history listing shows first.
        listed = await store.list_executions(ExecutionQuery(job_id=job_id, limit=1))
        assert latest[job_id] == dataclasses.replace(listed.items[0], steps=[], attempts=[])
    gamma = latest["gamma"]
    assert (gamma.status, gamma.error_message, gamma.retry_count) == (JobStatus.FAILED, "exit 3", 3)
    assert gamma.start_time == T0 + timedelta(minutes=3)
    assert_utc(gamma.start_time)
    assert latest["gone"].status is JobStatus.PENDING
    assert latest["gone"] == await store.get_execution("gone-1")


async def test_latest_executions_of_no_jobs_or_jobs_without_history(store: Any) -> None:
    assert await store.latest_executions([]) == {}
    assert await store.latest_executions(["idle", "nope"]) == {}
    await record_execution(store, "one-1", job_def("one"), JobStatus.SUCCESS)
    assert await store.latest_executions([]) == {}
    assert await store.latest_executions(("idle",)) == {}
    # A repeated id is answered once.
    twice = await store.latest_executions(["one", "idle", "one"])
    assert list(twice) == ["one"] and twice["one"].execution_id == "one-1"


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_latest_executions_query_count_does_not_grow_with_the_ids(
    backend: str, make_store: StoreFactory
) -> None:
    store = await make_store(backend)
    job_ids = [f"job-{n:03d}" for n in range(60)]
    for n, job_id in enumerate(job_ids):
        for attempt in range(2):
            await record_execution(store, f"{job_id}-{attempt}", job_def(job_id), JobStatus.SUCCESS)
        if n % 3 == 0:  # some jobs with a pending newest execution, no steps at all
            await record_execution(store, f"{job_id}-9", job_def(job_id), JobStatus.PENDING)

    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(store.engine.sync_engine, "before_cursor_execute", count)
    try:
        one = await store.latest_executions(job_ids[:1])
        for_one = len(statements)
        statements.clear()
        many = await store.latest_executions([*job_ids, "nope"])
        for_many = len(statements)
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", count)

    assert [r.execution_id for r in one.values()] == ["job-000-9"]
    assert len(many) == 60
    assert {r.execution_id for r in many.values()} == {
        f"{job_id}-9" if n % 3 == 0 else f"{job_id}-1" for n, job_id in enumerate(job_ids)
    }
    assert for_many == for_one == 2  # two SELECTs (BEGIN goes to the driver directly)


# -- several replicas (SQL only) --------------------------------------------------------------
@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_concurrent_advances_from_two_stores_have_one_winner(
    backend: str, make_store: StoreFactory
) -> None:
    first, second = await make_store(backend), await make_store(backend)
    await first.create_job(job_def(), next_fire_at=T0)
    expected = T0
    for round_ in range(10):
        targets = [expected + timedelta(minutes=1, microseconds=n + 1) for n in range(2)]
        wins = await asyncio.gather(
            *(
                s.advance_job(
                    "nightly-load",
                    expected_next_fire_at=expected,
                    next_fire_at=target,
                    last_fire_at=expected,
                )
                for s, target in zip((first, second), targets, strict=True)
            )
        )
        assert sorted(wins) == [False, True], f"round {round_}: {wins}"
        stored = await second.get_job("nightly-load")
        assert stored.next_fire_at == targets[wins.index(True)]
        assert stored.last_fire_at == expected
        expected = stored.next_fire_at
    assert (await first.get_job("nightly-load")).version == 1


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_concurrent_updates_at_one_version_have_one_winner(
    backend: str, make_store: StoreFactory
) -> None:
    first, second = await make_store(backend), await make_store(backend)
    await first.create_job(job_def(), next_fire_at=T0)
    results = await asyncio.gather(
        *(
            s.update_job(job_def(name=name), expected_version=1, next_fire_at=T0)
            for s, name in ((first, "one"), (second, "two"))
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, StoredJob)]
    losers = [r for r in results if isinstance(r, VersionConflictError)]
    assert len(winners) == 1 and len(losers) == 1, results
    assert (losers[0].expected, losers[0].actual) == (1, 2)
    assert await first.get_job("nightly-load") == winners[0]
