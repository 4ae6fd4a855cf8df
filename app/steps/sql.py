"""SqlStep: one SQL statement on a named, server-side configured connection.

How a run goes:

* The connection comes from the :class:`ConnectionRegistry` (one pooled engine per name).
* Parameters are resolved (``{"$from": ...}`` references) and always *bound*: the SQL text is
  parsed by SQLAlchemy's ``text()`` for ``:name`` placeholders and never formatted. A list
  value binds as an expanding parameter (``WHERE id IN (:ids)`` or ``IN :ids``); an object
  value binds as its JSON text. Names used by the query and names given must match exactly.
  A ``:name`` directly followed by ``::`` is not a placeholder: write ``CAST(:name AS type)``.
* The statement runs in one transaction: committed on success, rolled back on any error.
  On a ``read_only`` connection the transaction is read-only (PostgreSQL ``SET TRANSACTION
  READ ONLY``, MariaDB ``START TRANSACTION READ ONLY``, SQLite ``PRAGMA query_only``); this
  guards against mistakes, a read-only database role is what makes it a security boundary.
* Rows become JSON-safe objects (see :mod:`app.steps.sql_values`), capped by
  ``max_result_rows`` and ``max_output_bytes`` with a ``truncated`` flag.
* PostgreSQL (asyncpg, autocommit, no list parameter): the statement SQLAlchemy compiles
  from the ``text()`` is run through the pooled connection's asyncpg driver as a prepared
  statement kept per connection (prepared on first use, prepared again after a schema
  change), one round trip per run; the rest runs ``conn.execute``. Same text, same bound
  values, same checkout, cancellation and error shape on both.

Cancellation (the engine's ``asyncio.timeout`` or ``task.cancel()``) stops the statement *on
the server*. The statement runs in a worker task the step awaits through ``asyncio.shield``;
when the step is cancelled it asks the server to stop the statement (PostgreSQL
``pg_cancel_backend(pid)`` and MariaDB ``KILL QUERY <CONNECTION_ID()>`` on a separate
un-pooled connection, SQLite ``sqlite3_interrupt``), repeating the request until the driver
returns (a request that lands just before the statement starts is otherwise lost), waits for
the worker, and only then re-raises ``CancelledError``. A PostgreSQL or MariaDB connection
that was sent a cancel is discarded, never returned to the pool. If the server does not stop
within ``kill_grace_seconds`` the session is terminated (``pg_terminate_backend`` /
``KILL CONNECTION``). The clean-up finishes even if the step is cancelled again meanwhile.

SQL Server (``mssql+aioodbc``) runs the query as T-SQL batches split on ``GO`` lines, in one
transaction unless the step sets ``"transaction": false``; its cancel is ODBC's
``SQLCancel``. See :mod:`app.steps.mssql`; what a query may hold per dialect is in
:mod:`app.steps.sql_checks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Coroutine, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
from asyncpg.exceptions import (  # type: ignore[import-untyped]
    InvalidCachedStatementError,
    OutdatedSchemaCacheError,
)
from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection, CursorResult, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import BindParameter, TextClause
from sqlalchemy.util import greenlet_spawn

from app.domain.enums import StepStatus
from app.domain.errors import ConfigurationError, FieldError
from app.domain.models import StepExecutionResult
from app.steps.base import ExecutionStep
from app.steps.connections import (
    ConnectionConfig,
    ConnectionRegistry,
    ServerSession,
    end_read_only,
    postgresql_session,
    server_session,
    start_read_only,
    start_read_only_session,
)
from app.steps.context import REFERENCE_KEY
from app.steps.generated.sql import SqlStepConfig
from app.steps.mssql import BatchError, PreparedBatch, odbc_message, run_batches
from app.steps.sql_checks import step_problems
from app.steps.sql_values import JsonValue, cap_rows, dumps, to_json_safe, unique_column_names
from app.steps.tsql import split_batches

log = logging.getLogger(__name__)

MAX_ERROR_LENGTH = 2000
_T = TypeVar("_T")
_SCALARS = (str, int, float, bool, type(None))


class SqlStep(ExecutionStep):
    """SQL query execution step"""

    step_type = "sql"
    output_fields = {
        "rows": True,
        "columns": True,
        "row_count": False,
        "affected_rows": False,
        "truncated": False,
    }
    config_model = SqlStepConfig

    # -- configuration ------------------------------------------------------------------------
    @classmethod
    def extra_checks(cls, step_config: dict[str, Any], prefix: str) -> list[FieldError]:
        """Placeholders in the query and parameter names must match; list values must hold
        scalars (checked again at run time, after references are resolved)."""
        query = step_config.get("query")
        params = step_config.get("parameters") or {}
        if not isinstance(query, str) or not isinstance(params, dict):
            return []
        field = f"{prefix}.parameters" if prefix else "parameters"
        errors = [FieldError(field, p) for p in parameter_problems(query, params)]
        for name, value in params.items():
            if isinstance(value, list):
                problem = _list_problem(value, allow_references=True)
                if problem:
                    errors.append(FieldError(f"{field}.{name}", problem))
        return errors

    # -- execution ------------------------------------------------------------------------------
    async def execute(self) -> StepExecutionResult:
        """
        Execute SQL query

        Returns:
            Step result with query output and metadata. ``output`` is the JSON text of the
            (capped) rows of a row-returning statement run with ``fetch_results``, else None.
        """
        result = self.new_result()
        name = str(self.step_config.get("connection_name") or "")
        query = str(self.step_config.get("query") or "")
        try:
            cfg = self.context.resources.connections.config(name)
        except ConfigurationError as exc:
            return self.finish(result, StepStatus.FAILED, error=str(exc), connection_name=name)
        meta: dict[str, Any] = {"connection_name": name, "dialect": cfg.family}
        if not cfg.allows(self.context.requested_by):  # checked again: it runs as its requester
            return self.finish(
                result,
                StepStatus.FAILED,
                error=cfg.access_denied_message(self.context.requested_by),
                **meta,
            )

        dialect_problems = step_problems(
            self.step_config, cfg.family, read_only=cfg.read_only, where="step"
        )
        if dialect_problems:  # checked when the job entered; the connection may have changed
            return self.finish(
                result, StepStatus.FAILED, error="; ".join(map(str, dialect_problems)), **meta
            )

        parameters = self.resolved_parameters()  # a bad reference raises StepExecutionError
        problems = parameter_problems(query, parameters)
        for pname, value in parameters.items():
            problem = (
                _list_problem(value, allow_references=False) if isinstance(value, list) else None
            )
            if problem:
                problems.append(f"{pname}: {problem}")
        if problems:
            return self.finish(
                result, StepStatus.FAILED, error="parameters: " + "; ".join(problems), **meta
            )

        try:
            rows, affected = await self._execute_query(query, parameters)
        except (SQLAlchemyError, OSError, ValueError) as exc:
            error = describe_error(exc, cfg.secrets())
            if isinstance(exc, BatchError) and exc.label:
                error = f"{exc.label}: {error}"
            return self.finish(result, StepStatus.FAILED, error=error, **meta)

        columns = rows.columns if rows else []
        kept = rows.rows if rows else []
        truncated = rows.truncated if rows else False
        self.context.set_step_output(
            self.step_id,
            {
                "rows": kept,
                "columns": columns,
                "row_count": len(kept),
                "affected_rows": affected,
                "truncated": truncated,
            },
        )
        return self.finish(
            result,
            StepStatus.SUCCESS,
            output=rows.json_text if rows is not None and rows.fetched else None,
            columns=columns,
            row_count=len(kept),
            affected_rows=affected,
            truncated=truncated,
            **meta,
        )

    async def _execute_query(
        self, query: str, parameters: dict[str, Any]
    ) -> tuple[QueryRows | None, int | None]:
        """
        Execute SQL query with parameters

        Returns:
            Tuple of (results, affected_rows): ``results`` is None when the statement returns
            no rows; ``affected_rows`` is the driver's row count, None when it has none.

        Raises:
            SQLAlchemyError: the database refused or failed the statement (rolled back)
            asyncio.CancelledError: after the statement was stopped on the server
        """
        registry = self.context.resources.connections
        name = str(self.step_config.get("connection_name") or "")
        cfg = registry.config(name)
        engine = self.context.get_connection(name)
        state = _RunState()
        run: Coroutine[Any, Any, tuple[QueryRows | None, int | None]]
        if cfg.family == "mssql":
            run = self._run_batches(engine, cfg, query, parameters, state)
        else:
            statement, values = build_statement(query, parameters)
            fast = _asyncpg_statement(engine, cfg, statement, values)
            if fast is not None:
                run = self._run_on_driver(engine, cfg, *fast, state)
            else:
                run = self._run_statement(engine, cfg, statement, values, state)
        worker = asyncio.create_task(
            run, name=f"sql-step:{self.context.execution_id}:{self.step_id}"
        )
        try:
            return await asyncio.shield(worker)
        except asyncio.CancelledError:
            await _finish_despite_cancellation(
                self._abort(worker, state, registry, cfg),
                name=f"sql-step-abort:{self.context.execution_id}:{self.step_id}",
            )
            raise

    # -- the worker: owns the pooled connection from checkout to return ----------------------
    async def _run_statement(
        self,
        engine: AsyncEngine,
        cfg: ConnectionConfig,
        statement: TextClause,
        values: dict[str, Any],
        state: _RunState,
    ) -> tuple[QueryRows | None, int | None]:
        family = cfg.family
        async with _live_connection(engine) as conn:
            state.phase = _Phase.SETUP
            try:
                state.session = await server_session(conn)
                if cfg.read_only:
                    await start_read_only(conn, family, autocommit=cfg.autocommit)
                state.check_abort()
                state.phase = _Phase.EXECUTING
                try:
                    cursor = await conn.execute(statement, values)
                finally:
                    state.phase = _Phase.FINISHING
                state.check_abort()
                outcome = self._collect(cursor)
                state.check_abort()
                await conn.commit()
            except BaseException:
                await _undo(conn, family, aborted=state.aborting)
                raise
            finally:
                if cfg.read_only and family == "sqlite" and not conn.invalidated:
                    await _reset_read_only(conn, family)
            return outcome

    async def _run_on_driver(
        self,
        engine: AsyncEngine,
        cfg: ConnectionConfig,
        sql: str,
        args: list[Any],
        state: _RunState,
    ) -> tuple[QueryRows | None, int | None]:
        """The PostgreSQL fast path (see :func:`_asyncpg_statement`): the pooled connection
        is checked out as the synchronous ``Connection`` that ``AsyncEngine.connect()`` wraps
        (the same pool, events and checkout errors) and everything between checkout and
        return runs on its asyncpg connection, without a trip through SQLAlchemy's greenlet
        bridge per call. Autocommit: there is no transaction to commit or roll back."""
        conn = await greenlet_spawn(_checkout_live, engine.sync_engine)
        try:
            state.phase = _Phase.SETUP
            driver: Any = conn.connection.driver_connection
            state.session = postgresql_session(conn.info, driver)
            if cfg.read_only:
                await _on_driver(
                    conn, driver, _PG_SETUP, start_read_only_session(conn.info, driver)
                )
            state.check_abort()
            state.phase = _Phase.EXECUTING
            try:
                outcome = await self._run_prepared(conn, driver, sql, args)
            finally:
                state.phase = _Phase.FINISHING
            state.check_abort()
            return outcome
        except BaseException:
            if state.aborting and not conn.invalidated:
                await greenlet_spawn(conn.invalidate)  # it may carry a stray cancel request
            raise
        finally:
            state.phase = _Phase.RELEASING  # not cancelled meanwhile (see _abort)
            await greenlet_spawn(conn.close)

    async def _run_batches(
        self,
        engine: AsyncEngine,
        cfg: ConnectionConfig,
        query: str,
        parameters: dict[str, Any],
        state: _RunState,
    ) -> tuple[QueryRows | None, int | None]:
        """SQL Server: the query's ``GO`` batches in order on one connection, in one
        transaction unless ``transaction`` is false (then each batch commits by itself and
        the first failing one stops the step). A ``read_only`` connection's transaction is
        rolled back, never committed (SQL Server has no read-only transaction)."""
        transaction = self.step_config.get("transaction", True) is not False
        batches = []
        for batch in split_batches(query):
            used = query_parameter_names(batch.text)
            statement, values = build_statement(
                batch.text, {k: v for k, v in parameters.items() if k in used}
            )
            batches.append(PreparedBatch(statement, values, batch.repeat, batch.first_line))
        limits = self.context.resources
        async with engine.connect() as conn:
            state.phase = _Phase.SETUP
            try:
                if not transaction:
                    await conn.execution_options(isolation_level="AUTOCOMMIT")
                state.session = await server_session(conn)
                if transaction:
                    await conn.begin()
                state.check_abort()
                raw = await conn.get_raw_connection()
                assert state.session.mssql is not None
                state.phase = _Phase.EXECUTING
                try:
                    outcome = await run_batches(
                        raw.driver_connection,
                        conn.dialect,
                        state.session.mssql,
                        batches,
                        fetch=bool(self.step_config.get("fetch_results", True)),
                        max_rows=limits.max_result_rows,
                        max_bytes=limits.max_output_bytes,
                        check_abort=state.check_abort,
                    )
                finally:
                    state.phase = _Phase.FINISHING
                state.check_abort()
                if transaction and cfg.read_only:
                    await conn.rollback()
                elif transaction:
                    await conn.commit()
            except BaseException:
                await _undo(conn, cfg.family, aborted=state.aborting)
                raise
        rows: QueryRows | None = None
        if outcome.columns is not None:
            if outcome.rows is None:
                rows = QueryRows(outcome.columns, [], False, "[]", fetched=False)
            else:
                capped = outcome.rows
                rows = QueryRows(outcome.columns, capped.rows, capped.truncated, capped.json_text)
        return rows, outcome.affected_rows

    async def _run_prepared(
        self, conn: Connection, driver: Any, sql: str, args: list[Any]
    ) -> tuple[QueryRows | None, int | None]:
        """PostgreSQL in autocommit through asyncpg itself: the statement prepared once per
        pooled connection (``prepared_statement``), then one bind/execute round trip. The
        same statement text SQLAlchemy would send, the same bound values; driver errors
        come out as SQLAlchemy's ``DBAPIError`` like on the other path."""
        prepared, rows = await _on_driver(
            conn, driver, sql, _fetch_prepared(conn.info, driver, sql, args)
        )
        match = _ROWCOUNT.match(prepared.get_statusmsg() or "")
        affected = int(match.group(1)) if match else None
        attributes = prepared.get_attributes()
        if not attributes:
            return None, affected
        if not modifies_rows(str(self.step_config.get("query") or "")):
            affected = None  # a SELECT's count is row_count, not rows affected (as _collect)
        columns = unique_column_names([a.name for a in attributes])
        if not self.step_config.get("fetch_results", True):
            return QueryRows(columns, [], False, "[]", fetched=False), affected
        limits = self.context.resources
        capped = cap_rows(
            columns, rows, max_rows=limits.max_result_rows, max_bytes=limits.max_output_bytes
        )
        return QueryRows(columns, capped.rows, capped.truncated, capped.json_text), affected

    def _collect(self, cursor: CursorResult[Any]) -> tuple[QueryRows | None, int | None]:
        rowcount = cursor.rowcount
        affected = rowcount if rowcount is not None and rowcount >= 0 else None
        if not cursor.returns_rows:
            return None, affected
        if not modifies_rows(str(self.step_config.get("query") or "")):
            # PostgreSQL and MariaDB report a SELECT's row count as its rowcount: that is
            # row_count, not rows affected (INSERT ... RETURNING keeps its count).
            affected = None
        columns = unique_column_names(cursor.keys())
        try:
            if not self.step_config.get("fetch_results", True):
                return QueryRows(columns, [], False, "[]", fetched=False), affected
            limits = self.context.resources
            capped = cap_rows(
                columns, cursor, max_rows=limits.max_result_rows, max_bytes=limits.max_output_bytes
            )
            return QueryRows(columns, capped.rows, capped.truncated, capped.json_text), affected
        finally:
            cursor.close()

    # -- cancellation -----------------------------------------------------------------------
    async def _abort(
        self,
        worker: asyncio.Task[tuple[QueryRows | None, int | None]],
        state: _RunState,
        registry: ConnectionRegistry,
        cfg: ConnectionConfig,
    ) -> None:
        """Stop the worker's statement on the server, then wait for the worker to end."""
        state.aborting = True
        grace = max(float(self.context.resources.kill_grace_seconds), 0.1)
        try:
            if worker.done():
                return
            if state.phase is _Phase.EXECUTING and state.session is not None:
                await _stop_on_server(worker, state.session, registry, cfg, grace)
            if not worker.done():
                # Not (or no longer) in a statement: checkout, setup or commit. Cancelling
                # makes SQLAlchemy discard the connection; one on its way back into the pool
                # is let get there.
                if state.phase is not _Phase.RELEASING:
                    worker.cancel()
                await asyncio.wait({worker}, timeout=grace)
            if not worker.done():
                log.error("SQL step %s: worker did not stop within %.1fs", self.step_id, grace)
                _orphan(worker)
        finally:
            if worker.done() and not worker.cancelled():
                worker.exception()  # retrieved: the step reports the cancellation instead


