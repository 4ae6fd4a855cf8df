"""SQL Server (``mssql+aioodbc``): what the SQL step does differently on it.

**Driver.** SQLAlchemy's ``mssql+aioodbc`` dialect: aioodbc runs pyodbc calls on a thread,
pyodbc talks to unixODBC, unixODBC loads the ODBC driver the URL names (``driver=FreeTDS``
from Debian's ``tdsodbc``, or ``driver=ODBC Driver 18 for SQL Server``). :func:`driver_problem`
says at start-up, in one line, which of these pieces is missing.

**Batches.** A step's query is split on ``GO`` lines (:mod:`app.steps.tsql`); the batches run
in order on one connection through the raw aioodbc cursor, each batch's result sets read to
the end with ``nextset()``: SQL Server reports an error in the second statement of a batch only
when the client reaches its result, so a batch that is not drained could "succeed" and commit
half its work. The rows of the last result set that has columns are the step's rows;
``affected_rows`` adds up the row counts of the statements that changed rows.

**Cancel.** A step timeout or cancel calls pyodbc ``Cursor.cancel()`` (ODBC ``SQLCancel``) from
another thread while the statement runs. The driver sends a TDS *attention* on the session's
own connection; the server stops the batch and rolls back the statement. Chosen over
``KILL <spid>`` from a second connection because it needs no permission (``KILL`` needs
``ALTER ANY CONNECTION``, which a job's login should not have), no second login, and it
cannot hit another session should the SPID be reused. ``KILL`` remains the last resort
when the server has not stopped within the grace period (it works where the login may).
Each engine's connections run their driver calls on a thread pool of their own
(:func:`own_threads`) and ``SQLCancel`` runs on another: statements blocked in the driver
cannot hold the thread a cancel needs.

**Read-only.** A ``read_only`` connection's URL gets ``ApplicationIntent=ReadOnly``: an
Availability Group listener or Azure SQL read scale-out routes it to a readable secondary,
where every write fails. SQL Server has no read-only transaction (no ``SET TRANSACTION READ
ONLY``), so on a primary the step's transaction is rolled back instead of committed: a write
is undone, and ``transaction: false`` is refused on such a connection. A read-only database
user is what makes it a security boundary.

**Types** come back through :func:`app.steps.sql_values.to_json_safe`: ``money`` and
``decimal`` arrive as ``Decimal`` (strings with every digit), ``uniqueidentifier`` as its text,
``datetimeoffset`` as an aware ``datetime`` (SQLAlchemy's output converter for ODBC type -155,
ISO 8601 with the offset), ``rowversion``/``binary`` as bytes (base64).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import TextClause

from app.steps.sql_values import CappedRows, cap_rows, unique_column_names

_ODBC_CONNECT = "odbc_connect"
_INTENT = re.compile(r"(^|;)\s*ApplicationIntent\s*=[^;]*", re.IGNORECASE)
_SQLSTATE_PREFIX = re.compile(r"^\[[0-9A-Z]{5}\]\s*")
_DRIVER = re.compile(r"(?:^|;)\s*DRIVER\s*=\s*(\{(?:[^}]|\}\})*\}|[^;]*)", re.IGNORECASE)


# -- connection URL -------------------------------------------------------------------------------


def connect_url(url: str, *, read_only: bool) -> str:
    """The URL an engine for this connection entry opens: ``read_only`` entries get
    ``ApplicationIntent=ReadOnly`` (replacing any ``ApplicationIntent`` the entry gave), in
    the URL's query or inside its ``odbc_connect`` string."""
    if not read_only:
        return url
    parsed = make_url(url)
    query = dict(parsed.query)
    if _ODBC_CONNECT in query:
        raw = str(query[_ODBC_CONNECT])
        raw = _INTENT.sub("", raw).rstrip(";")
        query[_ODBC_CONNECT] = f"{raw};ApplicationIntent=ReadOnly"
    else:
        query = {k: v for k, v in query.items() if k.lower() != "applicationintent"}
        query["ApplicationIntent"] = "ReadOnly"
    return parsed.set(query=query).render_as_string(hide_password=False)


