"""The console's pages (``/ui/...``): server-rendered Jinja2 over ``ConsoleService``.

Every page's state is in its URL (filters and cursors in the query string). Forms that
change something POST with a CSRF token and answer with a redirect (303) to a page.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.templating import Jinja2Templates

from app.api.errors import NotReadyError, field_errors_from_pydantic, status_for
from app.api.events_routes import known_execution
from app.api.live import follow_execution, last_event_number
from app.api.security import SecurityState
from app.api.service import ModernJobAPI
from app.console import charts
from app.console.auth import ConsoleAuth, LoginRequired, Viewer
from app.console.service import ConsoleService, parse_window
from app.console.views import FILTERS
from app.domain.enums import JobStatus
from app.domain.errors import ExecutionEngineError, FieldError
from app.domain.records import ExecutionQuery

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(FILTERS)
templates.env.globals["charts"] = charts


#: Every console answer: only this server's own files, never inside another site's frame.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class ConsoleRoute(APIRoute):
    """Errors of a console route become an HTML page (or the login form), not JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            response = await answer(request)
            response.headers.update(SECURITY_HEADERS)
            return response

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/ui/login?next={quote(target, safe='')}", 303)
            except RequestValidationError as exc:
                errors = field_errors_from_pydantic(exc.errors())
                return error_page(request, 400, "Invalid request", errors)
            except ExecutionEngineError as exc:
                status, _ = status_for(exc)
                fields = getattr(exc, "errors", None)
                errors = [e for e in fields or [] if isinstance(e, FieldError)]
                return error_page(request, status, HTTPStatus(status).phrase, errors, str(exc))

        return console_handler


console_router = APIRouter(prefix="/ui", route_class=ConsoleRoute, include_in_schema=False)


def error_page(
    request: Request, status: int, title: str, errors: list[FieldError], detail: str = ""
) -> Response:
    return templates.TemplateResponse(
        request,
        "error.html",
        {"status": status, "title": title, "detail": detail, "errors": errors, "viewer": None},
        status_code=status,
    )


# -- dependencies ---------------------------------------------------------------------------
def _auth(request: Request) -> ConsoleAuth:
    auth: ConsoleAuth = request.app.state.console_auth
    return auth


def get_viewer(request: Request) -> Viewer:
    return _auth(request).viewer(request)


def get_console(request: Request) -> ConsoleService:
    api: ModernJobAPI | None = getattr(request.app.state, "job_api", None)
    if api is None:
        raise NotReadyError("the service is starting or stopping")
    return ConsoleService(api)


ViewerDep = Annotated[Viewer, Depends(get_viewer)]
ConsoleDep = Annotated[ConsoleService, Depends(get_console)]
CsrfField = Annotated[str | None, Form(max_length=200)]
BackField = Annotated[str | None, Form(max_length=2000)]


def render(
    request: Request, viewer: Viewer, template: str, status_code: int = 200, **context: Any
) -> Response:
    response = templates.TemplateResponse(
        request,
        template,
        {"viewer": viewer, "path": request.url.path, "query": request.query_params, **context},
        status_code=status_code,
    )
    if viewer.new_session is not None:
        _auth(request).set_session(response, viewer.new_session, request.url.scheme == "https")
    return response


def back_to(target: str | None, default: str) -> RedirectResponse:
    """303 to ``target`` if it is a console path (never another site), else ``default``."""
    safe = target if target and target.startswith("/ui") and "//" not in target else default
    return RedirectResponse(safe, 303)


def link(path: str, **params: Any) -> str:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return f"{path}?{query}" if query else path


templates.env.globals["link"] = link


# -- login ----------------------------------------------------------------------------------
def _login_page(request: Request, next: str | None, error: str | None, status: int) -> Response:
    auth = _auth(request)
    token = auth.new_login_token()
    response = templates.TemplateResponse(
        request,
        "login.html",
        {"viewer": None, "next": next or "/ui", "error": error, "csrf_token": token},
        status_code=status,
    )
    auth.set_login_cookie(response, token, request.url.scheme == "https")
    return response


@console_router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str | None = None) -> Response:
    if not _auth(request).needs_login:
        return back_to(next, "/ui")
    return _login_page(request, next, None, 200)


@console_router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    api_key: Annotated[str, Form(max_length=500)],
    next: Annotated[str | None, Form(max_length=2000)] = None,
    csrf_token: CsrfField = None,
) -> Response:
    auth = _auth(request)
    auth.check_login_token(request, csrf_token)
    response = back_to(next, "/ui")
    try:
        auth.login(api_key, response, request.url.scheme == "https")
    except ExecutionEngineError:
        return _login_page(request, next, "That API key is not valid.", 401)
    return response


@console_router.post("/logout")
async def logout(viewer: ViewerDep, csrf_token: CsrfField = None) -> Response:
    ConsoleAuth.check_csrf(viewer, csrf_token)
    response = RedirectResponse("/ui/login", 303)
    ConsoleAuth.logout(response)
    return response


# -- pages ----------------------------------------------------------------------------------
@console_router.get("", response_class=HTMLResponse)
async def overview_page(request: Request, viewer: ViewerDep, console: ConsoleDep) -> Response:
    return render(request, viewer, "overview.html", overview=await console.overview())


@console_router.get("/running", response_class=HTMLResponse)
async def running_fragment(request: Request, viewer: ViewerDep, console: ConsoleDep) -> Response:
    status = await console.api.status()
    return render(request, viewer, "_running.html", running=status.active_executions)