class _Phase(enum.Enum):
    CONNECTING = "connecting"
    SETUP = "setup"
    EXECUTING = "executing"
    FINISHING = "finishing"
    RELEASING = "releasing"


class _Aborted(Exception):
    """The step was cancelled: the worker stops instead of committing."""


@dataclass
class _RunState:
    phase: _Phase = _Phase.CONNECTING
    session: ServerSession | None = None
    aborting: bool = False

    def check_abort(self) -> None:
        if self.aborting:
            raise _Aborted


@dataclass(frozen=True)
class QueryRows:
    """Rows of a row-returning statement, converted and capped."""

    columns: list[str]
    rows: list[dict[str, JsonValue]]
    truncated: bool
    json_text: str
    fetched: bool = True


# -- statement and parameters ---------------------------------------------------------------------


def query_parameter_names(query: str) -> frozenset[str]:
    """Names of the ``:name`` placeholders SQLAlchemy's ``text()`` finds in ``query``
    (cached: a job's queries are checked at submission and again on every run)."""
    return _placeholders(query)


@functools.lru_cache(maxsize=1024)
def _placeholders(query: str) -> frozenset[str]:
    return frozenset(text(query).compile().params)


_LEADING_NOISE = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/|\()*", re.DOTALL)
_DML = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE"})


