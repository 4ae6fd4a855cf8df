"""Pool behaviour shared by the execution store and the SQL steps' connections.

SQLAlchemy's ``pool_pre_ping`` checks every connection on every checkout: one more round
trip (three on asyncpg: BEGIN, ping, ROLLBACK) in front of each transaction, which cost more
than a ``SELECT 1`` step itself. :func:`ping_when_idle` checks a connection only when it has
sat unused in the pool for a while, which is when a server restart, a failover or an idle
timeout may have closed it; a connection that fails the check is replaced before it is
handed out, exactly as with ``pool_pre_ping``. A connection in steady use is not checked;
if the server drops it between two uses, the statement fails and the pool is invalidated
(SQLAlchemy's disconnect handling), so the next checkout gets a fresh one.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine

#: Seconds a pooled connection may sit unused before it is checked on checkout.
IDLE_PING_SECONDS = 10.0

_RETURNED_AT = "jsv2_returned_at"


def ping_when_idle(engine: AsyncEngine, idle_seconds: float = IDLE_PING_SECONDS) -> None:
    """Check ``engine``'s pooled connections on checkout when idle over ``idle_seconds``."""
    sync_engine = engine.sync_engine
    dialect = sync_engine.dialect

    @event.listens_for(sync_engine, "checkin")
    def _returned(dbapi_connection: Any, record: Any) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _check_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        returned = record.info.get(_RETURNED_AT)
        if returned is None or time.monotonic() - returned < idle_seconds:
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(f"idle connection failed its check: {exc}") from exc
        if not alive:
            raise DisconnectionError("idle connection failed its check")


def pool_options(
    dialect: str, pool_size: int, explicit: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``create_async_engine`` options: ``explicit`` ones over the defaults of
    ``pool_size`` kept connections (a pool too small for the work opens and closes an
    overflow connection per use) and overflow up to twice that. SQLite, and an explicit
    ``poolclass``, keep SQLAlchemy's own pool defaults."""
    explicit = dict(explicit or {})
    if dialect == "sqlite" or "poolclass" in explicit:
        return explicit
    return {"pool_size": pool_size, "max_overflow": pool_size, **explicit}


def is_transient(error: BaseException) -> bool:
    """The database could not be reached or the connection was lost (a restart, a failover,
    a dropped link, a busy SQLite file): retry later. Anything else is a bug or a bad
    statement, and retrying would not help."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(
            current,
            OSError
            | ConnectionError
            | TimeoutError
            | DisconnectionError
            | PoolTimeout
            | asyncpg.PostgresConnectionError
            | asyncpg.InterfaceError
            | asyncpg.exceptions.OperatorInterventionError
            | asyncpg.exceptions.ConnectionDoesNotExistError,
        ):
            return True
        message = str(current).lower()
        if "database is locked" in message or "connection is closed" in message:
            return True
        orig = getattr(current, "orig", None)
        current = (
            orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
        )
    return False
