"""The spec's Python API honours the spec's configuration: a ``NewExecutionEngine`` built
with the spec's signature (``NewExecutionEngine()``, ``NewExecutionEngine(4, 600)``) reads
the ``V2_*`` environment for every setting its caller did not pass.

The engine does not import ``app.settings`` (the layers below the API know nothing of it):
this module reads ``os.environ`` itself, with the same names and formats the README lists.
Its defaults are :class:`EnvInt` / :class:`EnvFloat` values, equal to the plain number (so
the signature still says ``max_workers: int = 10``) but recognisable as "not passed".
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from app.domain.errors import ConfigurationError, FieldError
from app.steps.connections import ConnectionRegistry
from app.steps.resources import DEFAULT_MAX_OUTPUT_BYTES, StepResources

T = TypeVar("T")


class EnvInt(int):
    """An ``int`` default that ``V2_<NAME>`` overrides when set."""


class EnvFloat(float):
    """A ``float`` default that ``V2_<NAME>`` overrides when set."""


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _read(name: str, parse: Callable[[str], T], what: str, env: Mapping[str, str]) -> T | None:
    text = env.get(f"V2_{name.upper()}")
    if text is None or not text.strip():
        return None
    try:
        return parse(text.strip())
    except (ValueError, TypeError):
        raise ConfigurationError([FieldError(f"V2_{name.upper()}", f"must be {what}")]) from None


def _bool(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError(text)


def number(name: str, value: T, env: Mapping[str, str] | None = None) -> T:
    """``value``, or ``V2_<NAME>`` when ``value`` is the engine's default (not passed)."""
    if isinstance(value, EnvInt):
        found: Any = _read(name, int, "an integer", env if env is not None else os.environ)
        return found if found is not None else int(value)  # type: ignore[return-value]
    if isinstance(value, EnvFloat):
        found = _read(name, float, "a number", env if env is not None else os.environ)
        return found if found is not None else float(value)  # type: ignore[return-value]
    return value


def flag(
    name: str, value: bool | None, default: bool, env: Mapping[str, str] | None = None
) -> bool:
    """``value``, or ``V2_<NAME>`` (true/false) when it is None (not passed)."""
    if value is not None:
        return value
    found = _read(name, _bool, "true or false", env if env is not None else os.environ)
    return default if found is None else found


def resources(pool_size: int, env: Mapping[str, str] | None = None) -> StepResources:
    """Step resources from V2_CONNECTIONS, V2_POWERSHELL_EXECUTABLE, V2_SHELL_EXECUTABLE,
    V2_MAX_OUTPUT_BYTES, V2_MAX_RESULT_ROWS, V2_KILL_GRACE_SECONDS and V2_SCRIPT_ROOTS
    (unset: the library defaults, paths unconfined)."""
    source = env if env is not None else os.environ
    connections = _read("connections", json.loads, "a JSON object", source) or {}
    roots = _read("script_roots", _roots, "a JSON list or os.pathsep-separated paths", source)
    return StepResources(
        connections=ConnectionRegistry(connections, pool_size=pool_size),
        powershell_executable=source.get("V2_POWERSHELL_EXECUTABLE") or "pwsh",
        shell_executable=source.get("V2_SHELL_EXECUTABLE") or "/bin/sh",
        max_output_bytes=_read("max_output_bytes", int, "an integer", source)
        or DEFAULT_MAX_OUTPUT_BYTES,
        max_result_rows=_read("max_result_rows", int, "an integer", source) or 1000,
        kill_grace_seconds=_or(_read("kill_grace_seconds", float, "a number", source), 5.0),
        script_roots=tuple(roots) if roots is not None else None,
    )


def _roots(text: str) -> list[str]:
    if text.startswith("["):
        value = json.loads(text)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(text)
        return value
    return [part for part in text.split(os.pathsep) if part.strip()]


def _or(value: float | None, default: float) -> float:
    return default if value is None else value