@functools.lru_cache(maxsize=1024)
def modifies_rows(query: str) -> bool:
    """Whether ``query`` is a data-changing statement (INSERT, UPDATE, DELETE, MERGE,
    REPLACE), judged by its first keyword after comments and parentheses. A row-returning
    statement that is not one (SELECT, WITH, VALUES, SHOW, ...) has no affected rows."""
    rest = _LEADING_NOISE.sub("", query, count=1)
    word = re.match(r"[A-Za-z]+", rest)
    return word is not None and word.group(0).upper() in _DML


def parameter_problems(query: str, parameters: Mapping[str, Any]) -> list[str]:
    used = query_parameter_names(query)
    problems = []
    missing = sorted(used - set(parameters))
    unused = sorted(set(parameters) - used)
    if missing:
        problems.append(
            "the query uses :"
            + ", :".join(missing)
            + " but no value is given (a literal colon before a name is written \\:)"
        )
    if unused:
        problems.append(
            "given but not used by the query: "
            + ", ".join(unused)
            + " (write placeholders as :name; use CAST(:name AS type), not :name::type)"
        )
    return problems


def _list_problem(items: list[Any], *, allow_references: bool) -> str | None:
    for item in items:
        if isinstance(item, _SCALARS):
            continue
        if allow_references and isinstance(item, dict) and REFERENCE_KEY in item:
            continue
        return "a list parameter may hold only strings, numbers, booleans and nulls"
    return None