def odbc_driver_name(url: URL) -> str | None:
    """The ODBC driver the URL asks for (``driver=`` or ``DRIVER={..}`` in ``odbc_connect``);
    None for a DSN or an ``odbc_connect`` without one."""
    query = url.query
    if _ODBC_CONNECT in query:
        match = _DRIVER.search(str(query[_ODBC_CONNECT]))
        if not match:
            return None
        name = match.group(1).strip()
        return name[1:-1].replace("}}", "}") if name.startswith("{") else name
    driver = query.get("driver")
    return str(driver) if driver else None


def driver_problem(url: URL) -> str | None:
    """Why an ``mssql+aioodbc`` URL cannot connect from this machine, in one line (None when
    pyodbc loads and the ODBC driver the URL names is registered with unixODBC)."""
    try:
        # Imported here, not at the top: pyodbc needs libodbc, which only a machine with
        # SQL Server connections must have.
        import pyodbc
    except ImportError as exc:
        return (
            f"pyodbc cannot load ({exc}): install unixODBC and an ODBC driver "
            "(Debian: apt-get install unixodbc tdsodbc)"
        )
    wanted = odbc_driver_name(url)
    if wanted is None:
        if _ODBC_CONNECT in url.query or not url.database:
            return None  # a DSN: unixODBC resolves it when connecting
        return (
            "names no ODBC driver: add ?driver=FreeTDS (or ?driver=ODBC+Driver+18+for+SQL+Server)"
        )
    installed = list(pyodbc.drivers())
    if wanted not in installed:
        listed = ", ".join(repr(d) for d in installed) or "none"
        return (
            f"ODBC driver {wanted!r} is not registered with unixODBC (installed: {listed}; "
            "Debian: apt-get install tdsodbc for 'FreeTDS')"
        )
    return None


# -- threads ---------------------------------------------------------------------------------------

# SQLCancel must not wait for a free thread: the statements it would stop may hold them all.
_CANCEL_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mssql-cancel")


def own_threads(options: dict[str, Any], threads: int, name: str) -> ThreadPoolExecutor:
    """Give an engine's aioodbc connections a thread pool of their own (``threads``: one per
    connection the pool may open), set in ``options["connect_args"]``. aioodbc runs every
    pyodbc call on the loop's default executor otherwise, where blocked statements would
    starve each other, ``asyncio.to_thread`` users and their own cancel."""
    executor = ThreadPoolExecutor(max_workers=max(threads, 1), thread_name_prefix=f"mssql-{name}")
    options["connect_args"] = {**dict(options.get("connect_args") or {}), "executor": executor}
    return executor


# -- the session: cancel from outside -------------------------------------------------------------


class _CancellableCursor(Protocol):
    def cancel(self) -> None: ...


@dataclass
class MssqlSession:
    """The statement running on one pooled SQL Server connection, for :meth:`cancel`.

    ``spid`` is the server's session id (``@@SPID``); ``running`` the pyodbc cursor of the
    batch being executed, None between batches.
    """

    spid: int | None
    running: _CancellableCursor | None = field(default=None, repr=False)

    async def cancel(self) -> None:
        """ODBC ``SQLCancel`` on the running cursor, from a thread of its own (the statement's
        thread is blocked in the driver). Nothing to do between batches: the step checks for
        its abort before it starts the next one."""
        cursor = self.running
        if cursor is not None:
            await asyncio.get_running_loop().run_in_executor(_CANCEL_THREADS, cursor.cancel)

    def kill_statement(self) -> str | None:
        """``KILL <spid>`` for a control connection (the last resort), or None."""
        return f"KILL {int(self.spid)}" if self.spid is not None else None


async def read_spid(driver_connection: Any) -> int | None:
    """``@@SPID`` of an aioodbc connection (read on the raw cursor: no SQLAlchemy
    transaction starts, so the step may still switch the connection to autocommit)."""
    cursor = await driver_connection.cursor()
    try:
        await cursor.execute("SELECT @@SPID")
        row = await cursor.fetchone()
        return int(row[0]) if row is not None else None
    finally:
        await cursor.close()


