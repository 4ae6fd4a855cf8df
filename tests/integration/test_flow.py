"""Job flow through the engine on the database store (SQLite and PostgreSQL): step routing
with goto loops, per-step retries, job retries and the attempts history, run tokens in
process steps. Steps are real: SQL on a real database, shell scripts in real processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.domain import JobDefinition, JobExecutionResult, JobStatus, StepStatus
from app.domain.errors import ConfigurationError
from app.domain.records import TRIGGER_SCHEDULE, ScheduledRun
from app.engine import NewExecutionEngine
from app.engine.backfill import BackfillRequest, backfill
from app.persistence import SqlExecutionStore
from app.steps import ConnectionRegistry, StepResources


@pytest.fixture
def db_url(migrated_db_url: str) -> str:
    return migrated_db_url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[NewExecutionEngine]:
    resources = StepResources(connections=ConnectionRegistry({"work": db_url}))
    eng = NewExecutionEngine(
        store=SqlExecutionStore(db_url), resources=resources, poll_interval_seconds=0.05
    )
    await eng.start()
    yield eng
    await eng.stop()


async def admin(url: str, *statements: str) -> list[Any]:
    db = create_async_engine(url)
    rows: list[Any] = []
    try:
        async with db.begin() as conn:
            for sql in statements:
                result = await conn.execute(text(sql))
                if result.returns_rows:
                    rows.extend(result.all())
    finally:
        await db.dispose()
    return rows


def sh(step_id: str, script: str, **config: Any) -> dict[str, Any]:
    return {"step_id": step_id, "type": "shell", "script": script, "timeout": 30, **config}


def sql(step_id: str, query: str, **config: Any) -> dict[str, Any]:
    return {"step_id": step_id, "type": "sql", "connection_name": "work", "query": query, **config}


def job(job_id: str, steps: list[dict[str, Any]], **kw: Any) -> JobDefinition:
    return JobDefinition(job_id=job_id, job_name=job_id, steps=steps, **kw)


def statuses(steps: Any) -> list[tuple[str, str]]:
    return [(s.step_id, s.status.value) for s in steps]


async def poll_tables(url: str, *, arrives_after: int | None) -> None:
    """``polls`` (one row per wait) and ``ready``, where a row appears once the job has
    waited ``arrives_after`` times (a trigger plays the producer); never when None."""
    pg = url.startswith("postgresql")
    await admin(url, "CREATE TABLE polls (n INTEGER)", "CREATE TABLE ready (n INTEGER)")
    if arrives_after is None:
        return
    if pg:
        await admin(
            url,
            "CREATE FUNCTION arrive() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF (SELECT count(*) FROM polls) >= {arrives_after} THEN "
            "INSERT INTO ready VALUES (42); END IF; RETURN NULL; END $$",
            "CREATE TRIGGER arrive AFTER INSERT ON polls FOR EACH ROW EXECUTE FUNCTION arrive()",
        )
    else:
        await admin(
            url,
            "CREATE TRIGGER arrive AFTER INSERT ON polls "
            f"WHEN (SELECT count(*) FROM polls) >= {arrives_after} "
            "BEGIN INSERT INTO ready VALUES (42); END",
        )


def check_ready_query(url: str) -> str:
    """Fails (a real database error) while ``ready`` is empty."""
    if url.startswith("postgresql"):
        return "SELECT 1 / (SELECT count(*) FROM ready) AS ok"
    return "SELECT CASE WHEN EXISTS (SELECT 1 FROM ready) THEN 1 ELSE json('no row yet') END AS ok"


def poll_job(url: str, **kw: Any) -> JobDefinition:
    return job(
        "poll",
        [
            sh("prepare", "echo preparing"),
            sql(
                "check",
                check_ready_query(url),
                on_success={"goto": "load"},
                on_failure={"goto": "wait"},
            ),
            sql("wait", "INSERT INTO polls VALUES (1)", on_success={"goto": "check"}),
            sql("load", "SELECT n FROM ready"),
            sh("report", "echo loaded", on_success="quit_success"),
        ],
        **kw,
    )


async def test_goto_loop_polls_a_table_until_a_row_appears(
    engine: NewExecutionEngine, db_url: str
) -> None:
    await poll_tables(db_url, arrives_after=3)
    result = await engine.execute_job_now(poll_job(db_url))

    assert result.status is JobStatus.SUCCESS, result.error_message
    path = ["prepare", "check", "wait", "check", "wait", "check", "wait", "check", "load", "report"]
    assert result.metadata["path"] == path
    assert [s.step_id for s in result.steps] == path
    checks = [s for s in result.steps if s.step_id == "check"]
    assert [s.status for s in checks] == [StepStatus.FAILED] * 3 + [StepStatus.SUCCESS]
    assert [s.metadata["run"] for s in checks] == [0, 1, 2, 3]
    assert result.steps[-2].output is not None and "42" in result.steps[-2].output

    stored = await engine.store.get_execution(result.execution_id)
    assert stored is not None and stored.status is JobStatus.SUCCESS
    assert [s.step_id for s in stored.steps] == path
    assert statuses(stored.steps) == statuses(result.steps)
    assert stored.metadata["path"] == path
    assert [a.path for a in stored.attempts] == [path]
    assert await admin(db_url, "SELECT count(*) FROM polls") == [(3,)]


async def test_a_runaway_loop_stops_at_max_step_runs_naming_the_loop(
    engine: NewExecutionEngine, db_url: str
) -> None:
    await poll_tables(db_url, arrives_after=None)  # the row never comes
    result = await engine.execute_job_now(poll_job(db_url, max_step_runs=7))

    assert result.status is JobStatus.FAILED
    assert result.error_message == (
        "stopped after max_step_runs=7 step runs: the loop 'wait' -> 'check' -> 'wait' did not end"
    )
    assert result.metadata["path"] == ["prepare", "check", "wait", "check", "wait", "check", "wait"]
    assert statuses(result.steps)[-2:] == [("load", "skipped"), ("report", "skipped")]
    stored = await engine.store.get_execution(result.execution_id)
    assert stored is not None and stored.error_message == result.error_message


async def test_quit_success_after_a_failed_step_ends_the_job_success(
    engine: NewExecutionEngine,
) -> None:
    result = await engine.execute_job_now(
        job(
            "agent-style",
            [
                sh("try", "echo trying; exit 4", on_failure="quit_success"),
                sh("never", "echo never"),
            ],
        )
    )
    assert result.status is JobStatus.SUCCESS
    assert statuses(result.steps) == [("try", "failed"), ("never", "skipped")]
    assert result.steps[0].output == "trying\n"


async def test_failure_routed_next_is_partial_success_and_goto_skips_steps(
    engine: NewExecutionEngine,
) -> None:
    partial = await engine.execute_job_now(
        job("soft", [sh("a", "exit 1", on_failure="next"), sh("b", "echo b")])
    )
    assert partial.status is JobStatus.PARTIAL_SUCCESS
    jump = await engine.execute_job_now(
        job(
            "jump",
            [
                sh("a", "exit 1", on_failure={"goto": "cleanup"}),
                sh("b", "echo b"),
                sh("cleanup", "echo cleaning", on_success="quit_failure"),
            ],
        )
    )
    assert jump.status is JobStatus.FAILED
    assert jump.error_message == "step 'cleanup' succeeded and routes to quit_failure"
    assert statuses(jump.steps) == [("a", "failed"), ("cleanup", "success"), ("b", "skipped")]
    stored = await engine.store.get_execution(jump.execution_id)
    assert stored is not None and statuses(stored.steps) == statuses(jump.steps)


async def test_a_step_that_fails_twice_then_succeeds_under_retry_attempts_2(
    engine: NewExecutionEngine, tmp_path: Path
) -> None:
    counter = tmp_path / "count"
    flaky = (
        f'n=$(cat "{counter}" 2>/dev/null || echo 0); n=$((n+1)); echo "$n" > "{counter}"; '
        'echo "run $n"; [ "$n" -ge 3 ] || { echo "not yet" >&2; exit 1; }'
    )
    result = await engine.execute_job_now(
        job(
            "flaky",
            [
                sh("load", flaky, retry_attempts=2, retry_interval_seconds=0.01),
                sh("after", "echo ok"),
            ],
        )
    )
    assert result.status is JobStatus.SUCCESS, result.error_message
    assert statuses(result.steps) == [
        ("load", "failed"),
        ("load", "failed"),
        ("load", "success"),
        ("after", "success"),
    ]
    loads = result.steps[:3]
    assert [s.metadata["step_attempt"] for s in loads] == [0, 1, 2]
    assert [s.output for s in loads] == ["run 1\n", "run 2\n", "run 3\n"]
    assert result.metadata["path"] == ["load", "after"]  # one visit, three runs

    stored = await engine.store.get_execution(result.execution_id)
    assert stored is not None
    assert statuses(stored.steps) == statuses(result.steps)
    assert [s.output for s in stored.steps[:3]] == ["run 1\n", "run 2\n", "run 3\n"]
    assert len(stored.attempts) == 1 and len(stored.attempts[0].steps) == 4


async def test_step_retries_run_out_then_on_failure_applies(
    engine: NewExecutionEngine,
) -> None:
    result = await engine.execute_job_now(
        job("hopeless", [sh("a", "exit 2", retry_attempts=1, on_failure="next"), sh("b", "true")])
    )
    assert result.status is JobStatus.PARTIAL_SUCCESS
    assert statuses(result.steps) == [("a", "failed"), ("a", "failed"), ("b", "success")]


async def test_a_step_timeout_is_retried_and_keeps_its_output(engine: NewExecutionEngine) -> None:
    result = await engine.execute_job_now(
        job("slow", [sh("a", "echo started; exec sleep 30", timeout=1, retry_attempts=1)])
    )
    assert result.status is JobStatus.FAILED
    assert statuses(result.steps) == [("a", "timeout"), ("a", "timeout")]
    assert [s.output for s in result.steps] == ["started\n", "started\n"]
    stored = await engine.store.get_execution(result.execution_id)
    assert stored is not None and [s.output for s in stored.steps] == ["started\n", "started\n"]


async def test_job_retries_keep_every_attempt_with_its_steps(
    engine: NewExecutionEngine, tmp_path: Path
) -> None:
    marker = tmp_path / "second"
    result = await engine.execute_job_now(
        job(
            "twice",
            [
                sh("first", "echo first"),
                sh(
                    "second",
                    f'if [ -e "{marker}" ]; then echo fine; else touch "{marker}"; '
                    'echo "broken" >&2; exit 1; fi',
                ),
            ],
            max_retries=1,
        )
    )
    assert result.status is JobStatus.SUCCESS
    assert result.retry_count == 1
    assert [(a.attempt, a.status) for a in result.attempts] == [
        (0, JobStatus.FAILED),
        (1, JobStatus.SUCCESS),
    ]
    assert statuses(result.attempts[0].steps) == [("first", "success"), ("second", "failed")]
    assert result.attempts[0].error_message is not None
    assert (
        "broken" in result.attempts[0].error_message or "exit" in result.attempts[0].error_message
    )

    stored = await engine.store.get_execution(result.execution_id)
    assert stored is not None
    assert [(a.attempt, a.status) for a in stored.attempts] == [
        (0, JobStatus.FAILED),
        (1, JobStatus.SUCCESS),
    ]
    assert statuses(stored.attempts[0].steps) == [("first", "success"), ("second", "failed")]
    # The retry resumed at the failed step: the first step's success was reused.
    assert statuses(stored.attempts[1].steps) == [("first", "success"), ("second", "success")]
    assert stored.attempts[1].steps[0].metadata.get("cached") is True
    assert statuses(stored.steps) == statuses(stored.attempts[1].steps)  # top level: the last
    assert stored.attempts[0].end_time is not None
    assert stored.attempts[1].start_time is not None
    assert stored.attempts[0].end_time <= stored.attempts[1].start_time


async def test_process_steps_see_the_run_tokens(engine: NewExecutionEngine) -> None:
    result = await engine.execute_job_now(
        job(
            "tokens",
            [
                sh(
                    "env",
                    'echo "$JOBSCHEDULER_EXECUTION_ID|$JOBSCHEDULER_SCHEDULED_FOR|'
                    '$JOBSCHEDULER_LOGICAL_DATE|$JOBSCHEDULER_JOB_ID|$WHEN|$ATTEMPT"',
                    parameters={
                        "WHEN": {"$from": "run.scheduled_for_local"},
                        "ATTEMPT": {"$from": "run.attempt"},
                    },
                )
            ],
            timezone="Pacific/Auckland",
        )
    )
    assert result.status is JobStatus.SUCCESS, result.error_message
    assert result.steps[0].output is not None
    eid, scheduled, logical, job_id, local, attempt = result.steps[0].output.strip().split("|")
    assert eid == result.execution_id and job_id == "tokens" and attempt == "0"
    when = datetime.fromisoformat(scheduled.replace("Z", "+00:00"))
    assert scheduled.endswith("Z") and result.start_time is not None
    assert when == result.start_time.astimezone(UTC)
    assert datetime.fromisoformat(local) == when
    assert logical == datetime.fromisoformat(local).date().isoformat()
    assert result.metadata["logical_date"] == logical


async def test_routing_is_checked_when_the_job_is_submitted(engine: NewExecutionEngine) -> None:
    with pytest.raises(ConfigurationError) as info:
        await engine.execute_job_now(
            job("bad", [sh("a", "true", on_failure={"goto": "nowhere"}), sh("b", "true")])
        )
    assert [(e.field, e.message) for e in info.value.errors] == [
        ("steps[0].on_failure.goto", "no step has step_id 'nowhere'")
    ]


async def test_backfill_a_dst_week_once_through_the_queue_and_a_missed_fire_gets_its_run(
    db_url: str,
) -> None:
    await admin(db_url, "CREATE TABLE loads (day VARCHAR(10), due VARCHAR(40))")
    nightly = job(
        "nightly",
        [
            sql(
                "load",
                "INSERT INTO loads (day, due) VALUES (:day, :due)",
                parameters={
                    "day": {"$from": "run.logical_date"},
                    "due": {"$from": "run.scheduled_for"},
                },
            )
        ],
        timezone="Europe/London",
        schedule_config={"type": "cron", "expression": "30 2 * * *"},
    )
    # Before the engine starts: the job, and its fire of the 26th recorded missed (the
    # service was down then).
    before = SqlExecutionStore(db_url)
    await before.open()
    try:
        await before.create_job(nightly, next_fire_at=None)
        missed_at = datetime(2026, 10, 26, 2, 30, tzinfo=UTC)
        await before.add_scheduled_run(
            ScheduledRun("missed", nightly, missed_at, trigger=TRIGGER_SCHEDULE)
        )
        assert await before.mark_missed("missed", "missed: the service was down")
    finally:
        await before.close()
    resources = StepResources(connections=ConnectionRegistry({"work": db_url}))
    engine = NewExecutionEngine(
        store=SqlExecutionStore(db_url), resources=resources, poll_interval_seconds=0.05
    )
    await engine.start()
    try:
        await _backfill_week(engine, db_url)
    finally:
        await engine.stop()


async def _backfill_week(engine: NewExecutionEngine, db_url: str) -> None:
    assert engine.jobs is not None
    stored = await engine.jobs.get("nightly")
    week = BackfillRequest(start="2026-10-22", end="2026-10-28")
    plan = await backfill(engine, stored, week, requested_by="ops")
    days = [f"2026-10-{d}" for d in range(22, 29)]
    assert [r.logical_date for r in plan.runs] == days and plan.already_ran == []
    results = [await finished(engine, r.execution_id or "") for r in plan.runs]
    assert [r.status for r in results] == [JobStatus.SUCCESS] * 7
    rows = await admin(db_url, "SELECT day, due FROM loads ORDER BY day")
    assert [r[0] for r in rows] == days
    assert rows[2][1] == "2026-10-24T01:30:00Z" and rows[3][1] == "2026-10-25T02:30:00Z"

    again = await backfill(engine, stored, week, requested_by="ops")
    assert again.runs == [] and [r.logical_date for r in again.already_ran] == days
    assert len(await admin(db_url, "SELECT day FROM loads")) == 7

    with pytest.raises(ConfigurationError) as info:
        await backfill(
            engine, stored, BackfillRequest("2026-10-28", "2026-10-22"), requested_by=None
        )
    assert [e.field for e in info.value.errors] == ["to"]


async def finished(engine: NewExecutionEngine, execution_id: str) -> JobExecutionResult:
    """The execution once it has ended (a backfill run waits for the scheduler first)."""
    async with asyncio.timeout(30):
        while True:
            result = await engine.wait_for(execution_id)
            if result is not None and result.status.is_terminal:
                return result
            await asyncio.sleep(0.02)