def build_statement(query: str, parameters: Mapping[str, Any]) -> tuple[TextClause, dict[str, Any]]:
    """``text(query)`` with list parameters marked expanding, and the values to bind.

    An expanding parameter renders its own parentheses (``IN :ids`` -> ``IN ($1, $2)``), so
    the natural spelling ``IN (:ids)`` is reduced to ``IN :ids`` for list parameters (it
    would otherwise become the row value ``IN (($1, $2))``).
    """
    for name, value in parameters.items():
        if isinstance(value, list):
            query = re.sub(rf"\(\s*:{re.escape(name)}\s*\)", f":{name}", query)
    statement = text(query)
    expanding: list[BindParameter[Any]] = [
        bindparam(name, expanding=True) for name, v in parameters.items() if isinstance(v, list)
    ]
    if expanding:
        statement = statement.bindparams(*expanding)
    values = {
        name: dumps(to_json_safe(v)) if isinstance(v, dict) else v for name, v in parameters.items()
    }
    return statement, values


# -- the PostgreSQL fast path ------------------------------------------------------------------
#: What the driver's status message says about the rows a statement touched (as SQLAlchemy's
#: asyncpg adapter reads it for ``rowcount``).
_ROWCOUNT = re.compile(r"(?:SELECT|UPDATE|DELETE|INSERT \d+) (\d+)")
_STATEMENTS_KEY = "sql_step_prepared"
PREPARED_PER_CONNECTION = 256


