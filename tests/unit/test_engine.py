"""NewExecutionEngine / TimezoneJobQueue semantics with deterministic probe steps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

import app
from app.domain import (
    ConfigurationError,
    JobDefinition,
    JobStatus,
    SchedulingError,
    StepStatus,
)
from app.domain.timeutil import utc_now
from app.engine import InMemoryExecutionStore, NewExecutionEngine, TimezoneJobQueue
from app.engine import engine as engine_module
from app.engine.runner import retry_delay
from tests.support.steps import Probe, install_probe, uninstall_probe


class RecordingStore(InMemoryExecutionStore):
    """The real in-memory store, also remembering every job status it was given and which
    writes were asked to be durable."""

    def __init__(self) -> None:
        super().__init__()
        self.job_statuses: dict[str, list[str]] = {}
        self.durable: dict[str, list[tuple[str, bool]]] = {}

    async def record_pending(self, execution_id: str, *args: Any, **kw: Any) -> None:
        self.durable.setdefault(execution_id, []).append(("pending", kw.get("durable", True)))
        await super().record_pending(execution_id, *args, **kw)

    async def mark_run_dispatched(self, execution_id: str) -> None:
        self.durable.setdefault(execution_id, []).append(("dispatched", True))
        await super().mark_run_dispatched(execution_id)

    async def record_job(self, result: Any, *, durable: bool = True) -> None:
        self.job_statuses.setdefault(result.execution_id, []).append(result.status.value)
        self.durable.setdefault(result.execution_id, []).append((result.status.value, durable))
        await super().record_job(result, durable=durable)


@pytest.fixture
def probe() -> Iterator[Probe]:
    yield install_probe()
    uninstall_probe()


@pytest.fixture
async def engine(probe: Probe) -> AsyncIterator[NewExecutionEngine]:
    eng = NewExecutionEngine(
        max_workers=4,
        default_timeout=60,
        queue_max_concurrent=2,
        store=RecordingStore(),
        poll_interval_seconds=0.05,
    )
    await eng.start()
    yield eng
    await eng.stop(wait_for_jobs=False)


def job(job_id: str = "j1", *steps: dict[str, Any], **kw: Any) -> JobDefinition:
    return JobDefinition(
        job_id=job_id,
        job_name=f"Job {job_id}",
        steps=list(steps) or [{"step_id": "a", "type": "probe"}],
        **kw,
    )


async def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_success_records_every_step(engine: NewExecutionEngine) -> None:
    result = await engine.execute_job_now(
        job(
            "ok",
            {"step_id": "a", "type": "probe"},
            {"step_id": "b", "type": "probe", "output": "done"},
        )
    )
    assert result.status is JobStatus.SUCCESS and result.success
    assert [s.status for s in result.steps] == [StepStatus.SUCCESS, StepStatus.SUCCESS]
    assert result.steps[1].output == "done"
    assert all(s.start_time and s.end_time and s.end_time >= s.start_time for s in result.steps)
    assert result.start_time is not None and result.start_time.tzinfo is not None
    stored = await engine.store.get_execution(result.execution_id)
    assert stored is not None and stored.status is JobStatus.SUCCESS
    assert [s.step_id for s in stored.steps] == ["a", "b"]
    assert engine.store.job_statuses[result.execution_id] == ["running", "success"]  # type: ignore[attr-defined]


async def test_failed_step_stops_job_and_skips_rest(engine: NewExecutionEngine) -> None:
    result = await engine.execute_job_now(
        job(
            "f",
            {"step_id": "a", "type": "probe"},
            {"step_id": "b", "type": "probe", "fail": True},
            {"step_id": "c", "type": "probe"},
        )
    )
    assert result.status is JobStatus.FAILED and not result.success
    assert [s.status for s in result.steps] == [
        StepStatus.SUCCESS,
        StepStatus.FAILED,
        StepStatus.SKIPPED,
    ]
    assert "'b'" in (result.error_message or "")
    assert [s.step_id for s in result.get_failed_steps()] == ["b"]
    stored = await engine.store.get_execution(result.execution_id)
    assert stored is not None and [s.status for s in stored.steps][-1] is StepStatus.SKIPPED


async def test_continue_on_failure_gives_partial_success(engine: NewExecutionEngine) -> None:
    result = await engine.execute_job_now(
        job(
            "p",
            {"step_id": "a", "type": "probe", "fail": True, "continue_on_failure": True},
            {"step_id": "b", "type": "probe"},
        )
    )
    assert result.status is JobStatus.PARTIAL_SUCCESS
    assert result.success is False
    assert [s.status for s in result.steps] == [StepStatus.FAILED, StepStatus.SUCCESS]


async def test_job_timeout_stops_running_step(engine: NewExecutionEngine, probe: Probe) -> None:
    result = await engine.execute_job_now(
        job(
            "t",
            {"step_id": "slow", "type": "probe", "gate": "never"},
            {"step_id": "after", "type": "probe"},
            timeout_seconds=1,
        )
    )
    assert result.status is JobStatus.TIMEOUT
    assert [s.status for s in result.steps] == [StepStatus.TIMEOUT, StepStatus.SKIPPED]
    assert any(k.endswith(":slow") for k in probe.cancelled)  # the step really was stopped
    stored = await engine.store.get_execution(result.execution_id)
    assert stored is not None and stored.steps[0].status is StepStatus.TIMEOUT


async def test_step_timeout_fails_step(engine: NewExecutionEngine) -> None:
    result = await engine.execute_job_now(
        job("st", {"step_id": "slow", "type": "probe", "gate": "never", "timeout": 1})
    )
    assert result.status is JobStatus.FAILED
    assert result.steps[0].status is StepStatus.TIMEOUT
    assert "timed out after 1s" in (result.steps[0].error_message or "")


async def test_retries_record_retrying_and_count(engine: NewExecutionEngine, probe: Probe) -> None:
    probe.fail_first["flaky"] = 2
    result = await engine.execute_job_now(
        job("r", {"step_id": "flaky", "type": "probe"}, max_retries=3, retry_delay_seconds=0.01)
    )
    assert result.status is JobStatus.SUCCESS
    assert result.retry_count == 2
    statuses = engine.store.job_statuses[result.execution_id]  # type: ignore[attr-defined]
    assert statuses == ["running", "retrying", "running", "retrying", "running", "success"]


async def test_retries_exhausted_end_failed(engine: NewExecutionEngine, probe: Probe) -> None:
    probe.fail_first["flaky"] = 5
    result = await engine.execute_job_now(
        job("r2", {"step_id": "flaky", "type": "probe"}, max_retries=1)
    )
    assert result.status is JobStatus.FAILED and result.retry_count == 1


@pytest.mark.parametrize(("caching", "first_step_runs"), [(True, 1), (False, 2)])
async def test_step_caching_resumes_retry_at_failed_step(
    probe: Probe, caching: bool, first_step_runs: int
) -> None:
    eng = NewExecutionEngine(enable_step_caching=caching)
    await eng.start()
    try:
        probe.fail_first["second"] = 1
        result = await eng.execute_job_now(
            job(
                "c",
                {"step_id": "first", "type": "probe"},
                {"step_id": "second", "type": "probe"},
                max_retries=1,
            )
        )
        assert result.status is JobStatus.SUCCESS
        assert probe.runs["first"] == first_step_runs
        assert result.steps[0].metadata.get("cached", False) is caching
    finally:
        await eng.stop()


def test_retry_delay_backoff() -> None:
    plain = job(retry_delay_seconds=2)
    expo = job(retry_delay_seconds=2, retry_exponential_backoff=True)
    assert [retry_delay(plain, n) for n in (1, 2, 3)] == [2, 2, 2]
    assert [retry_delay(expo, n) for n in (1, 2, 3)] == [2, 4, 8]
    assert retry_delay(job(retry_delay_seconds=1000, retry_exponential_backoff=True), 10) == 3600


async def test_cancel_running_job(engine: NewExecutionEngine, probe: Probe) -> None:
    execution = await engine.submit_now(
        job(
            "cx",
            {"step_id": "wait", "type": "probe", "gate": "never"},
            {"step_id": "next", "type": "probe"},
        )
    )
    await probe.started["wait"].wait()
    assert [e["execution_id"] for e in engine.get_active_executions()] == [execution.execution_id]
    assert await engine.cancel_job(execution.execution_id) is True
    result = await engine.wait_for(execution.execution_id)
    assert result is not None and result.status is JobStatus.CANCELLED
    assert [s.status for s in result.steps] == [StepStatus.CANCELLED, StepStatus.SKIPPED]
    assert f"{execution.execution_id}:wait" in probe.cancelled
    stored = await engine.store.get_execution(execution.execution_id)
    assert stored is not None and stored.status is JobStatus.CANCELLED
    assert await engine.cancel_job(execution.execution_id) is False
    assert await engine.cancel_job("no-such-id") is False


async def test_schedule_runs_at_time(engine: NewExecutionEngine, probe: Probe) -> None:
    when = utc_now() + timedelta(milliseconds=200)
    execution_id = await engine.schedule_job(job("s"), when)
    status = await engine.get_execution(execution_id)
    assert status is not None and status["status"] == "pending"
    await probe.started[f"{execution_id}:a"].wait()
    result = await engine.wait_for(execution_id)
    assert result is not None and result.status is JobStatus.SUCCESS
    assert result.start_time is not None and result.start_time >= when
    assert result.metadata["scheduled_for"] == when.isoformat()


async def test_schedule_naive_time_is_wall_clock_in_job_zone(engine: NewExecutionEngine) -> None:
    tz = "Asia/Kolkata"
    local = (utc_now() + timedelta(hours=1)).astimezone(__import__("zoneinfo").ZoneInfo(tz))
    execution_id = await engine.schedule_job(job("n", timezone=tz), local.replace(tzinfo=None))
    due = await engine.store.due_scheduled_runs(utc_now() + timedelta(hours=2), 10)
    run = next(r for r in due if r.execution_id == execution_id)
    assert run.scheduled_for == local.replace(microsecond=local.microsecond)
    assert await engine.cancel_job(execution_id) is True
    assert await engine.store.count_scheduled_runs() == 0
    stored = await engine.store.get_execution(execution_id)
    assert stored is not None and stored.status is JobStatus.CANCELLED


async def test_schedule_refusals(engine: NewExecutionEngine) -> None:
    with pytest.raises(SchedulingError, match="does not exist in America/New_York"):
        await engine.schedule_job(
            job("g", timezone="America/New_York"), datetime(2030, 3, 10, 2, 30)
        )
    with pytest.raises(SchedulingError, match="in the past"):
        await engine.schedule_job(job("past"), utc_now() - timedelta(minutes=5))
    with pytest.raises(SchedulingError, match="disabled"):
        await engine.schedule_job(job("off", enabled=False), utc_now() + timedelta(hours=1))
    with pytest.raises(ConfigurationError) as info:
        await engine.schedule_job(
            job("bad", timezone="Nowhere/City"), utc_now() + timedelta(hours=1)
        )
    assert [e.field for e in info.value.errors] == ["timezone"]


async def test_ambiguous_naive_time_means_first_occurrence(engine: NewExecutionEngine) -> None:
    execution_id = await engine.schedule_job(
        job("amb", timezone="America/New_York"), datetime(2030, 11, 3, 1, 30)
    )
    due = await engine.store.due_scheduled_runs(
        datetime(2031, 1, 1, tzinfo=__import__("datetime").UTC), 10
    )
    run = next(r for r in due if r.execution_id == execution_id)
    assert run.scheduled_for.isoformat() == "2030-11-03T05:30:00+00:00"  # EDT, first 01:30


async def test_hard_limits_hold_for_50_jobs_over_3_timezones(
    engine: NewExecutionEngine, probe: Probe
) -> None:
    zones = ["UTC", "Europe/London", "America/New_York"]
    ids = []
    for n in range(50):
        tz = zones[n % 3]
        queue = engine._queue_for(tz)
        ids.append(
            await queue.add_immediate_job(
                job(f"bulk{n}", {"step_id": "w", "type": "probe", "seconds": 0.02}, timezone=tz)
            )
        )
    results = [await engine.wait_for(i) for i in ids]
    assert all(r is not None and r.status is JobStatus.SUCCESS for r in results)
    assert probe.peak_total <= engine.max_workers
    assert all(probe.peak_by_tz[tz] <= engine.queue_max_concurrent for tz in zones)
    # The limits were actually reached, so the test exercises them.
    assert probe.peak_total == engine.max_workers
    assert engine.peak_workers == engine.max_workers
    status = engine.get_queue_status()
    assert sum(status[tz]["completed"] for tz in zones) == 50
    assert all(status[tz]["peak_active"] == engine.queue_max_concurrent for tz in zones)


async def test_execute_now_waits_for_a_worker_slot(probe: Probe) -> None:
    eng = NewExecutionEngine(max_workers=1, queue_max_concurrent=1)
    await eng.start()
    try:
        first = await eng.submit_now(job("one", {"step_id": "hold", "type": "probe", "gate": "g1"}))
        await probe.started["hold"].wait()
        second = await eng.submit_now(job("two"))
        for _ in range(20):
            await asyncio.sleep(0)
        status = eng.get_execution_status(second.execution_id)
        assert status is not None and status["status"] == "pending"
        probe.gates["g1"].set()
        assert (await asyncio.shield(first.done)).success
        assert (await asyncio.shield(second.done)).success
        assert eng.peak_workers == 1 and probe.peak_total == 1
    finally:
        await eng.stop()


async def test_stop_without_waiting_cancels_and_records(probe: Probe) -> None:
    store = InMemoryExecutionStore()
    eng = NewExecutionEngine(store=store)
    await eng.start()
    execution = await eng.submit_now(
        job("s", {"step_id": "hold", "type": "probe", "gate": "never"})
    )
    await probe.started["hold"].wait()
    await eng.stop(wait_for_jobs=False)
    stored = await store.get_execution(execution.execution_id)
    assert stored is not None and stored.status is JobStatus.CANCELLED
    assert stored.steps[0].status is StepStatus.CANCELLED
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("execution:")]


async def test_stop_waiting_lets_jobs_finish(probe: Probe) -> None:
    eng = NewExecutionEngine()
    await eng.start()
    execution = await eng.submit_now(job("w", {"step_id": "hold", "type": "probe", "gate": "open"}))
    await probe.started["hold"].wait()
    stopper = asyncio.create_task(eng.stop(wait_for_jobs=True), name="stopper")
    await wait_until(lambda: eng.health_check is not None and not eng.is_running)
    assert not stopper.done()
    probe.gates["open"].set()
    await stopper
    assert execution.result.status is JobStatus.SUCCESS
    with pytest.raises(app.ExecutionEngineError):
        await eng.execute_job_now(job("late"))


async def test_health_and_queue_status(engine: NewExecutionEngine, probe: Probe) -> None:
    health = await engine.health_check()
    assert health["healthy"] is True and health["status"] == "running"
    assert health["max_workers"] == 4
    await engine.execute_job_now(job("h", timezone="Europe/Paris"))
    queues = engine.get_queue_status()
    assert queues["Europe/Paris"]["completed"] == 1
    assert set(queues["Europe/Paris"]) >= {
        "depth",
        "active",
        "max_concurrent",
        "completed",
        "failed",
    }


async def test_health_counts_pending_runs_up_to_a_limit(
    engine: NewExecutionEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "PENDING_COUNT_LIMIT", 3)
    later = utc_now() + timedelta(hours=1)
    for _ in range(3):
        await engine.schedule_job(job("p"), later)
    health = await engine.health_check()
    assert (health["scheduled_pending"], health["scheduled_pending_capped"]) == (3, False)
    await engine.schedule_job(job("p"), later)
    health = await engine.health_check()
    assert (health["scheduled_pending"], health["scheduled_pending_capped"]) == (3, True)


async def test_parameter_reference_between_steps(engine: NewExecutionEngine) -> None:
    result = await engine.execute_job_now(
        job(
            "ref",
            {"step_id": "count", "type": "probe", "output": {"rows": [{"n": 42}]}},
            {
                "step_id": "use",
                "type": "probe",
                "parameters": {"n": {"$from": "steps.count.rows[0].n"}},
            },
        )
    )
    assert result.success and result.steps[1].output == "{'n': 42}"
    bad = await engine.execute_job_now(
        job(
            "badref",
            {
                "step_id": "use",
                "type": "probe",
                "parameters": {"n": {"$from": "steps.nope.rows[0]"}},
            },
        )
    )
    assert bad.status is JobStatus.FAILED
    assert "bad parameter reference" in (bad.steps[0].error_message or "")


async def test_standalone_queue(probe: Probe) -> None:
    queue = TimezoneJobQueue("Pacific/Chatham", max_concurrent=2)
    await queue.start()
    try:
        execution_id = await queue.add_immediate_job(job("q", timezone="Pacific/Chatham"))
        result = await queue.engine.wait_for(execution_id)
        assert result is not None and result.success
        assert queue.get_status()["completed"] == 1
        assert queue.get_queue_depth() == 0 and queue.get_active_count() == 0
    finally:
        await queue.stop()


def test_spec_timeout_error_is_builtin_timeout_error() -> None:
    with pytest.raises(TimeoutError):
        raise app.TimeoutError("x")
    assert issubclass(app.TimeoutError, app.ExecutionEngineError)


class HeldFinalWriteStore(InMemoryExecutionStore):
    """Holds the final (durable, terminal) write of job ``held`` until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.holding = asyncio.Event()

    async def record_job(self, result: Any, *, durable: bool = True) -> None:
        if result.job_id == "held" and result.status.is_terminal:
            self.holding.set()
            await self.release.wait()
        await super().record_job(result, durable=durable)