@console_router.get("/jobs", response_class=HTMLResponse)
async def jobs_page(
    request: Request,
    viewer: ViewerDep,
    console: ConsoleDep,
    enabled: Annotated[str | None, Query(pattern="^(|true|false)$")] = None,
    timezone: Annotated[str | None, Query(max_length=50)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    flag = None if not enabled else enabled == "true"
    page = await console.job_page(flag, timezone, limit, cursor)
    return render(
        request,
        viewer,
        "jobs.html",
        jobs=page.items,
        next_cursor=page.next_cursor,
        filters={"enabled": enabled or "", "timezone": timezone or "", "limit": limit},
    )


@console_router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(
    request: Request,
    job_id: str,
    viewer: ViewerDep,
    console: ConsoleDep,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    detail = await console.job_detail(job_id, cursor)
    return render(request, viewer, "job.html", detail=detail)


@console_router.post("/jobs/{job_id}/run")
async def run_job(
    request: Request,
    job_id: str,
    viewer: ViewerDep,
    console: ConsoleDep,
    csrf_token: CsrfField = None,
) -> Response:
    ConsoleAuth.check_csrf(viewer, csrf_token)
    ConsoleAuth.require(viewer, "run")
    security: SecurityState = request.app.state.security
    client = request.client.host if request.client else None
    identity = f"key {viewer.key.id!r}" if viewer.key else f"client {client}"
    ticket = security.limiter.acquire(identity)
    try:
        execution_id = await console.run_now(job_id, viewer.key)
    except Exception:
        security.limiter.refund(ticket)
        raise
    return RedirectResponse(f"/ui/executions/{quote(execution_id, safe='')}", 303)


async def _set_enabled(
    job_id: str,
    enabled: bool,
    viewer: Viewer,
    console: ConsoleService,
    csrf: str | None,
    back: str | None,
) -> Response:
    ConsoleAuth.check_csrf(viewer, csrf)
    ConsoleAuth.require(viewer, "admin")
    await console.jobs.set_enabled(job_id, enabled, expected_version=None)
    return back_to(back, f"/ui/jobs/{quote(job_id, safe='')}")


@console_router.post("/jobs/{job_id}/enable")
async def enable_job(
    job_id: str,
    viewer: ViewerDep,
    console: ConsoleDep,
    csrf_token: CsrfField = None,
    back: BackField = None,
) -> Response:
    return await _set_enabled(job_id, True, viewer, console, csrf_token, back)


@console_router.post("/jobs/{job_id}/disable")
async def disable_job(
    job_id: str,
    viewer: ViewerDep,
    console: ConsoleDep,
    csrf_token: CsrfField = None,
    back: BackField = None,
) -> Response:
    return await _set_enabled(job_id, False, viewer, console, csrf_token, back)


@console_router.get("/executions", response_class=HTMLResponse)
async def executions_page(
    request: Request,
    viewer: ViewerDep,
    console: ConsoleDep,
    job_id: Annotated[str | None, Query(max_length=100)] = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
    hours: Annotated[int | None, Query(ge=1, le=24 * 90)] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    wanted = JobStatus(status) if status in set(JobStatus) else None
    since = console.now() - timedelta(hours=hours) if hours else None
    page = await console.api.list_executions(
        ExecutionQuery(
            job_id=job_id or None, status=wanted, started_after=since, limit=50, cursor=cursor
        )
    )
    return render(
        request,
        viewer,
        "executions.html",
        executions=page.items,
        next_cursor=page.next_cursor,
        statuses=[s.value for s in JobStatus],
        filters={"job_id": job_id or "", "status": status or "", "hours": hours or ""},
    )


@console_router.get("/executions/{execution_id}", response_class=HTMLResponse)
async def execution_page(
    request: Request, execution_id: str, viewer: ViewerDep, console: ConsoleDep
) -> Response:
    execution = await console.api.get_execution(execution_id)
    return render(request, viewer, "execution.html", execution=execution)


@console_router.get("/executions/{execution_id}/events", response_class=EventSourceResponse)
async def execution_events(
    request: Request,
    viewer: ViewerDep,
    execution_id: Annotated[str, Depends(known_execution)],  # 404 before the stream starts
    console: ConsoleDep,
) -> AsyncIterator[ServerSentEvent]:
    after = last_event_number(request.headers.get("last-event-id"))
    async for event in follow_execution(console.api.engine, execution_id, after):
        yield event


@console_router.post("/executions/{execution_id}/cancel")
async def cancel_execution(
    execution_id: str, viewer: ViewerDep, console: ConsoleDep, csrf_token: CsrfField = None
) -> Response:
    ConsoleAuth.check_csrf(viewer, csrf_token)
    ConsoleAuth.require(viewer, "run")
    await console.api.cancel(execution_id, cancelled_by=viewer.requested_by)
    return RedirectResponse(f"/ui/executions/{quote(execution_id, safe='')}", 303)


@console_router.get("/queues", response_class=HTMLResponse)
async def queues_page(request: Request, viewer: ViewerDep, console: ConsoleDep) -> Response:
    status = await console.api.status()
    cluster = await console.api.cluster()
    return render(
        request,
        viewer,
        "queues.html",
        status=status,
        cluster=cluster,
        oldest=console.oldest_waiting(),
    )


@console_router.get("/upcoming", response_class=HTMLResponse)
async def upcoming_page(
    request: Request,
    viewer: ViewerDep,
    console: ConsoleDep,
    start: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    hours: Annotated[str | None, Query(max_length=5)] = None,
    tz: Annotated[str | None, Query(max_length=50)] = None,
) -> Response:
    when, count, zone = parse_window(start, hours, tz, console.now())
    upcoming = await console.upcoming(when, count, zone)
    return render(request, viewer, "upcoming.html", upcoming=upcoming)