def _asyncpg_statement(
    engine: AsyncEngine, cfg: ConnectionConfig, statement: TextClause, values: dict[str, Any]
) -> tuple[str, list[Any]] | None:
    """The SQL text and positional values to run ``statement`` through asyncpg directly, or
    None where the SQLAlchemy path runs it: other databases and drivers, transactions
    (only autocommit connections take this path), and expanding (list) parameters."""
    if cfg.family != "postgresql" or not cfg.autocommit or engine.dialect.driver != "asyncpg":
        return None
    if any(isinstance(v, list | tuple) for v in values.values()):
        return None
    sql, names = _compiled(engine.dialect, statement)
    return sql, [values[name] for name in names]


def _compiled(dialect: Any, statement: TextClause) -> tuple[str, tuple[str, ...]]:
    """``statement`` compiled for ``dialect`` (what SQLAlchemy would send) and the order of
    its parameters; cached by the statement's text."""
    key = (dialect.name, dialect.driver, statement.text)
    hit = _COMPILED.get(key)
    if hit is None:
        compiled = statement.compile(dialect=dialect)
        hit = (str(compiled), tuple(compiled.positiontup or ()))
        if len(_COMPILED) >= 1024:
            _COMPILED.clear()
        _COMPILED[key] = hit
    return hit


