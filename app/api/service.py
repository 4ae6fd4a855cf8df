"""ModernJobAPI: the service the v2 routes call, and ``create_modern_job_routes`` (spec).

The async methods (``execute``, ``submit``, ``schedule``, ``get_execution``, ``cancel``,
``status``, ``step_types``, ``readiness``) are what the routes await; they return response
models and raise domain errors, which ``app.api.errors`` maps to HTTP.

The spec's synchronous methods (``execute_job_immediately``, ``schedule_job``,
``get_execution_status``, ``get_available_step_types``) work from plain synchronous code with
no running event loop: the engine lives on one event loop (the server's, when started by
the FastAPI lifespan, or else a loop the API runs in a background thread of its own), and
``_run_async`` hands each coroutine to that loop and waits for its result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import FastAPI
from pydantic import ValidationError

from app.api.errors import (
    NotReadyError,
    PermissionDeniedError,
    configuration_error,
    domain_field_errors,
    install_problem_handling,
    prefixed,
)
from app.api.openapi import install_openapi
from app.api.schemas import (
    EngineHealthRead,
    EngineStatusRead,
    ExecutionAcceptedRead,
    ExecutionRead,
    JobCreate,
    QueueStatusRead,
    ReadinessRead,
    ScheduleCreate,
    ScheduleRead,
    StepTypeListRead,
    StepTypeRead,
)
from app.domain.enums import JobStatus
from app.domain.errors import (
    CancellationError,
    ConfigurationError,
    EngineNotRunningError,
    ExecutionEngineError,
    ExecutionFinishedError,
    ExecutionNotFoundError,
    FieldError,
    SchedulingError,
)
from app.domain.models import JobDefinition, JobExecutionResult
from app.domain.timeutil import parse_iso, resolve_local, to_local
from app.engine.engine import NewExecutionEngine
from app.steps.factory import StepFactory
from app.steps.paths import confine_step_paths

if TYPE_CHECKING:
    from app.settings import Settings

T = TypeVar("T")
log = logging.getLogger("app.api")

DEFAULT_MAX_STEPS_PER_JOB = 100
DEFAULT_SHUTDOWN_GRACE_SECONDS = 30.0
DEFAULT_MAX_SCRIPT_CHARS = 100_000
DEFAULT_MAX_TIMEOUT_SECONDS = 86_400
#: Step fields whose length V2_MAX_SCRIPT_CHARS limits.
SCRIPT_FIELDS = ("query", "script")

JobInput = JobCreate | Mapping[str, Any]
StatusUrl = Callable[[str], str]


def default_status_url(execution_id: str) -> str:
    """Path of an execution's status resource (the routes pass absolute URLs)."""
    return f"/api/v2/executions/{execution_id}"


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
            from app.api.deps import build_engine, load_settings

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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the execution engine (on the running event loop)"""
        self._loop = asyncio.get_running_loop()
        if self._own_settings is not None:
            from app.api.deps import prepare_database

            await prepare_database(self._own_settings)
        await self.engine.start()

    async def stop(self) -> None:
        """Stop the execution engine: running jobs get ``shutdown_grace_seconds`` to finish,
        then they are cancelled and recorded CANCELLED."""
        await self.engine.stop(wait_for_jobs=True, timeout=self.shutdown_grace_seconds)

    def close(self) -> None:
        """Stop the engine and the background loop started for synchronous use, if any."""
        with self._lock:
            loop, thread = self._loop, self._thread
            if thread is None or loop is None:
                return
            self._loop = self._thread = None
        try:
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(self.stop(), loop).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

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
        definition = self._parse_job_data(job)
        self.check_connection_access(definition, requested_by)
        result = await self.engine.execute_job_now(definition, requested_by=requested_by)
        return self._execution_read(result.to_dict())

    async def submit(
        self,
        job: JobInput,
        status_url: StatusUrl = default_status_url,
        *,
        requested_by: str | None = None,
    ) -> ExecutionAcceptedRead:
        """Start ``job`` now without waiting for it to end."""
        definition = self._parse_job_data(job)
        self.check_connection_access(definition, requested_by)
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
        job = self._parse_job_data(request.job, prefix="job")
        self.check_connection_access(job, requested_by, prefix="job")
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

    async def get_execution(self, execution_id: str) -> ExecutionRead:
        """A live, recent or recorded execution; ``ExecutionNotFoundError`` if unknown."""
        data = await self.engine.get_execution(execution_id)
        if data is None:
            raise ExecutionNotFoundError(execution_id)
        return self._execution_read(data)

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

    async def status(self) -> EngineStatusRead:
        """Engine health, every timezone queue and the running executions."""
        health = await self.engine.health_check()
        return EngineStatusRead(
            engine=EngineHealthRead.model_validate(health),
            queues={
                tz: QueueStatusRead.model_validate(queue)
                for tz, queue in self.engine.get_queue_status().items()
            },
            active_executions=[
                self._execution_read(e) for e in self.engine.get_active_executions()
            ],
        )

    def step_types(self) -> StepTypeListRead:
        """Every registered step type with the JSON schema of its configuration."""
        out = []
        for step_type in StepFactory.get_available_step_types():
            schema = StepFactory.get_step_schema(step_type)
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
        if not self.engine.is_running:
            reason = health.get("failure") or f"the engine is {health.get('status')}"
            raise NotReadyError(f"not ready: {reason}")
        if not health.get("store_reachable"):
            raise NotReadyError("not ready: the execution store is unreachable")
        return ReadinessRead(engine_running=True, store_reachable=True)

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
        """``PermissionDeniedError`` (403) naming ``steps[i].connection_name`` for every step
        on a connection whose ``allowed_keys`` do not list ``requested_by``.

        Checked again when each SQL step runs. Unknown connection names are left to the
        step (it fails naming the known ones).
        """
        registry = self.engine.resources.connections
        known = set(registry.names())
        errors: list[FieldError] = []
        for i, step in enumerate(job.steps):
            name = step.get("connection_name")
            if not isinstance(name, str) or name not in known:
                continue
            config = registry.config(name)
            if not config.allows(requested_by):
                field = f"steps[{i}].connection_name"
                errors.append(
                    FieldError(
                        f"{prefix}.{field}" if prefix else field,
                        config.access_denied_message(requested_by),
                    )
                )
        if errors:
            raise PermissionDeniedError("; ".join(map(str, errors)), errors)

    # -- internal helpers -------------------------------------------------------------------
    def _parse_job_data(self, job_data: JobInput, *, prefix: str = "") -> JobDefinition:
        """Parse job data from API request into JobDefinition

        Validates like the HTTP API (strict types, known step types, limits) and then the
        domain rules, then the server's policy (script roots, script length, timeout
        ceiling); every problem is reported in one ``ConfigurationError``.
        """
        try:
            if isinstance(job_data, JobCreate):
                model = job_data
            else:
                model = JobCreate.model_validate(
                    dict(job_data) if isinstance(job_data, Mapping) else job_data
                )
        except ValidationError as exc:
            raise configuration_error(exc, prefix) from None
        data = model.model_dump(mode="json", exclude_unset=True)
        if data.get("timeout_seconds") is None:
            data["timeout_seconds"] = self.engine.default_timeout
        errors = _unstorable_values(model.model_dump(exclude_unset=True))
        if len(model.steps) > self.max_steps_per_job:
            errors.append(
                FieldError(
                    "steps",
                    f"at most {self.max_steps_per_job} steps per job (got {len(model.steps)})",
                )
            )
        try:
            if errors:
                raise ConfigurationError(errors)
            job = JobDefinition.from_dict(data)
            job.validate()
            policy = self._policy_errors(job)
            if policy:
                raise ConfigurationError(policy)
        except ConfigurationError as exc:
            raise (prefixed(exc, prefix) if prefix else exc) from None
        return job

    def _policy_errors(self, job: JobDefinition) -> list[FieldError]:
        """The server's limits on a valid job: paths inside V2_SCRIPT_ROOTS, query/script
        length (V2_MAX_SCRIPT_CHARS), timeouts (V2_MAX_TIMEOUT_SECONDS)."""
        errors: list[FieldError] = []
        ceiling = self.max_timeout_seconds
        if job.timeout_seconds > ceiling:
            errors.append(
                FieldError(
                    "timeout_seconds",
                    f"must be at most {ceiling} seconds (the server's V2_MAX_TIMEOUT_SECONDS)",
                )
            )
        roots = self.engine.resources.script_roots
        for i, step in enumerate(job.steps):
            where = f"steps[{i}]"
            timeout = step.get("timeout")
            if isinstance(timeout, int) and timeout > ceiling:
                errors.append(
                    FieldError(
                        f"{where}.timeout",
                        f"must be at most {ceiling} seconds (the server's V2_MAX_TIMEOUT_SECONDS)",
                    )
                )
            for name in SCRIPT_FIELDS:
                text = step.get(name)
                if isinstance(text, str) and len(text) > self.max_script_chars:
                    errors.append(
                        FieldError(
                            f"{where}.{name}",
                            f"is {len(text)} characters long; the server accepts at most "
                            f"{self.max_script_chars} (V2_MAX_SCRIPT_CHARS)",
                        )
                    )
            working_directory, script_path = step.get("working_directory"), step.get("script_path")
            if isinstance(working_directory, str) or isinstance(script_path, str):
                _, _, problems = confine_step_paths(
                    working_directory if isinstance(working_directory, str) else None,
                    script_path if isinstance(script_path, str) else None,
                    roots,
                    prefix=where,
                )
                errors.extend(FieldError(p.field, p.message) for p in problems)
        return errors

    def _format_execution_response(self, result: JobExecutionResult) -> dict[str, Any]:
        """Format JobExecutionResult into API response"""
        return self._execution_read(result.to_dict()).model_dump(mode="json")

    @staticmethod
    def _execution_read(data: Mapping[str, Any]) -> ExecutionRead:
        data = dict(data)
        metadata = data.get("metadata") or {}
        data.setdefault("trigger", metadata.get("trigger"))
        data.setdefault("scheduled_for", metadata.get("scheduled_for"))
        data.setdefault("requested_by", metadata.get("requested_by"))
        data.setdefault("cancelled_by", metadata.get("cancelled_by"))
        return ExecutionRead.model_validate(data)

    @staticmethod
    def _error_response(exc: ExecutionEngineError) -> dict[str, Any]:
        return {
            "success": False,
            "error": str(exc),
            "error_type": type(exc).__name__,
            "errors": [{"field": e.field, "message": e.message} for e in domain_field_errors(exc)],
        }

    async def _execute_result(self, job_data: JobInput) -> JobExecutionResult:
        job = self._parse_job_data(job_data)
        self.check_connection_access(job, None)
        return await self.engine.execute_job_now(job)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        """Ensure we have an event loop for async operations

        The loop the engine was started on when it is still running; otherwise a new loop in
        a daemon thread owned by this object, with the engine started on it.
        """
        with self._lock:
            loop = self._loop
            if loop is not None and loop.is_running():
                return loop
            if loop is not None and self._thread is None:
                raise EngineNotRunningError(
                    "the event loop the engine was started on is no longer running"
                )
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(
                target=_serve_loop, args=(loop, ready), name="modern-job-api-loop", daemon=True
            )
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
            asyncio.run_coroutine_threadsafe(self.engine.start(), loop).result()
        return loop

    def _run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run async function in sync context

        Runs ``coro`` on the engine's loop and waits for it. Calling this on that loop's own
        thread would block the loop it waits for, so that raises ``RuntimeError``: await the
        async method instead.
        """
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        try:
            if running is not None and running is self._loop:
                raise RuntimeError(
                    "ModernJobAPI's synchronous methods cannot run on the engine's own event "
                    "loop (it would deadlock); await the async methods (execute, schedule, "
                    "status, ...) instead"
                )
            loop = self._ensure_loop()
        except BaseException:
            coro.close()
            raise
        return asyncio.run_coroutine_threadsafe(coro, loop).result()


