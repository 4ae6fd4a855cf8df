"""JobRunner: runs one execution's attempts and steps, records progress in the store.

Semantics (ARCHITECTURE.md, "Execution model", and README "Job flow"): an attempt starts at
the first step (or the run's ``start_step_id``) and follows each step's routing:
``on_success`` (default ``next``) and ``on_failure`` (default ``quit_failure``, ``next``
with ``continue_on_failure``), each ``next``, ``quit_success``, ``quit_failure`` or
``{"goto": step_id}``. A failed or timed-out step is first run again ``retry_attempts``
times, ``retry_interval_seconds`` apart; only then does its ``on_failure`` apply. Falling
off the end after ``next`` ends the attempt SUCCESS, or PARTIAL_SUCCESS when a failure was
routed on with ``next``; ``quit_success`` ends it SUCCESS even after a failure. Steps never
reached are SKIPPED. An attempt that runs more than the job's ``max_step_runs`` steps fails
naming the loop. The job's ``timeout_seconds`` ends an attempt TIMEOUT and stops the running
step; ``max_retries`` re-runs a FAILED or TIMEOUT attempt after ``retry_delay_seconds``
(doubled each time with ``retry_exponential_backoff``), the job being RETRYING in between.
With step caching on, a retry resumes at the step that failed: a step that succeeded in an
earlier attempt of the same execution is not run again the first time the new attempt
reaches it (its output is reused). Every attempt, with every step run, is kept in
``result.attempts``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.domain import flow
from app.domain.enums import JobStatus, StepStatus
from app.domain.errors import ConfigurationError, StepExecutionError
from app.domain.models import (
    AttemptRecord,
    JobDefinition,
    JobExecutionResult,
    StepExecutionResult,
)
from app.domain.records import sanitize_fields
from app.domain.timeutil import utc_now
from app.engine.events import EventPublishingStore
from app.engine.execution_log import log_retry
from app.engine.ports import ExecutionStore
from app.steps.base import ExecutionStep
from app.steps.context import ExecutionContext
from app.steps.factory import StepFactory
from app.steps.outputs import restore_output

log = logging.getLogger("app.engine.runner")

MAX_RETRY_DELAY_SECONDS = 3600.0


@dataclass
class Execution:
    """One execution the engine knows about while it is queued or running."""

    execution_id: str
    job: JobDefinition
    trigger: str
    context: ExecutionContext
    result: JobExecutionResult
    done: asyncio.Future[JobExecutionResult]
    scheduled_for: datetime | None = None
    requested_by: str | None = None
    task: asyncio.Task[JobExecutionResult] | None = None
    current_step_obj: ExecutionStep | None = field(default=None, repr=False)
    serial: bool = False
    recorded_skips: set[tuple[int, str]] = field(default_factory=set, repr=False)
    release: Callable[[], None] | None = field(default=None, repr=False)
    #: A manual run's choices: the step to start at, and the logical date of its tokens.
    start_step_id: str | None = None
    logical_date: str | None = None
    #: A recovery retry: the steps the interrupted execution finished, reused (not run
    #: again) the first time they are reached, as a job-level retry reuses them.
    resume: dict[str, StepExecutionResult] = field(default_factory=dict, repr=False)

    def release_slots(self) -> None:
        """Give back the concurrency slots this execution holds: its work is over and only
        its final record is left to write (the next job need not wait for that commit).
        Idempotent."""
        release, self.release = self.release, None
        if release is not None:
            release()

    def status_dict(self) -> dict[str, Any]:
        return status_dict(self.result, self.trigger, self.scheduled_for)

    def finished(self) -> FinishedExecution:
        """What is worth keeping once it ended (not its context, which holds every step's
        parsed output)."""
        return FinishedExecution(self.result, self.trigger, self.scheduled_for)


@dataclass(frozen=True)
class RunOptions:
    """How a manual run is steered (``POST /jobs/{job_id}/run`` with a body): the step it
    starts at, the logical date of its run tokens, whether it waits for the job's other
    serial runs (overlap ``queue``), and what is recorded about it in its metadata."""

    start_step_id: str | None = None
    logical_date: str | None = None
    serial: bool = False
    record: dict[str, Any] = field(default_factory=dict)

    def apply(self, execution: Execution) -> None:
        execution.start_step_id = self.start_step_id
        execution.logical_date = self.logical_date
        execution.serial = execution.serial or self.serial
        execution.result.metadata.update(self.record)


@dataclass(frozen=True)
class FinishedExecution:
    result: JobExecutionResult
    trigger: str
    scheduled_for: datetime | None

    def status_dict(self) -> dict[str, Any]:
        return status_dict(self.result, self.trigger, self.scheduled_for)


def status_dict(
    result: JobExecutionResult,
    trigger: str,
    scheduled_for: datetime | None,
) -> dict[str, Any]:
    data = result.to_dict()
    data["trigger"] = trigger
    data["scheduled_for"] = scheduled_for.isoformat() if scheduled_for else None
    return data


def retry_delay(job: JobDefinition, retry_number: int) -> float:
    """Seconds to wait before retry ``retry_number`` (1-based)."""
    delay = float(job.retry_delay_seconds)
    if job.retry_exponential_backoff:
        delay *= 2 ** (retry_number - 1)
    return min(delay, MAX_RETRY_DELAY_SECONDS)


class JobRunner:
    def __init__(
        self,
        store: ExecutionStore,
        *,
        enable_step_caching: bool = True,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = EventPublishingStore(store)  # live events of what it records
        self.enable_step_caching = enable_step_caching
        self.clock = clock

    async def run(self, execution: Execution) -> JobExecutionResult:
        """Run every attempt of ``execution``; never raises for job-level failures.

        A cancel requested through the context ends the job CANCELLED and returns normally.
        """
        job, result, ctx = execution.job, execution.result, execution.context
        result.start_time = self.clock()
        self._bind_run_tokens(execution)
        cached: dict[str, StepExecutionResult] = dict(execution.resume)
        for step_id, done in execution.resume.items():  # a recovery retry: resume after them
            ctx.set_step_output(step_id, restore_output(done))
        try:
            for attempt in range(job.max_retries + 1):
                ctx.attempt = attempt
                result.retry_count = attempt
                result.status = JobStatus.RUNNING
                result.steps = []
                result.error_message = None
                record = AttemptRecord(attempt, JobStatus.RUNNING, start_time=self.clock())
                record.steps = result.steps  # the live list: steps are added as they run
                result.attempts.append(record)
                await self._queue_write(self.store.record_job(result, durable=False))
                await self._run_attempt(execution, attempt, cached)
                self._close_attempt(execution, result.status, result.error_message)
                if result.status not in (JobStatus.FAILED, JobStatus.TIMEOUT):
                    break
                if attempt == job.max_retries:
                    break
                delay = retry_delay(job, attempt + 1)
                result.status = JobStatus.RETRYING
                result.metadata["next_retry_delay_seconds"] = delay
                await self._queue_write(self.store.record_job(result, durable=False))
                log_retry(job.job_id, execution.execution_id, attempt, result.error_message, delay)
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if not ctx.is_cancelled():
                self._close_attempt(
                    execution, JobStatus.CANCELLED, "cancelled: the engine was shut down"
                )
                await asyncio.shield(
                    self._finish(
                        execution, JobStatus.CANCELLED, "cancelled: the engine was shut down"
                    )
                )
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            await self._close_open_steps(execution, StepStatus.CANCELLED, "cancelled on request")
            reached = {step.step_id for step in result.steps}
            for config in job.steps:
                if str(config.get("step_id", "")) not in reached:
                    result.add_step_result(_skipped(config, ctx.attempt))
            await self._record_skipped(execution)
            self._close_attempt(execution, JobStatus.CANCELLED, "cancelled on request")
            await self._finish(execution, JobStatus.CANCELLED, "cancelled on request")
            return result
        await self._finish(execution, result.status, result.error_message)
        return result

    def _bind_run_tokens(self, execution: Execution) -> None:
        """What ``run.<token>`` and the ``JOBSCHEDULER_*`` variables tell the steps."""
        ctx, result = execution.context, execution.result
        ctx.trigger = execution.trigger
        ctx.scheduled_for = execution.scheduled_for or result.start_time
        ctx.logical_date = execution.logical_date
        result.metadata["logical_date"] = ctx.run_tokens()["logical_date"]

    def _close_attempt(self, execution: Execution, status: JobStatus, error: str | None) -> None:
        attempts = execution.result.attempts
        if not attempts or attempts[-1].end_time is not None:
            return
        record = attempts[-1]
        record.status = status
        record.error_message = error
        record.end_time = self.clock()

    async def _queue_write(self, write: Coroutine[Any, Any, None]) -> None:
        """A progress write (RUNNING, RETRYING, a step row) with ``durable=False``: the store
        queues it for its next batch and returns without waiting for the database, so it
        cannot be cut off half way. The job's final write is durable (``_persist``): it
        covers every progress write queued before it."""
        await write

    async def _persist(self, write: Coroutine[Any, Any, None]) -> None:
        """Run a store write to completion even if this task is cancelled meanwhile (a
        timeout or a cancel request), so rows are never half written or out of order."""
        task = asyncio.ensure_future(write)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await asyncio.gather(task, return_exceptions=True)
            raise

    async def _finish(self, execution: Execution, status: JobStatus, error: str | None) -> None:
        result = execution.result
        result.status = status
        result.error_message = error
        result.end_time = self.clock()
        if result.start_time is not None:
            result.duration_seconds = (result.end_time - result.start_time).total_seconds()
        result.metadata.pop("next_retry_delay_seconds", None)
        result.metadata.update(execution.context.execution_metadata)
        execution.release_slots()
        await self._persist(self.store.record_job(result))

    async def _run_attempt(
        self, execution: Execution, attempt: int, cached: dict[str, StepExecutionResult]
    ) -> None:
        job, result = execution.job, execution.result
        steps = job.steps
        record = result.attempts[-1]
        path = record.path
        result.metadata["path"] = path
        runs: dict[str, int] = {}  # step_id -> runs of it in this attempt (row key)
        reuse = dict(cached)  # a cached success is reused the first time the step is reached
        failed_soft = False
        index: int | None = _start_index(steps, execution.start_step_id)
        try:
            async with asyncio.timeout(job.timeout_seconds):
                while index is not None:
                    config = steps[index]
                    step_id = str(config.get("step_id", ""))
                    if len(path) >= job.max_step_runs:
                        loop = " -> ".join(repr(s) for s in flow.loop_of(path))
                        result.status = JobStatus.FAILED
                        result.error_message = (
                            f"stopped after max_step_runs={job.max_step_runs} step runs: the "
                            f"loop {loop} did not end"
                        )
                        break
                    path.append(step_id)
                    step_result = await self._run_routed_step(
                        execution, config, attempt, runs, reuse, cached
                    )
                    route = (
                        flow.on_success(config) if step_result.success else flow.on_failure(config)
                    )
                    if not step_result.success and route.action == flow.NEXT:
                        failed_soft = True
                    if route.action == flow.QUIT_SUCCESS:
                        result.status = JobStatus.SUCCESS
                        break
                    if route.action == flow.QUIT_FAILURE:
                        result.status = JobStatus.FAILED
                        result.error_message = (
                            f"step {step_id!r} {step_result.status.value}: "
                            f"{step_result.error_message or 'no error message'}"
                            if not step_result.success
                            else f"step {step_id!r} succeeded and routes to quit_failure"
                        )
                        break
                    index = flow.successor(steps, index, route)
                    if index is None:
                        result.status = (
                            JobStatus.PARTIAL_SUCCESS if failed_soft else JobStatus.SUCCESS
                        )
        except TimeoutError:
            # The job's own deadline: the running step was stopped by the cancellation.
            result.status = JobStatus.TIMEOUT
            result.error_message = f"job timed out after {job.timeout_seconds}s"
            await self._close_open_steps(execution, StepStatus.TIMEOUT, result.error_message)
        finally:
            # Steps never reached are SKIPPED (also after a cancel; recorded by the caller then).
            reached = set(path)
            for config in steps:
                if str(config.get("step_id", "")) not in reached:
                    result.add_step_result(_skipped(config, attempt))
            await self._record_skipped(execution)

    async def _run_routed_step(
        self,
        execution: Execution,
        config: dict[str, Any],
        attempt: int,
        runs: dict[str, int],
        reuse: dict[str, StepExecutionResult],
        cached: dict[str, StepExecutionResult],
    ) -> StepExecutionResult:
        """One visit of a step: its run and its own retries (``retry_attempts``, a timeout
        counting as a failure), each recorded as a step run of its own."""
        step_id = str(config.get("step_id", ""))
        retries = _int_field(config, "retry_attempts")
        interval = _float_field(config, "retry_interval_seconds")
        step_result: StepExecutionResult | None = None
        for step_attempt in range(retries + 1):
            if step_attempt:
                await asyncio.sleep(interval)
            run = runs.get(step_id, 0)
            runs[step_id] = run + 1
            step_result = await self._run_step(
                execution, config, attempt, reuse, cached, run=run, step_attempt=step_attempt
            )
            if step_result.success:
                break
        assert step_result is not None
        return step_result

    async def _run_step(
        self,
        execution: Execution,
        config: dict[str, Any],
        attempt: int,
        reuse: dict[str, StepExecutionResult],
        cached: dict[str, StepExecutionResult],
        *,
        run: int,
        step_attempt: int,
    ) -> StepExecutionResult:
        result = execution.result
        step_id = str(config.get("step_id", ""))
        previous = reuse.pop(step_id, None) if self.enable_step_caching else None
        numbers = {"attempt": attempt, "run": run, "step_attempt": step_attempt}
        if previous is not None:
            reused = dataclasses.replace(
                previous,
                metadata={
                    **previous.metadata,
                    "cached": True,
                    "cached_from_attempt": previous.metadata.get("attempt"),
                    **numbers,
                },
            )
            result.add_step_result(reused)
            await self._queue_write(
                self.store.record_step(execution.execution_id, reused, attempt, durable=False)
            )
            return reused
        running = StepExecutionResult(
            step_id=step_id,
            step_name=str(config.get("step_name") or step_id),
            step_type=str(config.get("type", "")),
            status=StepStatus.RUNNING,
            start_time=self.clock(),
            metadata=dict(numbers),
        )
        result.add_step_result(running)
        await self._queue_write(
            self.store.record_step(execution.execution_id, running, attempt, durable=False)
        )
        final = await self._execute_step(execution, config, running)
        final.metadata.setdefault("attempt", attempt)
        _replace_step(result.steps, running, final)
        await self._queue_write(
            self.store.record_step(execution.execution_id, final, attempt, durable=False)
        )
        if final.success:
            cached[step_id] = final
        return final

    async def _execute_step(
        self, execution: Execution, config: dict[str, Any], running: StepExecutionResult
    ) -> StepExecutionResult:
        """Run one step; step-level failures become a finished result, never an exception.

        Job-level cancellation and the job timeout propagate (``running`` stays RUNNING and
        the caller closes it).
        """
        try:
            step = StepFactory.create_step(config, execution.context)
        except (ConfigurationError, ValueError) as exc:
            return _ended(running, StepStatus.FAILED, f"invalid step: {exc}", self.clock())
        execution.current_step_obj = step
        timeout = step.get_timeout()
        try:
            with self.store.hub.capture_output(execution.execution_id, running):
                async with asyncio.timeout(timeout) as deadline:
                    outcome = await step.run()
        except TimeoutError:
            if not deadline.expired():
                raise
            return _ended(
                running, StepStatus.TIMEOUT, f"step timed out after {timeout}s", self.clock()
            )
        except StepExecutionError as exc:
            return _ended(running, StepStatus.FAILED, str(exc), self.clock())
        except ConfigurationError as exc:
            return _ended(running, StepStatus.FAILED, str(exc), self.clock())
        except Exception as exc:  # a bug in a step must not take the engine down
            log.exception("step %s of execution %s raised", running.step_id, execution.execution_id)
            return _ended(
                running,
                StepStatus.FAILED,
                f"internal error in step: {type(exc).__name__}: {exc}",
                self.clock(),
            )
        finally:
            execution.current_step_obj = None
        # Normalise what the step returned onto the row we track.
        outcome.step_id = running.step_id
        outcome.step_name = running.step_name
        outcome.step_type = running.step_type
        outcome.start_time = running.start_time
        if outcome.status in (StepStatus.RUNNING, StepStatus.PENDING):
            outcome.status = StepStatus.SUCCESS
        outcome.metadata = {**running.metadata, **outcome.metadata}
        # The same text whether read live or from the database (NUL, lone surrogates).
        sanitize_fields(outcome, ("output", "error_message"), outcome.metadata)
        outcome.finish(outcome.status, outcome.end_time or self.clock())
        return outcome

    async def _close_open_steps(self, execution: Execution, status: StepStatus, why: str) -> None:
        """End the step that was running when the job was stopped, and record the rest."""
        now = self.clock()
        attempt = execution.context.attempt
        for step in execution.result.steps:
            if step.status in (StepStatus.RUNNING, StepStatus.PENDING):
                step.error_message = why
                step.finish(status, now)
                await self._queue_write(
                    self.store.record_step(execution.execution_id, step, attempt, durable=False)
                )
        await self._record_skipped(execution)

    async def _record_skipped(self, execution: Execution) -> None:
        for step in execution.result.steps:
            key = (execution.context.attempt, step.step_id)
            if step.status is StepStatus.SKIPPED and key not in execution.recorded_skips:
                execution.recorded_skips.add(key)
                await self._queue_write(
                    self.store.record_step(
                        execution.execution_id, step, execution.context.attempt, durable=False
                    )
                )


def _replace_step(
    steps: list[StepExecutionResult], running: StepExecutionResult, final: StepExecutionResult
) -> None:
    """Put ``final`` where ``running`` is in ``steps``: found by identity from the end,
    where it was just added (``list.index`` compared every earlier step field by field)."""
    for index in range(len(steps) - 1, -1, -1):
        if steps[index] is running:
            steps[index] = final
            return
    raise ValueError(f"step {running.step_id!r} is not in the execution's steps")


def _ended(
    step: StepExecutionResult, status: StepStatus, error: str, now: datetime
) -> StepExecutionResult:
    step.error_message = error
    step.finish(status, now)
    return step


def _skipped(config: dict[str, Any], attempt: int) -> StepExecutionResult:
    step_id = str(config.get("step_id", ""))
    return StepExecutionResult(
        step_id=step_id,
        step_name=str(config.get("step_name") or step_id),
        step_type=str(config.get("type", "")),
        status=StepStatus.SKIPPED,
        metadata={"attempt": attempt},
    )


def _start_index(steps: list[dict[str, Any]], start_step_id: str | None) -> int | None:
    if not steps:
        return None
    if start_step_id is None:
        return 0
    for index, config in enumerate(steps):
        if config.get("step_id") == start_step_id:
            return index
    raise ConfigurationError(f"start_step_id {start_step_id!r} is not a step of the job")


def _int_field(config: dict[str, Any], name: str) -> int:
    value = config.get(name, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _float_field(config: dict[str, Any], name: str) -> float:
    value = config.get(name, 0)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    return float(value) if ok else 0.0