_COMPILED: dict[tuple[str, str, str], tuple[str, tuple[str, ...]]] = {}


async def prepared_statement(info: dict[Any, Any], driver: Any, sql: str) -> Any:
    """The asyncpg prepared statement of ``sql`` on this pooled connection, prepared on
    first use and kept in the connection's ``info`` (SQLAlchemy clears it when the DBAPI
    connection is replaced), at most ``PREPARED_PER_CONNECTION`` (least recently used out)."""
    cache = info.get(_STATEMENTS_KEY)
    if not isinstance(cache, OrderedDict) or info.get(_STATEMENTS_KEY + "_of") is not driver:
        cache = OrderedDict()
        info[_STATEMENTS_KEY] = cache
        info[_STATEMENTS_KEY + "_of"] = driver
    prepared = cache.get(sql)
    if prepared is not None:
        cache.move_to_end(sql)
        return prepared
    prepared = await driver.prepare(sql)
    cache[sql] = prepared
    if len(cache) > PREPARED_PER_CONNECTION:
        cache.popitem(last=False)
    return prepared


def forget_prepared(info: dict[Any, Any]) -> None:
    info.pop(_STATEMENTS_KEY, None)


async def _fetch_prepared(
    info: dict[Any, Any], driver: Any, sql: str, args: list[Any]
) -> tuple[Any, list[Any]]:
    """The prepared statement of ``sql`` and the rows it returned for ``args``."""
    try:
        prepared = await prepared_statement(info, driver, sql)
        return prepared, await prepared.fetch(*args)
    except (InvalidCachedStatementError, OutdatedSchemaCacheError):
        forget_prepared(info)  # the schema changed under the plan: prepare again
        prepared = await prepared_statement(info, driver, sql)
        return prepared, await prepared.fetch(*args)