# -- running batches -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedBatch:
    """A batch with its placeholders bound: the SQL text as given and its values."""

    statement: TextClause
    values: Mapping[str, Any]
    repeat: int = 1
    first_line: int = 1


@dataclass(frozen=True)
class BatchesOutcome:
    """What the batches returned: the last result set with columns (if any)."""

    columns: list[str] | None
    rows: CappedRows | None  # None when no result set had columns, or fetch_results is false
    affected_rows: int | None


class BatchError(DBAPIError):
    """A batch failed; ``label`` says which (``batch 2 of 3 (line 7)``)."""

    label: str


class AbortCheck(Protocol):
    def __call__(self) -> None: ...


async def run_batches(
    driver_connection: Any,
    dialect: Any,
    session: MssqlSession,
    batches: Sequence[PreparedBatch],
    *,
    fetch: bool,
    max_rows: int,
    max_bytes: int,
    check_abort: AbortCheck,
) -> BatchesOutcome:
    """Run ``batches`` in order on ``driver_connection`` (an aioodbc connection); the caller
    owns the transaction. ``check_abort`` raises when the step was cancelled; it is called
    before each batch and after each result.

    Raises:
        BatchError: the driver or the server failed a batch (wraps the pyodbc error)
    """
    columns: list[str] | None = None
    rows: CappedRows | None = None
    affected: int | None = None
    total = sum(b.repeat for b in batches)
    n = 0
    for batch in batches:
        compiled = batch.statement.compile(dialect=dialect)
        expanded = compiled.construct_expanded_state(dict(batch.values))
        sql, params = expanded.statement, tuple(expanded.positional_parameters)
        for _ in range(batch.repeat):
            n += 1
            check_abort()
            cursor = await driver_connection.cursor()
            try:
                session.running = cursor._impl
                try:
                    await cursor.execute(sql, *params)
                    while True:
                        check_abort()
                        description = cursor.description
                        if description:
                            columns = unique_column_names(d[0] for d in description)
                            if fetch:
                                fetched = await cursor.fetchmany(max_rows + 1)
                                rows = cap_rows(
                                    columns, fetched, max_rows=max_rows, max_bytes=max_bytes
                                )
                        elif cursor.rowcount is not None and cursor.rowcount >= 0:
                            affected = (affected or 0) + cursor.rowcount
                        if not await cursor.nextset():
                            break
                finally:
                    session.running = None
            except _driver_errors() as exc:
                label = f"batch {n} of {total} (line {batch.first_line})" if total > 1 else ""
                error = BatchError(sql, None, exc)
                error.label = label
                raise error from exc
            finally:
                await _close(cursor)
    return BatchesOutcome(columns, rows if fetch else None, affected)


def _driver_errors() -> tuple[type[BaseException], ...]:
    import pyodbc  # here, not at the top: see driver_problem

    return (pyodbc.Error,)


async def _close(cursor: Any) -> None:
    # A cancelled or broken cursor may fail to close: the connection is discarded anyway.
    with contextlib.suppress(Exception):
        await cursor.close()


# -- messages ---------------------------------------------------------------------------------


def odbc_message(native: BaseException) -> str | None:
    """pyodbc's ``('42S02', '[42S02] [FreeTDS][SQL Server]Invalid object name ...')`` as
    ``ProgrammingError: [FreeTDS][SQL Server]Invalid object name ... [SQLSTATE 42S02]``;
    None for an error that is not pyodbc's shape."""
    args: tuple[Any, ...] = tuple(getattr(native, "args", ()))
    if not (
        len(args) == 2
        and isinstance(args[0], str)
        and isinstance(args[1], str)
        and re.fullmatch(r"[0-9A-Z]{5}", args[0])
    ):
        return None
    return f"{type(native).__name__}: {_SQLSTATE_PREFIX.sub('', args[1])} [SQLSTATE {args[0]}]"