def _serve_loop(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    loop.run_forever()


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


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _unstorable_values(data: Any, path: str = "") -> list[FieldError]:
    """Values JSON, UTF-8 or a database cannot carry: NUL characters, lone surrogates, and
    NaN/Infinity (which Python's JSON parser accepts although they are not JSON)."""
    where = path or "body"
    if isinstance(data, str):
        if "\x00" in data or _LONE_SURROGATE.search(data):
            return [FieldError(where, "must not contain NUL characters or lone surrogates")]
        return []
    if isinstance(data, float) and not math.isfinite(data):
        return [FieldError(where, "must be a finite number (NaN and Infinity are not JSON)")]
    if isinstance(data, dict):
        out: list[FieldError] = []
        for key, value in data.items():
            out.extend(_unstorable_values(key, where))
            out.extend(_unstorable_values(value, f"{path}.{key}" if path else str(key)))
        return out
    if isinstance(data, list):
        return [e for i, item in enumerate(data) for e in _unstorable_values(item, f"{path}[{i}]")]
    return []


def create_modern_job_routes(app: FastAPI, api: ModernJobAPI | None = None) -> ModernJobAPI:
    """
    Create modern job execution routes

    Mounts the v2 routes, ``/health`` and ``/ready`` and the problem-details error handling
    on ``app``; the engine starts and stops with the app's lifespan.

    Args:
        app: FastAPI application instance
        api: the service to use (default: ``ModernJobAPI()``, built from the environment)

    Returns:
        ModernJobAPI instance for direct access
    """
    from app.api.deps import load_api_keys, load_settings
    from app.api.routes import include_routes
    from app.api.security import OPEN_MODE_WARNING, install_security

    settings = load_settings()
    if api is None:
        api = ModernJobAPI(settings=settings)
    keys = load_api_keys(settings)
    if not keys:
        log.warning(OPEN_MODE_WARNING)
    install_security(app, keys, rate_limit_per_minute=settings.rate_limit_per_minute)
    install_problem_handling(app, max_body_bytes=settings.max_body_bytes)
    include_routes(app)
    install_openapi(app)
    app.state.job_api = api
    _run_with_lifespan(app, api)
    return api


def _run_with_lifespan(app: FastAPI, api: ModernJobAPI) -> None:
    """Start ``api`` when ``app`` starts and stop it when ``app`` stops."""
    inner: Callable[[Any], contextlib.AbstractAsyncContextManager[Any]] = (
        app.router.lifespan_context
    )

    @contextlib.asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        async with inner(app_) as state:
            await api.start()
            try:
                yield state
            finally:
                await api.stop()

    app.router.lifespan_context = lifespan