#: What a read-only session's setup is reported as when it fails (as ``DBAPIError.statement``).
_PG_SETUP = "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"


async def _on_driver(conn: Connection, driver: Any, sql: str, call: Awaitable[_T]) -> _T:
    """Await ``call`` on ``conn``'s asyncpg connection ``driver``; its errors come out as
    SQLAlchemy's ``DBAPIError`` (as from ``conn.execute``), and a connection the server
    closed is discarded instead of going back into the pool."""
    try:
        return await call
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        if isinstance(exc, _CONNECTION_LOST) or driver.is_closed():
            await greenlet_spawn(conn.invalidate)  # the next step gets a new connection
        raise DBAPIError(sql, None, exc, connection_invalidated=conn.invalidated) from exc


# -- errors -----------------------------------------------------------------------------------


def describe_error(exc: BaseException, secrets: list[str]) -> str:
    """A concise message from the driver: no SQL echo, no parameters, no URL or password."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        message = _driver_message(exc.orig)
    elif isinstance(exc, SQLAlchemyError):
        orig = getattr(exc, "orig", None)
        message = str(orig) if orig is not None else (str(exc.args[0]) if exc.args else "")
        message = f"{type(exc).__name__}: {message}"
    elif isinstance(exc, OSError):
        message = f"cannot reach the database: {exc}"
    else:
        message = f"{type(exc).__name__}: {exc}"
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 3:
            message = message.replace(secret, "***")
    if len(message) > MAX_ERROR_LENGTH:
        message = message[: MAX_ERROR_LENGTH - 3] + "..."
    return message


def _driver_message(orig: BaseException) -> str:
    # asyncpg errors reach us wrapped by SQLAlchemy's adapter: the native one is the cause.
    native = orig.__cause__ if orig.__cause__ is not None else orig
    odbc = odbc_message(native)  # pyodbc: (SQLSTATE, message)
    if odbc is not None:
        return odbc
    kind = type(native).__name__
    sqlstate = getattr(native, "sqlstate", None)
    args: tuple[Any, ...] = tuple(getattr(native, "args", ()))
    if len(args) == 2 and isinstance(args[0], int):  # PyMySQL: (errno, message)
        codes = f"MySQL {args[0]}" + (f", SQLSTATE {sqlstate}" if sqlstate else "")
        return f"{kind}: {args[1]} [{codes}]"
    message = str(native)
    detail = getattr(native, "detail", None)  # asyncpg: e.g. "Key (id)=(1) already exists."
    if detail:
        message += f" ({detail})"
    return f"{kind}: {message}" + (f" [SQLSTATE {sqlstate}]" if sqlstate else "")


# -- connection clean-up and cancellation helpers ---------------------------------------------
#: asyncpg errors that mean the connection itself is gone (a database restart, a terminated
#: backend): it is discarded instead of going back into the pool.
_CONNECTION_LOST = (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError)
#: How many dead pooled connections one checkout discards before it takes what it gets.
_MAX_DEAD_CHECKOUTS = 64


@contextlib.asynccontextmanager
async def _live_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A pooled connection whose server end is still open. asyncpg knows when the server
    closed one (a database restart, a terminated backend); such a connection is discarded
    here, before any statement is sent on it, so a restart costs no step a failure. (The
    pool's own check runs only on connections idle for 10 s.)"""
    for _ in range(_MAX_DEAD_CHECKOUTS):
        async with engine.connect() as conn:
            if not await _closed_by_server(conn):
                yield conn
                return
            await conn.invalidate()
    async with engine.connect() as conn:
        yield conn


