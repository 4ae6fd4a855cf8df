"""Start-up problems as one clear line each, instead of a traceback: the V2_* environment
(malformed JSON, a value of the wrong type), a database URL that is not one, a driver that
is not installed."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from app.settings import Settings
from app.steps.mssql import driver_problem

_FIELD = re.compile(r'field "(\w+)"')


def settings_problems(exc: SettingsError | ValidationError) -> list[str]:
    """What is wrong with the environment, one line per problem, naming the variable (never
    echoing its value: V2_CONNECTIONS holds passwords)."""
    if isinstance(exc, ValidationError):
        return [
            f"{_variable(err['loc'])}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        ]
    match = _FIELD.search(str(exc))
    name = f"V2_{match.group(1).upper()}" if match else "V2_*"
    cause = exc.__cause__
    detail = f" ({cause})" if isinstance(cause, ValueError) else ""
    return [f"{name}: is not valid JSON{detail}"]


def database_problems(settings: Settings) -> list[str]:
    """V2_DATABASE_URL and every V2_CONNECTIONS URL: parseable, and their drivers
    installed."""
    problems = []
    if settings.database_url != "memory://":
        problem = url_problem(settings.database_url)
        if problem:
            problems.append(f"V2_DATABASE_URL: {problem}")
    for name, url in _connection_urls(settings.connections):
        problem = url_problem(url)
        if problem:
            problems.append(f"V2_CONNECTIONS.{name}: {problem}")
    return problems


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be used as a SQLAlchemy async URL here (None when it can)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "is not a database URL (e.g. sqlite+aiosqlite:///./data/jobscheduler.db)"
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        return f"SQLAlchemy has no dialect {parsed.drivername!r}"
    if parsed.get_backend_name() == "mssql":  # pyodbc and unixODBC first: a clearer line
        problem = driver_problem(parsed)
        if problem:
            return problem
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        return (
            f"the driver of {parsed.drivername!r} is not installed"
            f" ({exc.name or exc}; pip install it)"
        )
    return None


def _connection_urls(connections: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for name, entry in connections.items():
        url = entry.get("url") if isinstance(entry, Mapping) else entry
        if isinstance(url, str):
            yield str(name), url


def _variable(loc: tuple[int | str, ...]) -> str:
    head, *rest = loc or ("?",)
    parts = (f"[{p}]" if isinstance(p, int) else f".{p}" for p in rest)
    return f"V2_{str(head).upper()}" + "".join(parts)
