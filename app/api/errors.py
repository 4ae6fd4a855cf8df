"""The one mapping from errors to HTTP: RFC 9457 problem details for every 4xx and 5xx.

``ERROR_TABLE`` maps domain errors to status codes; request validation errors answer 400 (not
FastAPI's 422) with a list of field errors whose paths read like the request
(``steps[0].query``, ``job.timezone``). Two ASGI middlewares complete it: a request body
limit (413) and a last-resort handler that logs an unexpected exception with its traceback
and answers 500 without one.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.schemas import API_STEP_TYPES, Problem, ProblemFieldError
from app.domain.business_calendars import (
    CalendarExistsError,
    CalendarInUseError,
    CalendarNotFoundError,
)
from app.domain.errors import (
    CancellationError,
    ConfigurationError,
    DisabledJobError,
    EngineNotRunningError,
    ExecutionEngineError,
    ExecutionFinishedError,
    ExecutionNotFoundError,
    FieldError,
    SchedulingError,
)
from app.domain.field_paths import field_errors_from_pydantic as domain_field_errors_from_pydantic
from app.domain.jobs import (
    JobExistsError,
    JobNotFoundError,
    JobsExistError,
    ScheduleNotFoundError,
    VersionConflictError,
)
from app.domain.records import DuplicateScheduledRunError
from app.engine.manual import OverlapError

log = logging.getLogger("app.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://jobscheduler.local/problems/"


class NotReadyError(ExecutionEngineError):
    """The service cannot take work now (engine stopped or failed, store unreachable)."""


class NotAuthenticatedError(ExecutionEngineError):
    """No API key, or not a valid one (401 with ``WWW-Authenticate: Bearer``)."""

    def __init__(self, message: str, *, invalid_token: bool = False) -> None:
        challenge = 'Bearer realm="jobscheduler"'
        if invalid_token:
            challenge += ', error="invalid_token"'
        self.headers = {"WWW-Authenticate": challenge}
        super().__init__(message)


class PermissionDeniedError(ExecutionEngineError):
    """The key may not do this (a scope it lacks, a connection it may not use): 403.
    ``errors`` names the fields concerned, if any."""

    def __init__(self, message: str, errors: list[FieldError] | None = None) -> None:
        self.errors: list[FieldError] = list(errors or [])
        super().__init__(message)


class InvalidRequestError(ExecutionEngineError):
    """A query parameter or header of the request is invalid (400 ``invalid-request``, as
    FastAPI's own validation errors); ``errors`` names each."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(map(str, errors)))


class InvalidScheduleError(ConfigurationError):
    """A schedule to preview is invalid (400 ``invalid-schedule``)."""


class RateLimitedError(ExecutionEngineError):
    """Too many executions started in the last minute (429 with ``Retry-After``)."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}
        super().__init__(message)


# Most specific first: the first class the error is an instance of decides.
ERROR_TABLE: tuple[tuple[type[Exception], int, str], ...] = (
    (ExecutionNotFoundError, 404, "execution-not-found"),
    (JobNotFoundError, 404, "job-not-found"),
    (ScheduleNotFoundError, 404, "schedule-not-found"),
    (CalendarNotFoundError, 404, "calendar-not-found"),
    (CalendarExistsError, 409, "calendar-exists"),
    (CalendarInUseError, 409, "calendar-in-use"),
    (JobExistsError, 409, "job-exists"),
    (JobsExistError, 409, "job-exists"),
    (VersionConflictError, 412, "version-conflict"),
    (DuplicateScheduledRunError, 409, "duplicate-fire"),
    (OverlapError, 409, "job-running"),
    (ExecutionFinishedError, 409, "execution-finished"),
    (CancellationError, 409, "cannot-cancel"),
    (EngineNotRunningError, 503, "engine-not-running"),
    (NotReadyError, 503, "not-ready"),
    (NotAuthenticatedError, 401, "not-authenticated"),
    (PermissionDeniedError, 403, "forbidden"),
    (RateLimitedError, 429, "rate-limited"),
    (InvalidRequestError, 400, "invalid-request"),
    (InvalidScheduleError, 400, "invalid-schedule"),
    (ConfigurationError, 400, "invalid-job"),
    (DisabledJobError, 400, "job-disabled"),
    (SchedulingError, 400, "invalid-schedule"),
)

RESPONSE_DESCRIPTIONS: dict[int, str] = {
    400: "Invalid request: `errors` names each bad field and why.",
    404: "No execution with this id.",
    401: "No API key, or not a valid one: send `Authorization: Bearer <key>`.",
    403: "The API key lacks the scope this needs, or may not use a connection the job names "
    "(`errors` names the step), or (no keys configured) the client is not on loopback.",
    409: "The execution already finished (or cannot be cancelled in its current state).",
    413: "The request body is larger than the server accepts (V2_MAX_BODY_BYTES).",
    429: "Too many executions started with this key in the last minute "
    "(V2_RATE_LIMIT_PER_MINUTE); retry after `Retry-After` seconds.",
    500: "Unexpected server error. It is logged on the server; the body has no traceback.",
    503: "The engine is not running (starting, stopping or failed) or the store is unreachable.",
}


# -- the body ---------------------------------------------------------------------------------
def problem(
    status: int,
    detail: str | None = None,
    *,
    slug: str | None = None,
    instance: str | None = None,
    errors: Iterable[FieldError] = (),
) -> Problem:
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    return Problem(
        type=PROBLEM_BASE + slug if slug else "about:blank",
        title=phrase,
        status=status,
        detail=detail,
        instance=instance,
        errors=[ProblemFieldError(field=e.field, message=e.message) for e in errors],
    )


def problem_response(body: Problem, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        body.model_dump(mode="json"),
        status_code=body.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers or {}),
    )


#: Headers declared on these problem answers.
RESPONSE_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "`Bearer` challenge (RFC 6750).",
            "schema": {"type": "string"},
        }
    },
    429: {
        "Retry-After": {
            "description": "Seconds until an execution may be started again.",
            "schema": {"type": "integer"},
        }
    },
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these statuses (problem+json, see ``openapi.py``)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": Problem, "description": RESPONSE_DESCRIPTIONS[status]}
        if status in RESPONSE_HEADERS:
            entry["headers"] = RESPONSE_HEADERS[status]
        out[status] = entry
    return out


# -- field paths ----------------------------------------------------------------------------
_PARAM_LOCATIONS = ("body", "query", "path", "header", "cookie")


def field_errors_from_pydantic(
    errors: Iterable[Mapping[str, Any]], prefix: str = ""
) -> list[FieldError]:
    """Pydantic errors of a request as FieldErrors with paths that read like the request
    (``steps[0].query``, ``job.timezone``): the request part (``body``, ``query``, ...) and a
    step's union tag are left out of the path; the body as a whole is ``"body"``."""
    return domain_field_errors_from_pydantic(
        (_without_location(err) for err in errors), prefix, union_tags=API_STEP_TYPES
    )


def _without_location(err: Mapping[str, Any]) -> Mapping[str, Any]:
    loc = tuple(err.get("loc", ()))
    if loc and loc[0] in _PARAM_LOCATIONS:
        if loc[0] != "body" and err.get("type") == "extra_forbidden":
            return {
                **err,
                "loc": loc[1:],
                "type": "value_error",
                "ctx": {"error": f"unknown {loc[0]} parameter"},
            }
        return {**err, "loc": loc[1:]}
    return err


def configuration_error(exc: ValidationError, prefix: str = "") -> ConfigurationError:
    """A pydantic ValidationError of a request model as a ConfigurationError."""
    return ConfigurationError(
        field_errors_from_pydantic(exc.errors(include_url=False, include_input=False), prefix)
    )


def prefixed(exc: ConfigurationError, prefix: str) -> ConfigurationError:
    """``exc`` with every field path under ``prefix`` (``timezone`` -> ``job.timezone``)."""
    errors = [
        FieldError(f"{prefix}.{e.field}" if e.field else prefix, e.message) for e in exc.errors
    ]
    return ConfigurationError(errors)


def domain_field_errors(exc: ExecutionEngineError) -> list[FieldError]:
    if isinstance(
        exc, ConfigurationError | PermissionDeniedError | InvalidRequestError | JobsExistError
    ):
        return list(exc.errors)
    if isinstance(exc, SchedulingError) and exc.field:
        return [FieldError(exc.field, str(exc))]
    return []


def status_for(exc: ExecutionEngineError) -> tuple[int, str | None]:
    for error_type, status, slug in ERROR_TABLE:
        if isinstance(exc, error_type):
            return status, slug
    return 500, None


# -- handlers -------------------------------------------------------------------------------
async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors_from_pydantic(exc.errors())
    return problem_response(
        problem(
            400,
            "The request is invalid: " + "; ".join(map(str, errors)),
            slug="invalid-request",
            instance=request.url.path,
            errors=errors,
        )
    )


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ExecutionEngineError)
    status, slug = status_for(exc)
    if slug is None:  # not in the table: a bug, not an answer
        log.error("unexpected engine error on %s", request.url.path, exc_info=exc)
        body = problem(500, "Internal server error.", instance=request.url.path)
    else:
        body = problem(
            status,
            str(exc),
            slug=slug,
            instance=request.url.path,
            errors=domain_field_errors(exc),
        )
        headers: Mapping[str, str] = getattr(exc, "headers", None) or {}
        return problem_response(body, headers)
    return problem_response(body)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    body = problem(exc.status_code, detail, instance=request.url.path)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette names only the first route that matched the path; list every method.
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return problem_response(body, headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method the documented paths matching this request's path accept."""
    paths: dict[str, dict[str, Any]] = request.app.openapi().get("paths", {})
    exact = paths.get(request.url.path)
    if exact is not None:  # a literal path is its own resource (/jobs/execute, not /jobs/{id})
        return sorted(m.upper() for m in exact if m in _HTTP_METHODS)
    methods: set[str] = set()
    for template, item in paths.items():
        pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, request.url.path):
            methods |= {m.upper() for m in item if m in _HTTP_METHODS}
    return sorted(methods)


_HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


# -- middleware -----------------------------------------------------------------------------
async def _send_problem(send: Send, body: Problem) -> None:
    payload = json.dumps(body.model_dump(mode="json"), separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": body.status,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class BodySizeLimitMiddleware:
    """Refuses request bodies larger than ``max_body_bytes`` with 413 (problem details).

    A declared Content-Length over the limit is refused before reading; a chunked body is
    read up to the limit and then refused, so memory stays bounded either way.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_problem(send, self._too_large(scope, declared))
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                await _send_problem(send, self._too_large(scope, None))
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            if messages:
                return messages.pop(0)
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self, scope: Scope, declared: int | None) -> Problem:
        got = f" ({declared} bytes)" if declared is not None else ""
        return problem(
            413,
            f"The request body{got} is larger than the limit of {self.max_body_bytes} bytes.",
            slug="body-too-large",
            instance=scope.get("path"),
        )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class UnhandledErrorMiddleware:
    """Last resort: log an unexpected exception with its traceback, answer a bare 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await _send_problem(
                send, problem(500, "Internal server error.", instance=scope.get("path"))
            )


def install_problem_handling(app: FastAPI, *, max_body_bytes: int) -> None:
    """Problem-details answers for every error of ``app`` (idempotent)."""
    if getattr(app.state, "problem_handling_installed", False):
        return
    app.state.problem_handling_installed = True
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ExecutionEngineError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=max_body_bytes)
    app.add_middleware(UnhandledErrorMiddleware)
