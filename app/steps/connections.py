"""Named database connections, configured only on the server (``V2_CONNECTIONS``).

One pooled ``AsyncEngine`` per connection name for the life of the registry (never one per
step). Jobs refer to connections by name; URLs and passwords never come from requests.

Beside each pooled engine a name may get a *control* engine (no pool, autocommit) used only to
stop work running on a pooled connection from the outside: ``pg_cancel_backend`` on
PostgreSQL, ``KILL QUERY`` on MariaDB/MySQL, ``KILL <spid>`` as SQL Server's last resort
(its cancel is ODBC's ``SQLCancel``, see :mod:`app.steps.mssql`). :class:`ServerSession`
holds what that needs.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from app.domain.errors import ConfigurationError, FieldError
from app.sqlpool import ping_when_idle, pool_options
from app.steps.mssql import MssqlSession, connect_url, own_threads, read_spid

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

    @cached_property
    def dialect(self) -> str:
        return make_url(self.url).get_backend_name()

    @cached_property
    def family(self) -> str:
        """``"postgresql"``, ``"mysql"`` (MariaDB too), ``"sqlite"`` or ``"mssql"``."""
        return dialect_family(self.dialect)

    @cached_property
    def autocommit(self) -> bool:
        """PostgreSQL connections run each step's statement in autocommit mode (unless the
        entry sets its own ``isolation_level``): a step is one statement (asyncpg sends it as
        one prepared statement), which PostgreSQL runs atomically on its own, so BEGIN and
        COMMIT would only add two round trips."""
        return self.family == "postgresql" and "isolation_level" not in self.engine_options

    @property
    def engine_url(self) -> str:
        """The URL engines open: a ``read_only`` SQL Server entry's with
        ``ApplicationIntent=ReadOnly``."""
        if self.family == "mssql":
            return connect_url(self.url, read_only=self.read_only)
        return self.url

    def allows(self, key_id: str | None) -> bool:
        """True when an execution started by ``key_id`` may use this connection: always
        without ``allowed_keys``, else only for a listed key id (``"schedule"``: recurring
        fires of stored jobs). None (no API key) is never listed."""
        return self.allowed_keys is None or (key_id is not None and key_id in self.allowed_keys)

    def access_denied_message(self, key_id: str | None) -> str:
        who = f"API key {key_id!r}" if key_id is not None else "an execution without an API key"
        return f"{who} may not use connection {self.name!r} (its allowed_keys do not list it)"

    @property
    def redacted_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def secrets(self) -> list[str]:
        """Strings that must never appear in a message: the URL and its password."""
        url = make_url(self.url)
        out = [self.url, url.render_as_string(hide_password=False)]
        if url.password:
            out.append(str(url.password))
        return [s for s in out if s]


def dialect_family(name: str) -> str:
    return "mysql" if name in ("mysql", "mariadb") else name


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
                    "(use postgresql+asyncpg, mysql+aiomysql, sqlite+aiosqlite or "
                    "mssql+aioodbc)",
                )
            )
            continue
        keys = entry.get("allowed_keys")
        if keys is not None and (
            not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys)
        ):
            errors.append(FieldError(f"{where}.allowed_keys", "must be a list of key ids"))
            continue
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
    """Lazily creates and caches one pooled engine per connection name.

    ``pool_size``: connections each pool keeps open (the engine's ``max_workers`` is the
    right size: that many steps can run at once); a connection entry's own options win.
    """

    def __init__(self, connections: Mapping[str, Any] | None = None, *, pool_size: int = 5) -> None:
        self._configs = parse_connections(connections or {})
        self._pool_size = pool_size
        self._engines: dict[str, AsyncEngine] = {}
        self._control_engines: dict[str, AsyncEngine] = {}
        self._executors: list[ThreadPoolExecutor] = []  # SQL Server engines' driver threads
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
            options = pool_options(cfg.dialect, self._pool_size, cfg.engine_options)
            if cfg.autocommit:
                options["isolation_level"] = "AUTOCOMMIT"
            if cfg.family == "mssql":
                threads = int(options.get("pool_size", 5)) + int(options.get("max_overflow", 10))
                self._executors.append(own_threads(options, threads, name))
            engine = create_async_engine(cfg.engine_url, **options)
            if cfg.dialect != "sqlite" and not options.get("pool_pre_ping"):
                ping_when_idle(engine)
            self._engines[name] = engine
        return engine

    def get_control_engine(self, name: str) -> AsyncEngine:
        """Engine for out-of-band control statements on connection ``name`` (cancelling a
        running query). No pool: it never competes with steps for pooled connections, and it
        holds no idle connection. Autocommit: a control statement takes effect at once."""
        engine = self._control_engines.get(name)
        if engine is None:
            cfg = self.config(name)
            options = {k: v for k, v in cfg.engine_options.items() if k == "connect_args"}
            if cfg.family == "mssql":
                self._executors.append(own_threads(options, 2, f"{name}-control"))
            engine = create_async_engine(
                cfg.engine_url, poolclass=NullPool, isolation_level="AUTOCOMMIT", **options
            )
            self._control_engines[name] = engine
        return engine

    async def dispose(self) -> None:
        engines = [*self._engines.values(), *self._control_engines.values()]
        executors, self._executors = self._executors, []
        self._engines, self._control_engines = {}, {}
        for engine in engines:
            await engine.dispose()
        for executor in executors:
            executor.shutdown(wait=False)


# -- stopping work on a pooled connection from outside it ---------------------------------------

_SESSION_KEY = "jobscheduler.server_session"
# COM_SET_OPTION / MYSQL_OPTION_MULTI_STATEMENTS_OFF (MariaDB/MySQL client protocol).
_COM_SET_OPTION = 0x1B
_MULTI_STATEMENTS_OFF = 1


@dataclass(frozen=True)
class ServerSession:
    """Identity of the server session behind one pooled connection.

    ``server_id`` is the PostgreSQL backend pid, the MariaDB ``CONNECTION_ID()`` or the SQL
    Server ``@@SPID``; ``driver`` is the driver's connection object (used for SQLite's
    ``interrupt()``); ``mssql`` tracks SQL Server's running cursor (for ``SQLCancel``).
    """

    family: str
    server_id: int | None
    driver: Any = field(repr=False, compare=False)
    mssql: MssqlSession | None = field(default=None, repr=False, compare=False)

    async def cancel_query(self, control: AsyncConnection | None) -> None:
        """Ask the server to stop the statement running in this session (if any).

        The session stays open; the statement fails with the server's "cancelled" error.
        """
        if self.family == "sqlite":
            await self.driver.interrupt()  # sqlite3_interrupt: thread-safe, not queued
        elif self.mssql is not None:
            await self.mssql.cancel()  # needs no control connection
        elif control is not None and self.server_id is not None:
            if self.family == "postgresql":
                await control.execute(
                    text("SELECT pg_cancel_backend(:pid)"), {"pid": self.server_id}
                )
            elif self.family == "mysql":
                await control.exec_driver_sql(f"KILL QUERY {int(self.server_id)}")

    async def terminate(self, control: AsyncConnection | None) -> None:
        """Last resort: end the whole server session (the connection is discarded anyway)."""
        if self.family == "sqlite":
            await self.driver.interrupt()
        elif self.mssql is not None:
            kill = self.mssql.kill_statement()
            if control is not None and kill is not None:
                await control.exec_driver_sql(kill)
        elif control is not None and self.server_id is not None:
            if self.family == "postgresql":
                await control.execute(
                    text("SELECT pg_terminate_backend(:pid)"), {"pid": self.server_id}
                )
            elif self.family == "mysql":
                await control.exec_driver_sql(f"KILL CONNECTION {int(self.server_id)}")


async def server_session(conn: AsyncConnection) -> ServerSession:
    """The :class:`ServerSession` of ``conn``, set up once per DBAPI connection.

    MariaDB/MySQL: the first time a pooled connection is used, multi-statement mode is
    switched off (aiomysql always requests it at handshake, and a batch such as
    ``INSERT ...; SELECT bogus`` would otherwise commit its first half and the error of the
    second would be swallowed when the cursor closes), and ``CONNECTION_ID()`` is read (the
    handshake's thread id is only 32 bits wide). Both are cached in the connection's ``info``,
    which SQLAlchemy clears whenever the DBAPI connection is replaced.
    """
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    family = dialect_family(conn.dialect.name)
    if family == "postgresql":
        return postgresql_session(conn.info, driver)
    cached = conn.info.get(_SESSION_KEY)
    if isinstance(cached, ServerSession) and cached.driver is driver:
        return cached
    server_id: int | None = None
    if family == "mysql":
        # No public aiomysql API for COM_SET_OPTION; the server answers with EOF or ERR
        # (``_read_packet`` raises on ERR).
        try:
            await driver._execute_command(_COM_SET_OPTION, struct.pack("<H", _MULTI_STATEMENTS_OFF))
            await driver._read_packet()
        except Exception as exc:  # raw driver error: give it SQLAlchemy's shape
            raise DBAPIError("COM_SET_OPTION MULTI_STATEMENTS_OFF", None, exc) from exc
        server_id = int((await conn.exec_driver_sql("SELECT CONNECTION_ID()")).scalar_one())
    mssql: MssqlSession | None = None
    if family == "mssql":
        try:
            server_id = await read_spid(driver)
        except Exception as exc:  # raw pyodbc error: give it SQLAlchemy's shape
            raise DBAPIError("SELECT @@SPID", None, exc) from exc
        mssql = MssqlSession(server_id)
    session = ServerSession(family, server_id, driver, mssql)
    conn.info[_SESSION_KEY] = session
    return session


def postgresql_session(info: dict[Any, Any], driver: Any) -> ServerSession:
    """:func:`server_session` of a PostgreSQL connection from its pooled connection's
    ``info`` and its asyncpg connection (no I/O: the backend pid is known at connect)."""
    cached = info.get(_SESSION_KEY)
    if isinstance(cached, ServerSession) and cached.driver is driver:
        return cached
    session = ServerSession("postgresql", int(driver.get_server_pid()), driver)
    info[_SESSION_KEY] = session
    return session


_READ_ONLY_SESSION = "jobscheduler.read_only_session"
_PG_READ_ONLY_SESSION = "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"


async def start_read_only(conn: AsyncConnection, family: str, *, autocommit: bool = False) -> None:
    """Make the transaction ``conn`` is about to run read-only (first statement in it). In
    autocommit mode (PostgreSQL) the session is made read-only instead, once per pooled
    connection: every pooled connection of a ``read_only`` entry is read-only."""
    if family == "postgresql" and autocommit:
        if not conn.info.get(_READ_ONLY_SESSION):
            await conn.exec_driver_sql(_PG_READ_ONLY_SESSION)
            conn.info[_READ_ONLY_SESSION] = True
    elif family == "postgresql":
        await conn.exec_driver_sql("SET TRANSACTION READ ONLY")
    elif family == "mysql":
        # Ends the implicit transaction of any setup query and starts a read-only one.
        await conn.exec_driver_sql("START TRANSACTION READ ONLY")
    elif family == "sqlite":
        await conn.exec_driver_sql("PRAGMA query_only = ON")


async def start_read_only_session(info: dict[Any, Any], driver: Any) -> None:
    """:func:`start_read_only` of an autocommit PostgreSQL connection, sent on its asyncpg
    connection ``driver`` (raises asyncpg's own errors)."""
    if not info.get(_READ_ONLY_SESSION):
        await driver.execute(_PG_READ_ONLY_SESSION)
        info[_READ_ONLY_SESSION] = True


async def end_read_only(conn: AsyncConnection, family: str) -> None:
    """Undo what :func:`start_read_only` left on the session (SQLite's pragma only)."""
    if family == "sqlite":
        await conn.exec_driver_sql("PRAGMA query_only = OFF")
