"""ModernJobAPI: the service the v2 routes call (spec).

The async methods (``execute``, ``submit``, ``schedule``, ``get_execution``, ``cancel``,
``list_executions``, ``status``, ``step_types``, ``readiness``) are what the routes await;
they return response models and raise domain errors, which ``app.api.errors`` maps to HTTP.
Stored jobs have their own service, ``stored_jobs`` (``app.api.stored_jobs``); input is
parsed and checked by ``parser`` (``app.api.job_input``).

The spec's synchronous methods (``execute_job_immediately``, ``schedule_job``,
``get_execution_status``, ``get_available_step_types``) work from plain synchronous code with
no running event loop, through ``app.api.sync_bridge``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from datetime import datetime
from typing import Any, TypeVar

from pydantic import ValidationError

from app.api.batch_schemas import ScheduleBatchCreate, ScheduleBatchItemRead, ScheduleBatchRead
from app.api.deps import build_engine, load_settings, prepare_database
from app.api.errors import (
    InvalidRequestError,
    NotReadyError,
    PermissionDeniedError,
    configuration_error,
    domain_field_errors,
)
from app.api.job_input import (
    DEFAULT_MAX_SCRIPT_CHARS,
    DEFAULT_MAX_STEPS_PER_JOB,
    DEFAULT_MAX_TIMEOUT_SECONDS,
    JobInput,
    JobParser,
)
from app.api.jobs_schemas import ExecutionPageRead
from app.api.notifications_schemas import OverdueJobRead
from app.api.observability import notification_policy, schedule_health
from app.api.responses import StatusUrl, default_status_url, execution_read
from app.api.schemas import (
    ClusterRead,
    EngineHealthRead,
    EngineStatusRead,
    ExecutionAcceptedRead,
    ExecutionRead,
    ProblemFieldError,
    QueueStatusRead,
    ReadinessRead,
    ScheduleCreate,
    ScheduleRead,
    StepTypeListRead,
    StepTypeRead,
    WorkerLimitsRead,
)
from app.api.stored_jobs import StoredJobService
from app.api.sync_bridge import SyncBridge
from app.domain.enums import JobStatus
from app.domain.errors import (
    CancellationError,
    ConfigurationError,
    DisabledJobError,
    ExecutionEngineError,
    ExecutionFinishedError,
    ExecutionNotFoundError,
    FieldError,
    SchedulingError,
)
from app.domain.models import JobDefinition, JobExecutionResult
from app.domain.records import ExecutionQuery
from app.domain.timeutil import parse_iso, resolve_local, to_local
from app.engine.engine import NewExecutionEngine
from app.settings import Settings
from app.steps.factory import StepFactory

T = TypeVar("T")
log = logging.getLogger("app.api")

DEFAULT_SHUTDOWN_GRACE_SECONDS = 30.0


class ModernJobAPI:
    """Modern job API with timezone-based execution"""

    def __init__(
        self,
        engine: NewExecutionEngine | None = None,
        *,
        settings: Settings | None = None,
        max_steps_per_job: int | None = None,
        shutdown_grace_seconds: float | None = None,
        max_script_chars: int | None = None,
        max_timeout_seconds: int | None = None,
    ) -> None:
        """Initialize modern job API

        Args:
            engine: the engine to drive; by default one is built from ``settings``
                (default: ``Settings()``, i.e. the V2_* environment) with its database store,
                migrated on start when ``V2_AUTO_MIGRATE``.
            settings: where limits and the shutdown grace come from.
            max_steps_per_job, shutdown_grace_seconds, max_script_chars,
                max_timeout_seconds: override the settings' values.

        Paths (``script_path``, ``working_directory``) are checked against the engine's
        ``resources.script_roots`` (``V2_SCRIPT_ROOTS`` for an engine built from settings).
        """
        self._own_settings: Settings | None = None
        if engine is None:
            settings = settings or load_settings()
            engine = build_engine(settings)
            self._own_settings = settings
        self.engine = engine
        self.max_steps_per_job = max_steps_per_job or (
            settings.max_steps_per_job if settings else DEFAULT_MAX_STEPS_PER_JOB
        )
        self.shutdown_grace_seconds = (
            shutdown_grace_seconds
            if shutdown_grace_seconds is not None
            else (settings.shutdown_grace_seconds if settings else DEFAULT_SHUTDOWN_GRACE_SECONDS)
        )
        self.max_script_chars = max_script_chars or (
            settings.max_script_chars if settings else DEFAULT_MAX_SCRIPT_CHARS
        )
        self.max_timeout_seconds = max_timeout_seconds or (
            settings.max_timeout_seconds if settings else DEFAULT_MAX_TIMEOUT_SECONDS
        )
        #: Parses and checks job definitions against this server.
        self.parser = JobParser(
            resources=engine.resources,
            default_timeout=engine.default_timeout,
            max_steps_per_job=self.max_steps_per_job,
            max_script_chars=self.max_script_chars,
            max_timeout_seconds=self.max_timeout_seconds,
            notifications=notification_policy(settings),
        )
        #: Health of the stored jobs' schedules.
        self.health = schedule_health(engine, settings.failing_after if settings else 3)
        #: Stored job definitions (``/api/v2/jobs/...``).
        self.stored_jobs = StoredJobService(engine, self.parser, self.health)
        self._bridge = SyncBridge()

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the execution engine (on the running event loop)"""
        self._bridge.attach(asyncio.get_running_loop())
        if self._own_settings is not None:
            await prepare_database(self._own_settings)
        await self.engine.start()
        if not self.parser.pwsh_available:
            log.warning("%s", self.parser.pwsh_missing())

    async def stop(self) -> None:
        """Stop the execution engine: running jobs get ``shutdown_grace_seconds`` to finish,
        then they are cancelled and recorded CANCELLED."""
        await self.engine.stop(wait_for_jobs=True, timeout=self.shutdown_grace_seconds)

    def close(self) -> None:
        """Stop the engine and the background loop started for synchronous use, if any."""
        self._bridge.close(self.stop)

    def __enter__(self) -> ModernJobAPI:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- async service methods (the routes call these) -------------------------------------
    async def execute(self, job: JobInput, *, requested_by: str | None = None) -> ExecutionRead:
        """Run ``job`` now and wait for its result.

        ``requested_by``: the API key id that asked (recorded; decides which connections the
        job may use, ``PermissionDeniedError`` otherwise).
        """
        definition = self.parser.parse(job)
        self.parser.check_connection_access(definition, requested_by)
        result = await self.engine.execute_job_now(definition, requested_by=requested_by)
        return execution_read(result.to_dict())

    async def submit(
        self,
        job: JobInput,
        status_url: StatusUrl = default_status_url,
        *,
        requested_by: str | None = None,
    ) -> ExecutionAcceptedRead:
        """Start ``job`` now without waiting for it to end."""
        definition = self.parser.parse(job)
        self.parser.check_connection_access(definition, requested_by)
        if not definition.enabled:
            raise DisabledJobError(definition.job_id)
        execution = await self.engine.submit_now(definition, requested_by=requested_by)
        return ExecutionAcceptedRead(
            execution_id=execution.execution_id,
            status=execution.result.status,
            status_url=status_url(execution.execution_id),
        )

    async def schedule(
        self,
        request: ScheduleCreate | Mapping[str, Any],
        status_url: StatusUrl = default_status_url,
        *,
        requested_by: str | None = None,
    ) -> ScheduleRead:
        """Schedule a job; a naive time is wall-clock time in the job's timezone."""
        if not isinstance(request, ScheduleCreate):
            try:
                request = ScheduleCreate.model_validate(dict(request))
            except ValidationError as exc:
                raise configuration_error(exc) from None
        job = self.parser.parse(request.job, prefix="job")
        self.parser.check_connection_access(job, requested_by, prefix="job")
        instant = _scheduled_instant(request.scheduled_time, job.timezone)
        execution_id = await self.engine.schedule_job(job, instant, requested_by=requested_by)
        return ScheduleRead(
            execution_id=execution_id,
            job_id=job.job_id,
            status=JobStatus.PENDING,
            scheduled_time_utc=instant,
            scheduled_time_local=_local(instant, job.timezone),
            timezone=job.timezone,
            status_url=status_url(execution_id),
        )

    async def schedule_batch(
        self,
        request: ScheduleBatchCreate,
        status_url: StatusUrl = default_status_url,
        *,
        requested_by: str | None = None,
    ) -> ScheduleBatchRead:
        """Schedule many one-off runs, each item checked as ``schedule`` checks one; the
        accepted ones are written in one transaction.

        An item that is not a ``ScheduleCreate`` as the contract says (a missing or unknown
        field, a wrong type, a job whose own rules it breaks) refuses the whole request,
        whatever ``atomic`` says: ``ConfigurationError`` naming every such item's fields.
        What depends on this server and the time (connections and the key's access to
        them, script roots, a time in the past or in a DST gap, a disabled job) is checked
        next. ``atomic``: one bad item refuses the request (``ConfigurationError``, or
        ``PermissionDeniedError`` when connection access is all that is wrong), nothing
        written; otherwise each bad item is answered with its errors."""
        items: dict[int, ScheduleCreate] = {}
        malformed: dict[int, list[FieldError]] = {}
        for index, raw in enumerate(request.items):
            try:
                items[index] = ScheduleCreate.model_validate(raw)
            except ValidationError as exc:
                malformed[index] = _under(f"items[{index}]", configuration_error(exc))
        accepted: list[tuple[int, JobDefinition, datetime]] = []
        refused: dict[int, list[FieldError]] = {}
        only_permission = True
        for index, item in items.items():
            try:
                accepted.append((index, *self._batch_item(item, requested_by)))
            except (ConfigurationError, SchedulingError, PermissionDeniedError) as exc:
                only_permission = only_permission and isinstance(exc, PermissionDeniedError)
                refused[index] = _under(f"items[{index}]", exc)
        if malformed or (refused and request.atomic):
            bad = {**refused, **malformed}  # every problem of the request at once
            errors = [e for index in sorted(bad) for e in bad[index]]
            if only_permission and not malformed:
                raise PermissionDeniedError(
                    "the API key may not use a connection that these items name", errors
                )
            raise ConfigurationError(errors)
        ids = await self.engine.schedule_instants(
            [(job, instant) for _, job, instant in accepted], requested_by=requested_by
        )
        answers: dict[int, ScheduleBatchItemRead] = {
            index: ScheduleBatchItemRead(
                index=index,
                scheduled=False,
                errors=[ProblemFieldError(field=e.field, message=e.message) for e in errors],
            )
            for index, errors in refused.items()
        }
        for (index, job, instant), execution_id in zip(accepted, ids, strict=True):
            answers[index] = ScheduleBatchItemRead(
                index=index,
                scheduled=True,
                execution_id=execution_id,
                job_id=job.job_id,
                status=JobStatus.PENDING,
                scheduled_time_utc=instant,
                scheduled_time_local=_local(instant, job.timezone),
                timezone=job.timezone,
                status_url=status_url(execution_id),
            )
        return ScheduleBatchRead(
            atomic=request.atomic,
            scheduled=len(accepted),
            failed=len(refused),
            items=[answers[i] for i in range(len(request.items))],
        )

    def _batch_item(
        self, item: ScheduleCreate, requested_by: str | None
    ) -> tuple[JobDefinition, datetime]:
        """One item of a batch checked as ``schedule`` checks its request: the job and the
        instant, or the error (field paths relative to the item)."""
        job = self.parser.parse(item.job, prefix="job")
        self.parser.check_connection_access(job, requested_by, prefix="job")
        instant = _scheduled_instant(item.scheduled_time, job.timezone)
        _local(instant, job.timezone)
        self.engine.check_schedulable(job, instant)
        return job, instant

    async def get_execution(self, execution_id: str) -> ExecutionRead:
        """A live, recent or recorded execution; ``ExecutionNotFoundError`` if unknown."""
        data = await self.engine.get_execution(execution_id)
        if data is None:
            raise ExecutionNotFoundError(execution_id)
        return execution_read(data)

    async def cancel(self, execution_id: str, *, cancelled_by: str | None = None) -> ExecutionRead:
        """Cancel a scheduled, queued or running execution; the execution afterwards.

        ``cancelled_by`` (an API key id) is recorded in the execution's metadata.
        ``ExecutionNotFoundError`` if unknown, ``ExecutionFinishedError`` if it already ended.
        """
        current = await self.get_execution(execution_id)
        if current.status.is_terminal:
            raise ExecutionFinishedError(execution_id, current.status.value)
        if not await self.engine.cancel_job(execution_id, cancelled_by=cancelled_by):
            current = await self.get_execution(execution_id)
            if current.status.is_terminal:
                raise ExecutionFinishedError(execution_id, current.status.value)
            raise CancellationError(
                f"execution {execution_id!r} could not be cancelled while "
                f"{current.status.value}; try again"
            )
        return await self.get_execution(execution_id)

    async def list_executions(self, query: ExecutionQuery) -> ExecutionPageRead:
        """Recorded executions, newest first (served from the store)."""
        try:
            page = await self.engine.store.list_executions(query)
        except ConfigurationError as exc:  # a cursor that is not one of ours
            raise InvalidRequestError(exc.errors) from None
        return ExecutionPageRead(
            items=[execution_read(r.to_dict()) for r in page.items],
            next_cursor=page.next_cursor,
        )

    async def status(self) -> EngineStatusRead:
        """Engine health, every timezone queue and the running executions."""
        health = await self.engine.health_check()
        cluster = await self.engine.cluster_status()
        return EngineStatusRead(
            engine=EngineHealthRead.model_validate(health),
            queues={
                tz: QueueStatusRead.model_validate(queue)
                for tz, queue in self.engine.get_queue_status().items()
            },
            cluster_waiting_by_timezone=cluster["cluster_waiting_by_timezone"],
            active_executions=[execution_read(e) for e in self.engine.get_active_executions()],
            overdue_jobs=[
                OverdueJobRead.model_validate(o, from_attributes=True)
                for o in (await self.health.overdue() if self.health is not None else [])
            ],
        )

    async def cluster(self) -> ClusterRead:
        """The nodes sharing the database, and the cluster-wide queue depths."""
        status = await self.engine.cluster_status()
        engine = self.engine
        per_node = WorkerLimitsRead(
            max_workers=engine.max_workers, queue_max_concurrent=engine.queue_max_concurrent
        )
        live = max(1, sum(1 for n in status["nodes"] if n["alive"]))
        return ClusterRead(
            **status,
            per_node=per_node,
            cluster_totals=WorkerLimitsRead(
                max_workers=per_node.max_workers * live,
                queue_max_concurrent=per_node.queue_max_concurrent * live,
            ),
        )

    def step_types(self) -> StepTypeListRead:
        """Every registered step type with the JSON schema of its configuration, carrying
        this server's limits (V2_MAX_SCRIPT_CHARS, V2_MAX_TIMEOUT_SECONDS)."""
        out = []
        for step_type in StepFactory.get_available_step_types():
            schema = self.parser.server_schema(StepFactory.get_step_schema(step_type))
            out.append(
                StepTypeRead(
                    type=step_type,
                    title=schema.get("title"),
                    description=schema.get("description"),
                    config_schema=schema,
                )
            )
        return StepTypeListRead(step_types=out)

    async def readiness(self) -> ReadinessRead:
        """Ready when the engine runs and its store answers; ``NotReadyError`` otherwise."""
        health = await self.engine.health_check()
        if not health["healthy"]:
            reason = health.get("failure") or f"the engine is {health.get('status')}"
            raise NotReadyError(f"not ready: {reason}")
        warnings = [] if self.parser.pwsh_available else [self.parser.pwsh_missing()]
        return ReadinessRead(engine_running=True, store_reachable=True, warnings=warnings)

    # -- the spec's synchronous methods ------------------------------------------------------
    def execute_job_immediately(self, job_data: dict[str, Any]) -> dict[str, Any]:
        """
        Execute a job immediately and return the result

        Args:
            job_data: Job definition dictionary

        Returns:
            Execution result dictionary with success/error information
        """
        try:
            result = self._run_async(self._execute_result(job_data))
        except ExecutionEngineError as exc:
            return self._error_response(exc)
        return self._format_execution_response(result)

    def schedule_job(
        self, job_data: dict[str, Any], scheduled_time: datetime | str
    ) -> dict[str, Any]:
        """
        Schedule a job for future execution

        Args:
            job_data: Job definition dictionary
            scheduled_time: When to execute the job (aware: an instant; naive: wall-clock
                time in the job's timezone)

        Returns:
            Scheduling result dictionary
        """
        when = (
            scheduled_time.isoformat() if isinstance(scheduled_time, datetime) else scheduled_time
        )
        try:
            scheduled = self._run_async(self.schedule({"job": job_data, "scheduled_time": when}))
        except ExecutionEngineError as exc:
            return self._error_response(exc)
        return {"success": True, **scheduled.model_dump(mode="json")}

    def get_execution_status(self) -> dict[str, Any]:
        """Get status of all timezone queues (and the engine's health)"""
        try:
            status = self._run_async(self.status())
        except ExecutionEngineError as exc:
            return self._error_response(exc)
        return {"success": True, **status.model_dump(mode="json")}

    def get_available_step_types(self) -> dict[str, Any]:
        """Get list of available step types"""
        return {"success": True, **self.step_types().model_dump(mode="json")}

    def check_connection_access(
        self, job: JobDefinition, requested_by: str | None, *, prefix: str = ""
    ) -> None:
        """``PermissionDeniedError`` (403) for every step on a connection the key
        ``requested_by`` may not use (see ``JobParser.check_connection_access``)."""
        self.parser.check_connection_access(job, requested_by, prefix=prefix)

    # -- internal helpers (the spec's) ------------------------------------------------------
    def _parse_job_data(self, job_data: JobInput, *, prefix: str = "") -> JobDefinition:
        """Parse job data from API request into JobDefinition

        Validates like the HTTP API, then the domain rules, then the server's policy; every
        problem is reported in one ``ConfigurationError`` (see ``JobParser.parse``).
        """
        return self.parser.parse(job_data, prefix=prefix)

    def _format_execution_response(self, result: JobExecutionResult) -> dict[str, Any]:
        """Format JobExecutionResult into API response"""
        return execution_read(result.to_dict()).model_dump(mode="json")

    @staticmethod
    def _error_response(exc: ExecutionEngineError) -> dict[str, Any]:
        return {
            "success": False,
            "error": str(exc),
            "error_type": type(exc).__name__,
            "errors": [{"field": e.field, "message": e.message} for e in domain_field_errors(exc)],
        }

    async def _execute_result(self, job_data: JobInput) -> JobExecutionResult:
        job = self.parser.parse(job_data)
        self.parser.check_connection_access(job, None)
        return await self.engine.execute_job_now(job)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        """Ensure we have an event loop for async operations

        The loop the engine was started on when it is still running; otherwise a new loop in
        a daemon thread owned by this object, with the engine started on it.
        """
        return self._bridge.ensure_loop(self.engine.start)

    def _run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run async function in sync context

        Runs ``coro`` on the engine's loop and waits for it. Calling this on that loop's own
        thread would block the loop it waits for, so that raises ``RuntimeError``: await the
        async method instead.
        """
        return self._bridge.run(coro, self.engine.start)


def _scheduled_instant(text: str, timezone: str) -> datetime:
    try:
        when = parse_iso(text)
    except ValueError:
        raise SchedulingError(
            f"{text!r} is not an ISO 8601 date-time", field="scheduled_time"
        ) from None
    try:
        return resolve_local(when, timezone)
    except OverflowError:
        raise SchedulingError(
            f"{text!r} is outside the supported range of dates", field="scheduled_time"
        ) from None


def _local(instant: datetime, timezone: str) -> datetime:
    try:
        return to_local(instant, timezone)
    except OverflowError:
        raise SchedulingError(
            f"{instant.isoformat()} is outside the supported range of dates in {timezone}",
            field="scheduled_time",
        ) from None


def _under(prefix: str, exc: ExecutionEngineError) -> list[FieldError]:
    """The field errors of ``exc`` with their paths under ``prefix`` (``items[3]``)."""
    return [
        FieldError(f"{prefix}.{e.field}" if e.field else prefix, e.message)
        for e in (domain_field_errors(exc) or [FieldError("", str(exc))])
    ]
