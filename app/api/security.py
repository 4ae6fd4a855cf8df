"""API keys, scopes, the open-mode guard and the execution rate limit.

Keys: ``Authorization: Bearer <key>``. The server keeps only each key's SHA-256 digest
(``V2_API_KEYS`` / ``V2_API_KEYS_FILE``: a JSON list of ``{"id", "key_sha256", "scopes"}``);
a presented key is hashed and compared with every configured digest in constant time. Keys
are long random strings (``make api-key``), so a fast hash is enough: a digest cannot be
turned back into a key.

Scopes nest: ``admin`` ⊇ ``run`` ⊇ ``read``.

* ``read``: status, history, step types, job lists.
* ``run``: execute, schedule, cancel, run a stored job (and everything ``read`` allows).
* ``admin``: create, change and delete stored jobs (and everything ``run`` allows).

Routes declare what they need with ``Security(require_scope("read"))``; the dependency
answers 401 (``WWW-Authenticate: Bearer``) without a valid key and 403 when the key lacks the
scope, and returns the :class:`ApiKey` (``None`` in open mode).

Open mode: with no keys configured every route is open, but only to clients on the loopback
interface (other clients get 403), and ``create_app`` / ``python -m app`` refuse to bind to
anything but loopback.

``start_execution`` is ``require_scope("run")`` plus the per-key rate limit
(``V2_RATE_LIMIT_PER_MINUTE``): a sliding one-minute window of started executions per key
(per client address in open mode). A request that fails (invalid job, 4xx/5xx raised) is
given its slot back; only executions that started count.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import hmac
import ipaddress
import json
import math
import re
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import fastapi.routing
from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import BaseRoute

from app.api.errors import NotAuthenticatedError, PermissionDeniedError, RateLimitedError
from app.domain.errors import ConfigurationError, FieldError

#: Scopes, weakest first; each includes the ones before it.
SCOPES: tuple[str, ...] = ("read", "run", "admin")
SCHEME_NAME = "bearerAuth"
KEY_PREFIX = "jsv2_"
#: Key ids the service itself uses in ``requested_by`` / ``cancelled_by``.
RESERVED_KEY_IDS = frozenset({"schedule"})
_KEY_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,100}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_LOOPBACK_NAMES = frozenset({"localhost"})
RATE_WINDOW_SECONDS = 60.0


class InsecureBindError(RuntimeError):
    """Asked to listen beyond loopback with no API keys configured."""


# -- keys -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ApiKey:
    """An authenticated key: its id (recorded as ``requested_by``) and granted scopes."""

    id: str
    scopes: frozenset[str]
    key_sha256: str = field(repr=False, compare=False, default="")

    def allows(self, scope: str) -> bool:
        """True when the key's strongest scope includes ``scope`` (admin ⊇ run ⊇ read)."""
        return any(SCOPES.index(have) >= SCOPES.index(scope) for have in self.scopes)