async def _closed_by_server(conn: AsyncConnection) -> bool:
    if conn.dialect.driver != "asyncpg":
        return False
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    return bool(driver.is_closed())


def _checkout_live(engine: Engine) -> Connection:
    """:func:`_live_connection` for the PostgreSQL fast path, as one synchronous call (run
    in SQLAlchemy's greenlet bridge): a pooled connection whose asyncpg end is still open."""
    for _ in range(_MAX_DEAD_CHECKOUTS):
        conn = engine.connect()
        driver: Any = conn.connection.driver_connection
        if not driver.is_closed():
            return conn
        try:
            conn.invalidate()
        finally:
            conn.close()
    return engine.connect()


async def _undo(conn: AsyncConnection, family: str, *, aborted: bool) -> None:
    """Roll back; discard the connection instead if it may carry a stray cancel request."""
    if conn.invalidated:
        return
    if aborted and family != "sqlite":
        await conn.invalidate()
        return
    try:
        await conn.rollback()
    except Exception:
        log.warning("rollback failed; discarding the connection", exc_info=True)
        await conn.invalidate()


async def _reset_read_only(conn: AsyncConnection, family: str) -> None:
    try:
        await end_read_only(conn, family)
        await conn.commit()
    except Exception:
        log.warning("could not reset read-only mode; discarding the connection", exc_info=True)
        await conn.invalidate()


async def _stop_on_server(
    worker: asyncio.Task[Any],
    session: ServerSession,
    registry: ConnectionRegistry,
    cfg: ConnectionConfig,
    grace: float,
) -> None:
    """Ask the server to cancel the running statement until the worker returns; terminate the
    session if it has not within ``grace`` seconds. SQLite and SQL Server cancel without a
    control connection (SQL Server opens one only to terminate)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    interval = 0.05 if session.family == "sqlite" else 0.25
    async with AsyncExitStack() as stack:

        async def open_control() -> AsyncConnection | None:
            try:
                return await stack.enter_async_context(
                    registry.get_control_engine(cfg.name).connect()
                )
            except Exception as exc:
                log.warning(
                    "cannot open a control connection to stop a query on %r: %s",
                    cfg.name,
                    describe_error(exc, cfg.secrets()),
                )
                return None

        control: AsyncConnection | None = None
        if session.family in ("postgresql", "mysql"):
            control = await open_control()
            if control is None:
                return
        while not worker.done() and loop.time() < deadline:
            try:
                await session.cancel_query(control)
            except Exception as exc:
                log.warning("cancel request failed: %s", describe_error(exc, cfg.secrets()))
                return
            await asyncio.wait({worker}, timeout=min(interval, max(deadline - loop.time(), 0)))
        if not worker.done():
            log.warning(
                "query on %r ignored cancel for %.1fs; terminating session", cfg.name, grace
            )
            if control is None and session.family == "mssql":
                control = await open_control()  # KILL <spid>
            try:
                await session.terminate(control)
            except Exception as exc:
                log.warning("terminate failed: %s", describe_error(exc, cfg.secrets()))
            await asyncio.wait({worker}, timeout=grace)


async def _finish_despite_cancellation(cleanup: Coroutine[Any, Any, None], *, name: str) -> None:
    """Run ``cleanup`` to its end even if the caller is cancelled again meanwhile (it is
    bounded by the grace periods); the caller re-raises its own cancellation afterwards."""
    task = asyncio.create_task(cleanup, name=name)
    while True:
        try:
            await asyncio.shield(task)
            return
        except asyncio.CancelledError:
            if task.done():
                return
        except Exception:
            log.exception("clean-up after cancelling a SQL step failed")
            return


_orphans: set[asyncio.Task[Any]] = set()


def _orphan(task: asyncio.Task[Any]) -> None:
    """Keep a worker that would not stop referenced until it does (and its error read)."""
    _orphans.add(task)

    def _done(t: asyncio.Task[Any]) -> None:
        _orphans.discard(t)
        if not t.cancelled():
            t.exception()

    task.add_done_callback(_done)