async def test_a_worker_slot_is_free_while_the_final_record_is_written(probe: Probe) -> None:
    store = HeldFinalWriteStore()
    eng = NewExecutionEngine(max_workers=1, queue_max_concurrent=1, store=store)
    await eng.start()
    try:
        first = asyncio.create_task(eng.execute_job_now(job("held")))
        await store.holding.wait()  # its step is done, its final write is held
        assert not first.done()
        second = await eng.execute_job_now(job("next", {"step_id": "b", "type": "probe"}))
        assert second.status is JobStatus.SUCCESS  # ran in the slot the first one gave back
        assert probe.peak_total == 1
        store.release.set()
        assert (await first).status is JobStatus.SUCCESS
        stored = await store.get_execution((await first).execution_id)
        assert stored is not None and stored.status is JobStatus.SUCCESS
    finally:
        store.release.set()
        await eng.stop()


async def test_which_writes_are_durable_before_the_job_goes_on(probe: Probe) -> None:
    store = RecordingStore()
    eng = NewExecutionEngine(max_workers=2, store=store, poll_interval_seconds=0.05)
    await eng.start()
    try:
        # Execute-now: the caller waits for the result; only the final write must commit.
        now = await eng.execute_job_now(job("now"))
        assert store.durable[now.execution_id] == [
            ("pending", False),
            ("running", False),
            ("success", True),
        ]
        # Started without waiting: its id is handed out, so its PENDING row commits first.
        started = await eng.submit_now(job("bg"))
        await eng.wait_for(started.execution_id)
        assert store.durable[started.execution_id][0] == ("pending", True)
        # A claimed scheduled run is on record as handed to its queue before it starts:
        # after a crash it is recorded interrupted instead of being run again.
        execution_id = await eng.schedule_job(job("sched"), utc_now() + timedelta(milliseconds=50))
        await wait_until(lambda: ("success", True) in store.durable.get(execution_id, []))
        assert store.durable[execution_id] == [
            ("pending", True),
            ("dispatched", True),
            ("running", False),
            ("success", True),
        ]
    finally:
        await eng.stop()