def key_digest(key: str) -> str:
    """Hex SHA-256 of a key as configured in ``key_sha256``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_api_keys(entries: Any, *, source: str = "V2_API_KEYS") -> list[ApiKey]:
    """Validate a key list (the JSON of ``V2_API_KEYS``); ``ConfigurationError`` naming each
    bad entry. Never echoes a digest."""
    if not isinstance(entries, list):
        raise ConfigurationError(
            [FieldError(source, 'must be a JSON list of {"id", "key_sha256", "scopes"}')]
        )
    keys: list[ApiKey] = []
    errors: list[FieldError] = []
    seen_ids: set[str] = set()
    seen_digests: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"{source}[{i}]"
        if not isinstance(entry, dict):
            errors.append(FieldError(where, "must be an object"))
            continue
        unknown = set(entry) - {"id", "key_sha256", "scopes"}
        if unknown:
            errors.append(FieldError(where, f"unknown fields: {', '.join(sorted(unknown))}"))
        key_id, digest, scopes = entry.get("id"), entry.get("key_sha256"), entry.get("scopes")
        if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
            errors.append(FieldError(f"{where}.id", "must be 1-100 letters, digits or _ . : @ -"))
        elif key_id in RESERVED_KEY_IDS:
            errors.append(FieldError(f"{where}.id", f"{key_id!r} is reserved"))
        elif key_id in seen_ids:
            errors.append(FieldError(f"{where}.id", f"duplicate id {key_id!r}"))
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest.lower()):
            errors.append(
                FieldError(f"{where}.key_sha256", "must be 64 hex digits (SHA-256 of the key)")
            )
        elif digest.lower() in seen_digests:
            errors.append(FieldError(f"{where}.key_sha256", "the same key is listed twice"))
        if (
            not isinstance(scopes, list)
            or not scopes
            or not all(isinstance(s, str) and s in SCOPES for s in scopes)
        ):
            errors.append(
                FieldError(f"{where}.scopes", f"must be a non-empty list of {', '.join(SCOPES)}")
            )
        if errors and errors[-1].field.startswith(where):
            continue
        assert isinstance(key_id, str) and isinstance(digest, str) and isinstance(scopes, list)
        seen_ids.add(key_id)
        seen_digests.add(digest.lower())
        keys.append(ApiKey(key_id, frozenset(scopes), digest.lower()))
    if errors:
        raise ConfigurationError(errors)
    return keys


def read_api_keys(inline: list[dict[str, Any]] | None, path: Path | None) -> list[ApiKey]:
    """Keys from ``V2_API_KEYS`` or from the file ``V2_API_KEYS_FILE`` (one of the two)."""
    if inline is not None and path is not None:
        raise ConfigurationError(
            [FieldError("V2_API_KEYS_FILE", "set V2_API_KEYS or V2_API_KEYS_FILE, not both")]
        )
    if path is not None:
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigurationError(
                [FieldError("V2_API_KEYS_FILE", f"cannot read {str(path)!r}: {exc.strerror}")]
            ) from None
        except ValueError:
            raise ConfigurationError(
                [FieldError("V2_API_KEYS_FILE", f"{str(path)!r} is not valid JSON")]
            ) from None
        return parse_api_keys(entries, source="V2_API_KEYS_FILE")
    return parse_api_keys(inline, source="V2_API_KEYS") if inline is not None else []


class KeyRing:
    """The configured keys; ``authenticate`` compares digests in constant time."""

    def __init__(self, keys: Iterable[ApiKey] = ()) -> None:
        self._keys = tuple(keys)

    @property
    def enabled(self) -> bool:
        """False in open mode (no keys configured)."""
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def authenticate(self, presented: str) -> ApiKey | None:
        digest = key_digest(presented).encode()
        found: ApiKey | None = None
        for key in self._keys:  # every key is compared: the time does not tell which matched
            if hmac.compare_digest(digest, key.key_sha256.encode()):
                found = key
        return found


# -- rate limit -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RateTicket:
    identity: str
    at: float


class RateLimiter:
    """At most ``per_minute`` executions per identity in any sliding 60-second window.

    One deque of start times per identity (at most ``per_minute`` entries each), kept in
    this process: replicas limit separately. ``per_minute == 0`` turns the limit off.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._starts: dict[str, collections.deque[float]] = {}

    def acquire(self, identity: str) -> RateTicket | None:
        """Take one slot for ``identity``; ``RateLimitedError`` (with Retry-After) if none."""
        if self.per_minute <= 0:
            return None
        now = self._clock()
        starts = self._starts.setdefault(identity, collections.deque())
        while starts and starts[0] <= now - RATE_WINDOW_SECONDS:
            starts.popleft()
        if len(starts) >= self.per_minute:
            retry_after = max(1, math.ceil(starts[0] + RATE_WINDOW_SECONDS - now))
            raise RateLimitedError(
                f"at most {self.per_minute} executions per minute for {identity}; "
                f"retry in {retry_after}s",
                retry_after=retry_after,
            )
        starts.append(now)
        self._prune(now)
        return RateTicket(identity, now)

    def refund(self, ticket: RateTicket | None) -> None:
        """Give a slot back (the request started nothing)."""
        if ticket is None:
            return
        starts = self._starts.get(ticket.identity)
        if starts is not None:
            with contextlib.suppress(ValueError):  # already out of the window
                starts.remove(ticket.at)

    def _prune(self, now: float) -> None:
        if len(self._starts) > 10_000:  # many client addresses: forget the idle ones
            for identity, starts in list(self._starts.items()):
                if not starts or starts[-1] <= now - RATE_WINDOW_SECONDS:
                    del self._starts[identity]


# -- app wiring -------------------------------------------------------------------------------
@dataclass
class SecurityState:
    keys: KeyRing
    limiter: RateLimiter


def install_security(app: FastAPI, keys: Iterable[ApiKey], *, rate_limit_per_minute: int) -> None:
    """Give ``app`` its keys and rate limiter (the dependencies below read them)."""
    app.state.security = SecurityState(KeyRing(keys), RateLimiter(rate_limit_per_minute))


