"""``python -m app``: serve the API on V2_HOST:V2_PORT (``--host`` / ``--port`` override).

Unlike ``uvicorn app.main:create_app --factory --host ...`` (where the app cannot see the
address uvicorn binds), this checks the address before listening: with no API keys
configured it serves loopback only, and refuses any other address with a message saying to
set V2_API_KEYS.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence

import uvicorn
from pydantic import ValidationError
from pydantic_settings import SettingsError

from app.api.open_mode import InsecureBindError
from app.domain.errors import ConfigurationError
from app.main import create_app
from app.settings import Settings
from app.startup import database_problems, settings_problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="Serve Job Scheduler V2 (the API, Swagger UI at /docs, /health, /ready).",
        epilog="Configuration comes from V2_* environment variables (README, Configuration): "
        "V2_DATABASE_URL, V2_CONNECTIONS, V2_API_KEYS, V2_LOG_LEVEL, ... Without API keys "
        "the service listens on loopback only. An invalid configuration exits with status 2 "
        "and one 'error:' line per problem.",
    )
    parser.add_argument("--host", help="address to listen on (default: V2_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: V2_PORT, 8000)")
    args = parser.parse_args(argv)
    overrides: dict[str, object] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except (SettingsError, ValidationError) as exc:
        return _refuse(settings_problems(exc))
    settings.configure_logging()
    problems = database_problems(settings)
    if problems:
        return _refuse(problems)
    try:
        app = create_app(settings)
    except (InsecureBindError, ConfigurationError) as exc:
        return _refuse([str(exc)])
    # Listen before the app starts: a process whose port is taken exits here, before its
    # engine has registered or touched anything in the database.
    try:
        listener = _listen(settings.host, settings.port)
    except OSError as exc:
        return _refuse([f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"])
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's lines go through configure_logging's handler too
    )
    uvicorn.Server(config).run(sockets=[listener])
    return 0


def _refuse(problems: list[str]) -> int:
    """Exit 2 with one ``error:`` line per problem on stderr."""
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 2


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when ``host`` is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(2048)
    except OSError:
        listener.close()
        raise
    listener.set_inheritable(True)
    return listener


if __name__ == "__main__":
    raise SystemExit(main())