async def test_recent_results_kept_in_memory_are_bounded_by_their_text(probe: Probe) -> None:
    eng = NewExecutionEngine(max_workers=2, recent_max_chars=150)
    await eng.start()
    try:
        big = {"step_id": "a", "type": "probe", "output": "x" * 100}
        first = await eng.execute_job_now(job("r1", big))
        assert eng.get_execution_status(first.execution_id) is not None
        second = await eng.execute_job_now(job("r2", big))
        # 200 characters would not fit: the older result left memory ...
        assert eng.get_execution_status(first.execution_id) is None
        status = eng.get_execution_status(second.execution_id)
        assert status is not None and status["status"] == "success"
        # ... and is still served from the store.
        stored = await eng.get_execution(first.execution_id)
        assert stored is not None and stored["status"] == "success"
    finally:
        await eng.stop()


class StepClock:
    """A clock that moves only when told, counting how often it is read."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.reads = 0

    def __call__(self) -> datetime:
        self.reads += 1
        return self.now


async def test_a_run_handed_over_early_still_starts_at_its_time(probe: Probe) -> None:
    clock = StepClock(utc_now())
    store = RecordingStore()
    eng = NewExecutionEngine(max_workers=2, store=store, clock=clock, poll_interval_seconds=0.05)
    await eng.start()
    try:
        due = clock.now + timedelta(milliseconds=10)  # within the 20 ms hand-over lead
        execution_id = await eng.schedule_job(job("early"), due)
        # Handed over (durably marked) ahead of its time ...
        await wait_until(lambda: ("dispatched", True) in store.durable.get(execution_id, []))
        reads = clock.reads
        await wait_until(lambda: clock.reads >= reads + 5)  # it keeps asking the time ...
        assert probe.runs["a"] == 0  # ... and does not start before the clock reaches it
        clock.now = due
        await probe.started[f"{execution_id}:a"].wait()
        result = await eng.wait_for(execution_id)
        assert result is not None and result.start_time == due
    finally:
        await eng.stop()