def is_loopback(host: str | None) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind_address(host: str, keys_configured: bool) -> None:
    """``InsecureBindError`` when asked to listen beyond loopback with no API keys."""
    if not keys_configured and not is_loopback(host):
        raise InsecureBindError(
            f"refusing to listen on {host!r} without API keys: anyone who can reach it could "
            "run commands on this machine. Set V2_API_KEYS (or V2_API_KEYS_FILE; create a key "
            "with `make api-key`), or listen on 127.0.0.1 (V2_HOST=127.0.0.1)."
        )


OPEN_MODE_WARNING = (
    "no API keys configured (V2_API_KEYS / V2_API_KEYS_FILE): the API is open to every "
    "client on this machine (loopback only). Create keys with `make api-key` before "
    "exposing the service."
)


# -- dependencies -----------------------------------------------------------------------------
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
    request.state.api_key = key
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


def current_key_id(request: Request) -> str | None:
    """Id of the key that authenticated this request (for ``requested_by``); None in open
    mode or before a scope dependency ran."""
    key: ApiKey | None = getattr(request.state, "api_key", None)
    return key.id if key is not None else None


def key_id(key: ApiKey | None) -> str | None:
    return key.id if key is not None else None


ReadKey = Annotated[ApiKey | None, Depends(require_scope("read"))]
RunKey = Annotated[ApiKey | None, Depends(require_scope("run"))]
AdminKey = Annotated[ApiKey | None, Depends(require_scope("admin"))]
ExecutionKey = Annotated[ApiKey | None, Depends(start_execution)]


async def scope_by_method(request: Request, credentials: Credentials) -> AsyncIterator[None]:
    """Router-level guard (``include_router(..., dependencies=[Security(scope_by_method)])``)
    for routes that may declare no scope of their own: GET/HEAD and ``POST .../preview``
    need ``read``; ``POST .../run`` needs ``run`` and takes a slot of the rate limit;
    anything else needs ``admin``. A route's own scope dependency replaces the scope by
    method; a ``.../run`` route is rate limited here unless it uses ``start_execution``."""
    route = request.scope.get("route")
    path = route.path if isinstance(route, APIRoute) else request.url.path
    calls = _calls(route) if isinstance(route, APIRoute) else set()
    own_scope = bool(calls & set(_scope_dependencies.values()))
    scope = scope_for(request.method, path)
    limited = scope == "run" and start_execution not in calls
    if own_scope and not limited:
        yield
        return
    key = await authenticate(request, credentials)
    if not own_scope:
        key = await require_scope(scope)(key)
    ticket = None
    if limited:
        ticket = _state(request).limiter.acquire(_rate_identity(request, key))
    try:
        yield
    except Exception:
        _state(request).limiter.refund(ticket)
        raise


def _rate_identity(request: Request, key: ApiKey | None) -> str:
    return f"key {key.id!r}" if key is not None else f"client {_client_host(request)}"


def scope_for(method: str, path: str) -> str:
    if method in ("GET", "HEAD", "OPTIONS"):
        return "read"
    if path.endswith("/preview"):
        return "read"
    if path.endswith("/run"):
        return "run"
    return "admin"


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
        path: str = mounted.path
        guarded = authenticate in calls or scope_by_method in calls
        for method in mounted.methods or ():
            limited = start_execution in calls or (
                scope_by_method in calls and scope_for(method, path) == "run"
            )
            out[(method.lower(), path)] = (guarded, limited)
    return out


# -- `make api-key` ---------------------------------------------------------------------------
def new_api_key() -> str:
    """A new random key: ``jsv2_`` and 43 URL-safe characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_entry(key: str, key_id: str, scopes: Sequence[str]) -> dict[str, Any]:
    """The ``V2_API_KEYS`` entry for ``key``."""
    entry = {"id": key_id, "key_sha256": key_digest(key), "scopes": list(scopes)}
    parse_api_keys([entry])  # the same rules the server applies
    return entry


def main(argv: Sequence[str] | None = None, out: Any = None) -> int:
    """Print a new key and its ``V2_API_KEYS`` entry."""
    parser = argparse.ArgumentParser(description="Create an API key for Job Scheduler V2.")
    parser.add_argument("--id", default=None, help="key id (default: key-<random>)")
    parser.add_argument(
        "--scopes",
        default="run",
        help="comma-separated: read, run, admin (admin includes run, run includes read)",
    )
    args = parser.parse_args(argv)
    stream = out or sys.stdout
    key = new_api_key()
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    try:
        entry = key_entry(key, args.id or f"key-{secrets.token_hex(4)}", scopes)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("API key (give it to the client; the server keeps only its SHA-256):", file=stream)
    print(f"  {key}", file=stream)
    print("Entry for the V2_API_KEYS list (or the V2_API_KEYS_FILE file):", file=stream)
    print(f"  {json.dumps(entry)}", file=stream)
    return 0
