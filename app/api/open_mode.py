"""Open mode: with no API keys configured every route is open, but only to clients on the
loopback interface (other clients get 403), and ``create_app`` / ``python -m app`` refuse to
bind to anything but loopback."""

from __future__ import annotations

import ipaddress

_LOOPBACK_NAMES = frozenset({"localhost"})


class InsecureBindError(RuntimeError):
    """Asked to listen beyond loopback with no API keys configured."""


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
