"""The route dependencies that authenticate a request and check its key's scope.

Routes declare what they need with the ``ReadKey`` / ``RunKey`` / ``AdminKey`` /
``ExecutionKey`` aliases (``Security(require_scope(...))``); the dependency answers 401
(``WWW-Authenticate: Bearer``) without a valid key and 403 when the key lacks the scope, and
returns the :class:`~app.api.keys.ApiKey` (``None`` in open mode, see ``open_mode``).

``ExecutionKey`` (``start_execution``) is ``require_scope("run")`` plus one slot of the
per-key rate limit (``app.api.rate_limit``). A request that fails (invalid job, 4xx/5xx
raised) is given its slot back; only executions that started count.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import fastapi.routing
from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import BaseRoute

from app.api.errors import NotAuthenticatedError, PermissionDeniedError
from app.api.keys import SCOPES, ApiKey, KeyRing
from app.api.open_mode import is_loopback
from app.api.rate_limit import RateLimiter

SCHEME_NAME = "bearerAuth"


@dataclass
class SecurityState:
    keys: KeyRing
    limiter: RateLimiter


def install_security(app: FastAPI, keys: Iterable[ApiKey], *, rate_limit_per_minute: int) -> None:
    """Give ``app`` its keys and rate limiter (the dependencies below read them)."""
    app.state.security = SecurityState(KeyRing(keys), RateLimiter(rate_limit_per_minute))


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name=SCHEME_NAME,
    bearerFormat="API key",
    description="An API key (`make api-key`), sent as `Authorization: Bearer <key>`. Scopes: "
    "`read` (status, history, step types, job lists), `run` (also execute, schedule, cancel, "
    "run a job), `admin` (also create, change and delete jobs).",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _state(request: Request) -> SecurityState:
    state: SecurityState | None = getattr(request.app.state, "security", None)
    if state is None:  # fail closed: routes mounted without install_security
        raise RuntimeError("security is not installed on this app (install_security)")
    return state


def _client_host(request: Request) -> str | None:
    return request.client.host if request.client is not None else None


async def authenticate(request: Request, credentials: Credentials) -> ApiKey | None:
    """The key the request carries; None in open mode. 401 without a valid key."""
    state = _state(request)
    if not state.keys.enabled:
        host = _client_host(request)
        if host is not None and not is_loopback(host):
            raise PermissionDeniedError(
                "no API keys are configured on this server, so it answers loopback clients "
                "only; the operator must set V2_API_KEYS"
            )
        return None
    if credentials is None:
        raise NotAuthenticatedError("an API key is required: send `Authorization: Bearer <key>`")
    key = state.keys.authenticate(credentials.credentials)
    if key is None:
        raise NotAuthenticatedError("the API key is not valid", invalid_token=True)
    return key


_scope_dependencies: dict[str, Callable[..., Awaitable[ApiKey | None]]] = {}


def require_scope(scope: str) -> Callable[..., Awaitable[ApiKey | None]]:
    """Dependency: the request's :class:`ApiKey` if it allows ``scope`` (401/403 if not);
    None in open mode. Use as ``Security(require_scope("read"))``."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r} (one of {', '.join(SCOPES)})")
    dependency = _scope_dependencies.get(scope)
    if dependency is None:

        async def dependency(
            key: Annotated[ApiKey | None, Depends(authenticate)],
        ) -> ApiKey | None:
            if key is not None and not key.allows(scope):
                raise PermissionDeniedError(
                    f"the API key {key.id!r} does not have the {scope!r} scope "
                    f"(it has: {', '.join(sorted(key.scopes))})"
                )
            return key

        dependency.__name__ = f"require_{scope}_scope"
        _scope_dependencies[scope] = dependency
    return dependency


async def start_execution(
    request: Request, key: Annotated[ApiKey | None, Depends(require_scope("run"))]
) -> AsyncIterator[ApiKey | None]:
    """``require_scope("run")`` plus one slot of the per-key execution rate limit (429 with
    Retry-After when spent). The slot is given back if the request fails."""
    ticket = _state(request).limiter.acquire(_rate_identity(request, key))
    try:
        yield key
    except Exception:
        _state(request).limiter.refund(ticket)
        raise


def key_id(key: ApiKey | None) -> str | None:
    """The key's id (recorded as ``requested_by`` / ``cancelled_by``); None in open mode."""
    return key.id if key is not None else None


ReadKey = Annotated[ApiKey | None, Depends(require_scope("read"))]
RunKey = Annotated[ApiKey | None, Depends(require_scope("run"))]
AdminKey = Annotated[ApiKey | None, Depends(require_scope("admin"))]
ExecutionKey = Annotated[ApiKey | None, Depends(start_execution)]


def _rate_identity(request: Request, key: ApiKey | None) -> str:
    return f"key {key.id!r}" if key is not None else f"client {_client_host(request)}"


# -- what a route requires (for the OpenAPI document and tests) -------------------------------
def _calls(route: Any) -> set[Any]:
    found: set[Any] = set()
    stack = [route.dependant]
    while stack:
        dependant = stack.pop()
        if dependant.call is not None:
            found.add(dependant.call)
        stack.extend(dependant.dependencies)
    return found


def _effective_api_routes(routes: Sequence[BaseRoute]) -> Iterator[Any]:
    """Every API route as mounted (router-level dependencies included).

    FastAPI >= 0.16x keeps included routers lazily (``iter_route_contexts``); older
    versions copy every route into ``app.routes``.
    """
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    if iterate is None:
        for route in routes:
            if isinstance(route, APIRoute):
                yield route
        return
    for context in iterate(routes):
        if isinstance(context.original_route, APIRoute):
            yield context


def route_requirements(routes: Sequence[BaseRoute]) -> dict[tuple[str, str], tuple[bool, bool]]:
    """(method, path) -> (needs a key, rate limited) for every API route."""
    out: dict[tuple[str, str], tuple[bool, bool]] = {}
    for mounted in _effective_api_routes(routes):
        calls = _calls(mounted)
        guarded, limited = authenticate in calls, start_execution in calls
        for method in mounted.methods or ():
            out[(method.lower(), mounted.path)] = (guarded, limited)
    return out
