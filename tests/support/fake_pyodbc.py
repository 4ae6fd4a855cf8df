"""A stand-in for SQL Server at pyodbc's boundary (there is no SQL Server on these machines).

Everything above ``pyodbc.connect`` is real: the SQL step, SQLAlchemy's ``mssql+aioodbc``
dialect and pool, aioodbc's threads. :class:`FakeServer` replaces only what pyodbc would get
from the ODBC driver: it records every connect string, statement, parameter, commit, rollback,
autocommit switch and cancel, and answers statements from a script:

* the queries SQLAlchemy's dialect sends when it connects (version, schema, isolation level);
* ``SELECT @@SPID`` (each connection gets its own SPID);
* a statement registered with :meth:`FakeServer.answer` gets its result sets (rows with
  ODBC type codes; a ``bytes`` value of type -155 goes through the connection's output
  converter, as pyodbc does for ``datetimeoffset``), or raises a pyodbc error;
* ``WAITFOR`` blocks its thread until the cursor is cancelled (then raises HY008, as the
  driver does), or, with ``ignore_cancel``, until a ``KILL`` of its SPID arrives on another
  connection.

Errors are pyodbc's own exception classes, shaped as pyodbc shapes them.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyodbc

#: ODBC SQL type codes (sql.h / SQL Server's sqlncli.h).
SQL_INTEGER = 4
SQL_DECIMAL = 3
SQL_WVARCHAR = -9
SQL_GUID = -11
SQL_BINARY = -2
SQL_SS_TIMESTAMPOFFSET = -155


@dataclass
class ResultSet:
    columns: Sequence[tuple[str, int]] = ()  # (name, ODBC type code); empty: a row count
    rows: Sequence[Sequence[Any]] = ()
    rowcount: int = -1


@dataclass
class Answer:
    results: list[ResultSet] = field(default_factory=list)
    error: BaseException | None = None  # raised by execute
    error_on_next_set: BaseException | None = None  # raised by nextset after the results


def sql_error(
    sqlstate: str, message: str, cls: type[pyodbc.Error] = pyodbc.ProgrammingError
) -> pyodbc.Error:
    return cls(sqlstate, f"[{sqlstate}] [FreeTDS][SQL Server]{message} (SQLExecDirectW)")


@dataclass
class Event:
    kind: str  # connect, execute, commit, rollback, autocommit, cancel, close
    spid: int
    detail: Any = None
    thread: int = 0


class FakeServer:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.answers: dict[str, Answer] = {}
        self.ignore_cancel = False
        self.waiting = threading.Event()  # a WAITFOR is blocked in the "driver"
        self._spids = itertools.count(51)
        self._lock = threading.Lock()
        self._sessions: dict[int, FakeConnection] = {}

    def answer(self, statement: str, *results: ResultSet, **kw: Any) -> None:
        """Answer ``statement`` (compared with runs of whitespace as one space)."""
        self.answers[" ".join(statement.split())] = Answer(list(results), **kw)

    def record(self, kind: str, spid: int, detail: Any = None) -> None:
        with self._lock:
            self.events.append(Event(kind, spid, detail, threading.get_ident()))

    def of(self, kind: str) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.kind == kind]

    def statements(self) -> list[tuple[str, tuple[Any, ...]]]:
        """The step's statements (the dialect's own set-up queries left out)."""
        return [e.detail for e in self.of("execute") if not _is_setup(e.detail[0])]

    def connect(self, dsn: str, **kwargs: Any) -> FakeConnection:
        spid = next(self._spids)
        conn = FakeConnection(self, spid, autocommit=bool(kwargs.get("autocommit", False)))
        self._sessions[spid] = conn
        self.record("connect", spid, dsn)
        return conn

    def kill(self, spid: int) -> None:
        target = self._sessions.get(spid)
        if target is not None:
            target.killed.set()


def _is_setup(sql: str) -> bool:
    return sql in _SETUP or sql == "SELECT @@SPID"


# What SQLAlchemy's mssql dialect asks when it first connects, and what a SQL Server 2022
# would answer.
_SETUP: dict[str, list[ResultSet]] = {}


def _setup(sql: str, columns: Sequence[tuple[str, int]], *rows: Sequence[Any]) -> None:
    _SETUP[sql] = [ResultSet(columns, rows)]


_setup(
    "SELECT CAST(SERVERPROPERTY('ProductVersion') AS VARCHAR)",
    [("", SQL_WVARCHAR)],
    ("16.0.1000.6",),
)
_setup("SELECT schema_name()", [("", SQL_WVARCHAR)], ("dbo",))
_setup(
    "SELECT name FROM sys.system_views WHERE name IN "
    "('dm_exec_sessions', 'dm_pdw_nodes_exec_sessions')",
    [("name", SQL_WVARCHAR)],
    ("dm_exec_sessions",),
)
_setup(
    "SELECT CASE transaction_isolation_level WHEN 0 THEN NULL WHEN 1 THEN 'READ UNCOMMITTED' "
    "WHEN 2 THEN 'READ COMMITTED' WHEN 3 THEN 'REPEATABLE READ' WHEN 4 THEN 'SERIALIZABLE' "
    "WHEN 5 THEN 'SNAPSHOT' END AS TRANSACTION_ISOLATION_LEVEL FROM sys.dm_exec_sessions "
    "where session_id = @@SPID",
    [("TRANSACTION_ISOLATION_LEVEL", SQL_WVARCHAR)],
    ("READ COMMITTED",),
)
_setup(
    "SELECT CAST('test max support' AS NVARCHAR(max))", [("", SQL_WVARCHAR)], ("test max support",)
)
_setup(
    "SELECT 1 FROM fn_listextendedproperty(default, default, default, default, default, "
    "default, default)",
    [("", SQL_INTEGER)],
)
_setup("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", [])


class FakeConnection:
    def __init__(self, server: FakeServer, spid: int, *, autocommit: bool) -> None:
        self.server = server
        self.spid = spid
        self._autocommit = autocommit
        self.converters: dict[int, Callable[[bytes], Any]] = {}
        self.killed = threading.Event()
        self.closed = False
        self.timeout = 0

    @property
    def autocommit(self) -> bool:
        return self._autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self._autocommit = value
        self.server.record("autocommit", self.spid, value)

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def commit(self) -> None:
        self.server.record("commit", self.spid)

    def rollback(self) -> None:
        self.server.record("rollback", self.spid)

    def close(self) -> None:
        self.closed = True
        self.killed.set()
        self.server.record("close", self.spid)

    def getinfo(self, what: int) -> Any:
        if what == pyodbc.SQL_DRIVER_NAME:
            return "libtdsodbc.so"
        return "16.00.1000"

    def add_output_converter(self, sqltype: int, func: Callable[[bytes], Any]) -> None:
        self.converters[sqltype] = func

    def setencoding(self, *a: Any, **kw: Any) -> None:
        pass

    def setdecoding(self, *a: Any, **kw: Any) -> None:
        pass


class FakeCursor:
    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn
        self.description: list[tuple[Any, ...]] | None = None
        self.rowcount = -1
        self._sets: list[ResultSet] = []
        self._rows: list[tuple[Any, ...]] = []
        self._pending_error: BaseException | None = None
        self.cancelled = threading.Event()
        self.arraysize = 1

    # -- execution ---------------------------------------------------------------------
    def execute(self, sql: str, *params: Any) -> FakeCursor:
        server = self.conn.server
        if len(params) == 1 and isinstance(params[0], tuple | list):
            params = tuple(params[0])
        stripped = " ".join(sql.split())
        server.record("execute", self.conn.spid, (stripped, tuple(params)))
        if stripped.startswith("KILL "):
            server.kill(int(stripped.split()[1]))
            self._load([ResultSet()])
            return self
        if "WAITFOR" in stripped.upper():
            server.waiting.set()
            while True:
                if self.cancelled.is_set() and not server.ignore_cancel:
                    raise pyodbc.OperationalError(
                        "HY008", "[HY008] [FreeTDS][SQL Server]Operation canceled (SQLExecDirectW)"
                    )
                if self.conn.killed.wait(0.01):
                    raise pyodbc.OperationalError(
                        "08S01",
                        "[08S01] [FreeTDS][SQL Server]Communication link failure (SQLExecDirectW)",
                    )
        if stripped in _SETUP:
            self._load(_SETUP[stripped])
            return self
        if stripped == "SELECT @@SPID":
            self._load([ResultSet([("", SQL_INTEGER)], [(self.conn.spid,)])])
            return self
        answer = server.answers.get(stripped)
        if answer is None:
            raise sql_error("42000", f"fake server has no answer for {stripped!r}")
        if answer.error is not None:
            raise answer.error
        self._load(answer.results)
        self._pending_error = answer.error_on_next_set
        return self

    def _load(self, sets: list[ResultSet]) -> None:
        self._sets = list(sets) or [ResultSet()]
        self._show(self._sets.pop(0))

    def _show(self, rs: ResultSet) -> None:
        if rs.columns:
            self.description = [
                (name, code, None, None, None, None, True) for name, code in rs.columns
            ]
            codes = [code for _, code in rs.columns]
            self._rows = [
                tuple(self._convert(v, c) for v, c in zip(row, codes, strict=True))
                for row in rs.rows
            ]
            self.rowcount = -1
        else:
            self.description = None
            self._rows = []
            self.rowcount = rs.rowcount

    def _convert(self, value: Any, code: int) -> Any:
        converter = self.conn.converters.get(code)
        if converter is not None and isinstance(value, bytes):
            return converter(value)
        return value

    def nextset(self) -> bool:
        if self._sets:
            self._show(self._sets.pop(0))
            return True
        if self._pending_error is not None:
            error, self._pending_error = self._pending_error, None
            raise error
        self.description, self._rows = None, []
        return False

    def cancel(self) -> None:
        self.conn.server.record("cancel", self.conn.spid)
        self.cancelled.set()

    # -- fetching -----------------------------------------------------------------------
    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows.pop(0) if self._rows else None

    def fetchmany(self, size: int = 0) -> list[tuple[Any, ...]]:
        size = size or self.arraysize
        out, self._rows = self._rows[:size], self._rows[size:]
        return out

    def fetchall(self) -> list[tuple[Any, ...]]:
        out, self._rows = self._rows, []
        return out

    def close(self) -> None:
        pass

    def setinputsizes(self, *a: Any) -> None:
        pass
