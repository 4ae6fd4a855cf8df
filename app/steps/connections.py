"""Named database connections, configured only on the server (``V2_CONNECTIONS``).

One pooled ``AsyncEngine`` per connection name for the life of the registry (never one per
step). Jobs refer to connections by name; URLs and passwords never come from requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.domain.errors import ConfigurationError, FieldError

# Options a connection entry may carry besides its URL, passed to create_async_engine.
_ENGINE_OPTIONS = {
    "pool_size",
    "max_overflow",
    "pool_recycle",
    "pool_pre_ping",
    "pool_timeout",
    "connect_args",
    "echo",
}
_OWN_OPTIONS = {"url", "read_only", "allowed_keys"}


@dataclass(frozen=True)
class ConnectionConfig:
    name: str
    url: str = field(repr=False)
    read_only: bool = False
    allowed_keys: tuple[str, ...] | None = None
    engine_options: dict[str, Any] = field(default_factory=dict)

    @property
    def dialect(self) -> str:
        return make_url(self.url).get_backend_name()

    @property
    def redacted_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)


def parse_connections(raw: Mapping[str, Any]) -> dict[str, ConnectionConfig]:
    """Parse ``V2_CONNECTIONS`` (name -> URL or name -> {"url": ..., options})."""
    out: dict[str, ConnectionConfig] = {}
    errors: list[FieldError] = []
    for name, entry in raw.items():
        where = f"V2_CONNECTIONS.{name}"
        if isinstance(entry, str):
            entry = {"url": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            errors.append(FieldError(where, "must be a URL string or an object with 'url'"))
            continue
        unknown = set(entry) - _ENGINE_OPTIONS - _OWN_OPTIONS
        if unknown:
            errors.append(FieldError(where, f"unknown options: {', '.join(sorted(unknown))}"))
            continue
        try:
            url = make_url(entry["url"])
        except Exception:  # the URL may hold a password: never echo it
            errors.append(FieldError(f"{where}.url", "is not a valid SQLAlchemy URL"))
            continue
        try:
            is_async = bool(getattr(url.get_dialect(), "is_async", False))
        except Exception:
            is_async = False
        if not is_async:
            errors.append(
                FieldError(
                    f"{where}.url",
                    f"driver {url.drivername!r} is not an installed async SQLAlchemy driver "
                    "(use postgresql+asyncpg, mysql+aiomysql or sqlite+aiosqlite)",
                )
            )
            continue
        keys = entry.get("allowed_keys")
        out[name] = ConnectionConfig(
            name=name,
            url=entry["url"],
            read_only=bool(entry.get("read_only", False)),
            allowed_keys=tuple(keys) if keys is not None else None,
            engine_options={k: v for k, v in entry.items() if k in _ENGINE_OPTIONS},
        )
    if errors:
        raise ConfigurationError(errors)
    return out


class ConnectionRegistry:
    """Lazily creates and caches one pooled engine per connection name."""

    def __init__(self, connections: Mapping[str, Any] | None = None) -> None:
        self._configs = parse_connections(connections or {})
        self._engines: dict[str, AsyncEngine] = {}
        self._lock = asyncio.Lock()

    def names(self) -> list[str]:
        return sorted(self._configs)

    def config(self, name: str) -> ConnectionConfig:
        try:
            return self._configs[name]
        except KeyError:
            known = ", ".join(self.names()) or "none configured"
            raise ConfigurationError(
                [FieldError("connection_name", f"unknown connection {name!r} (known: {known})")]
            ) from None

    def get_engine(self, name: str) -> AsyncEngine:
        engine = self._engines.get(name)
        if engine is None:
            cfg = self.config(name)
            options = dict(cfg.engine_options)
            if cfg.dialect != "sqlite":
                options.setdefault("pool_pre_ping", True)
            engine = create_async_engine(cfg.url, **options)
            self._engines[name] = engine
        return engine

    async def dispose(self) -> None:
        engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            await engine.dispose()
