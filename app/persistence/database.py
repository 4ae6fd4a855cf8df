"""Creating the async engine: URL handling and the SQLite settings the store relies on."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, SingletonThreadPool

from app.sqlpool import ping_when_idle, pool_options

#: Where the embedded database lives when V2_DATABASE_URL is not set.
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/jobscheduler.db"

#: Database backends the store supports (the claim statements need UPDATE ... RETURNING).
SUPPORTED_DIALECTS = ("sqlite", "postgresql")

#: Execution option that makes a SQLite transaction start with BEGIN IMMEDIATE.
SQLITE_IMMEDIATE = "jsv2_sqlite_immediate"

SQLITE_BUSY_TIMEOUT_MS = 30_000

#: Connections the store keeps open on a server database. Its history writes share one
#: connection (group commit); the rest serve reads, claims and the API.
STORE_POOL_SIZE = 10


def ensure_sqlite_directory(url: str | URL) -> None:
    """Create the parent directory of a SQLite database file (e.g. ``./data``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def create_engine(
    url: str, engine_options: dict[str, Any] | None = None, *, autocheckpoint: bool = True
) -> AsyncEngine:
    """An AsyncEngine for ``url``; on SQLite with WAL, a busy timeout, foreign keys on and
    transactions started by SQLAlchemy (``BEGIN``, or ``BEGIN IMMEDIATE`` for writers).
    Without ``autocheckpoint`` its commits never checkpoint the WAL: a
    ``checkpoint.WalCheckpointer`` does."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_DIALECTS:
        raise ValueError(
            f"unsupported database {backend!r} for the execution store; "
            f"use one of {', '.join(SUPPORTED_DIALECTS)}"
        )
    options = pool_options(backend, STORE_POOL_SIZE, engine_options)
    if backend == "sqlite":
        ensure_sqlite_directory(parsed)
    engine = create_async_engine(parsed, **options)
    if backend == "sqlite":
        _configure_sqlite(engine, autocheckpoint)
    elif not options.get("pool_pre_ping"):
        ping_when_idle(engine)
    return engine


def sync_sqlite_engine(url: str, *, autocheckpoint: bool = True) -> Engine | None:
    """A synchronous engine (the standard ``sqlite3`` driver, one connection per thread) on
    the same SQLite file as ``url``, configured like the async one; None for an in-memory
    database, which a second connection would not share."""
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if "mode=memory" in database or parsed.query.get("mode") == "memory":
        return None
    engine = sa_create_engine(
        parsed.set(drivername="sqlite"),
        poolclass=SingletonThreadPool,
        connect_args={"check_same_thread": False},
    )
    _configure_sqlite(engine, autocheckpoint)
    return engine


def _configure_sqlite(engine: AsyncEngine | Engine, autocheckpoint: bool) -> None:
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy emit BEGIN itself (see _on_begin) instead of the driver's legacy mode.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            if not autocheckpoint:
                cursor.execute("PRAGMA wal_autocheckpoint=0")
        finally:
            cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A writer takes the write lock up front, so it waits (busy_timeout) instead of
        # failing with SQLITE_BUSY when it upgrades a read snapshot to a write.
        immediate = conn.get_execution_options().get(SQLITE_IMMEDIATE, False)
        statement = "BEGIN IMMEDIATE" if immediate else "BEGIN"
        # On the driver's cursor: through exec_driver_sql this cost ~40 us a transaction.
        # A failure is handled as exec_driver_sql would (wrapped; a lost connection
        # invalidated).
        cursor = conn.connection.cursor()
        try:
            cursor.execute(statement)
        except BaseException as exc:
            raise_as_sqlalchemy(conn, exc, statement, (), cursor)
            raise
        cursor.close()


def raise_as_sqlalchemy(
    conn: Connection, error: BaseException, statement: str, parameters: Any, cursor: Any
) -> None:
    """Handle an error of a statement run on ``conn``'s DB-API cursor as
    ``Connection.execute`` does (its own handling is called, and raises): a driver error
    comes out wrapped in SQLAlchemy's ``DBAPIError`` (a lost connection is invalidated with
    its pool), an "exit" exception (cancellation, timeout) invalidates the connection;
    anything else returns, for the caller to re-raise as it is."""
    exiting = not isinstance(error, Exception) or isinstance(error, TimeoutError)
    if exiting or isinstance(error, conn.dialect.loaded_dbapi.Error):
        conn._handle_dbapi_exception(error, statement, parameters, cursor, None)


class SingleNodeError(RuntimeError):
    """A second process wants to run an engine on a SQLite file another process serves."""


#: Lock files this process holds (path -> descriptor). POSIX record locks belong to the
#: process, and closing any descriptor of the file would drop them: each file is opened
#: once and kept open for the life of the process.
_HELD_LOCKS: dict[str, int] = {}


def hold_sqlite_file(url: str) -> None:
    """Make this process the only one running an engine on the SQLite file of ``url``
    (``SingleNodeError`` when another process has it). Several engines of one process may
    share a file (tests do); the lock goes with the process, ``kill -9`` included."""
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return
    path = str(Path(database).expanduser().resolve()) + ".node-lock"
    if path in _HELD_LOCKS:
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise SingleNodeError(
            f"the SQLite database {database} is already served by another process "
            f"(pid {holder}); SQLite runs one node only: several replicas need PostgreSQL "
            "(V2_DATABASE_URL=postgresql+asyncpg://...)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _HELD_LOCKS[path] = fd
