"""Who is using the console, and the CSRF check of every form that changes something.

* With API keys configured, ``/ui/login`` takes a key once; the browser then keeps a session
  cookie: signed (itsdangerous, HMAC-SHA1 over the payload and its time), ``HttpOnly``,
  ``SameSite=Strict``, ``Path=/ui``, ``Secure`` when served over https. It holds the key's
  id and a random CSRF token, never the key. Each request looks the id up among the
  configured keys, so a key removed from V2_API_KEYS ends its sessions; sessions expire
  after ``SESSION_MAX_AGE_SECONDS``. Scopes apply as in the API (``read`` sees, ``run`` runs
  and cancels, ``admin`` also enables and disables).
* Open mode (no keys): the console, like the API, answers loopback clients only; the cookie
  then holds just the CSRF token.
* Every POST form carries ``csrf_token``; it must equal the one in the signed cookie
  (compared in constant time), so a page on another site cannot post for the user.

The signing secret is V2_CONSOLE_SECRET when set (all replicas share sessions), else a
random one per process (sessions end when the server restarts).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from app.api.errors import NotAuthenticatedError, PermissionDeniedError
from app.api.keys import ApiKey, KeyRing
from app.api.open_mode import is_loopback

COOKIE = "jsv2_console"
LOGIN_COOKIE = "jsv2_console_login"
SESSION_MAX_AGE_SECONDS = 12 * 3600
LOGIN_MAX_AGE_SECONDS = 600


class LoginRequired(Exception):
    """No valid console session: the page sends the browser to the login form."""


@dataclass(frozen=True)
class Viewer:
    """The console's user: the key (None in open mode) and the session's CSRF token."""

    key: ApiKey | None
    csrf_token: str
    new_session: dict[str, Any] | None = None

    def can(self, scope: str) -> bool:
        return self.key is None or self.key.allows(scope)

    @property
    def name(self) -> str:
        return self.key.id if self.key is not None else "open mode (loopback)"

    @property
    def requested_by(self) -> str | None:
        return self.key.id if self.key is not None else None


class ConsoleAuth:
    def __init__(self, keys: KeyRing, secret: str | None) -> None:
        self.keys = keys
        self._signer = URLSafeTimedSerializer(
            secret or secrets.token_urlsafe(32), salt="jsv2-console-session"
        )

    @property
    def needs_login(self) -> bool:
        return self.keys.enabled

    def _session(self, request: Request) -> dict[str, Any] | None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = self._signer.loads(raw, max_age=SESSION_MAX_AGE_SECONDS)
        except BadSignature:
            return None
        return data if isinstance(data, dict) else None

    def viewer(self, request: Request) -> Viewer:
        """The request's viewer; ``LoginRequired`` without a valid session (keys configured),
        ``PermissionDeniedError`` for a non-loopback client in open mode."""
        session = self._session(request)
        if not self.keys.enabled:
            host = request.client.host if request.client is not None else None
            if host is not None and not is_loopback(host):
                raise PermissionDeniedError(
                    "no API keys are configured on this server, so the console answers "
                    "loopback clients only; the operator must set V2_API_KEYS"
                )
            if session is None or not isinstance(session.get("csrf"), str):
                fresh = {"csrf": secrets.token_urlsafe(24)}
                return Viewer(None, fresh["csrf"], new_session=fresh)
            return Viewer(None, session["csrf"])
        if session is None or not isinstance(session.get("kid"), str):
            raise LoginRequired
        key = self.keys.find(session["kid"])
        if key is None:
            raise LoginRequired
        return Viewer(key, str(session.get("csrf", "")))

    @staticmethod
    def new_login_token() -> str:
        return secrets.token_urlsafe(24)

    def set_login_cookie(self, response: Response, token: str, secure: bool) -> None:
        """The login form's CSRF token, signed, as a short-lived cookie beside the form."""
        response.set_cookie(
            LOGIN_COOKIE,
            self._signer.dumps({"login": token}),
            max_age=LOGIN_MAX_AGE_SECONDS,
            path="/ui/login",
            httponly=True,
            samesite="strict",
            secure=secure,
        )

    def check_login_token(self, request: Request, presented: str | None) -> None:
        """The login form must carry the token of its cookie (no login forced from afar)."""
        raw = request.cookies.get(LOGIN_COOKIE, "")
        try:
            data = self._signer.loads(raw, max_age=LOGIN_MAX_AGE_SECONDS) if raw else None
        except BadSignature:
            data = None
        expected = data.get("login") if isinstance(data, dict) else None
        self.check_csrf(Viewer(None, expected if isinstance(expected, str) else ""), presented)

    def login(self, presented: str, response: Response, secure: bool) -> ApiKey:
        """Check the key; on success the session cookie goes on ``response``."""
        key = self.keys.authenticate(presented.strip())
        if key is None:
            raise NotAuthenticatedError("the API key is not valid", invalid_token=True)
        self.set_session(response, {"kid": key.id, "csrf": secrets.token_urlsafe(24)}, secure)
        response.delete_cookie(LOGIN_COOKIE, path="/ui/login", httponly=True, samesite="strict")
        return key

    def set_session(self, response: Response, data: dict[str, Any], secure: bool) -> None:
        response.set_cookie(
            COOKIE,
            self._signer.dumps(data),
            max_age=SESSION_MAX_AGE_SECONDS,
            path="/ui",
            httponly=True,
            samesite="strict",
            secure=secure,
        )

    @staticmethod
    def logout(response: Response) -> None:
        response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")

    @staticmethod
    def check_csrf(viewer: Viewer, presented: str | None) -> None:
        """``PermissionDeniedError`` unless the form's token is the session's."""
        if (
            not presented
            or not viewer.csrf_token
            or not hmac.compare_digest(presented.encode(), viewer.csrf_token.encode())
        ):
            raise PermissionDeniedError(
                "the form's CSRF token is missing or wrong: reload the page and try again"
            )

    @staticmethod
    def require(viewer: Viewer, scope: str) -> None:
        if not viewer.can(scope):
            assert viewer.key is not None
            raise PermissionDeniedError(
                f"the API key {viewer.key.id!r} does not have the {scope!r} scope "
                f"(it has: {', '.join(sorted(viewer.key.scopes))})"
            )
