"""The group-commit writer's batches, executed through the database driver.

A batch is a few history statements (``repositories.history_statement``), each run for a
group of rows. Through ``Connection.execute`` each of them cost ~300 us of SQLAlchemy
(execution context, parameter construction, events) around ~70 us in the driver. Here a
statement is compiled once per dialect into its SQL text, the order of its positional
parameters, their bind processors and the Python-side column defaults it fills in
(``DriverStatement``), and each group of rows goes to the DB-API cursor of the SQLAlchemy
connection as one ``executemany``, inside that connection's transaction: the standard
``sqlite3`` cursor, or SQLAlchemy's asyncpg adapter (asyncpg's ``executemany`` of a
prepared statement, in the transaction the adapter began; the store runs a batch of one
statement in autocommit, where that ``executemany`` is atomic by itself).

What is stored is what ``Connection.execute`` stores: the same SQL, bind processors and
defaults. A driver error goes through SQLAlchemy's own handling of it (wrapped in its
``DBAPIError``, a lost connection invalidated), so ``app.sqlpool.is_transient`` classifies
it as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from app.persistence.database import raise_as_sqlalchemy
from app.persistence.repositories import CREATION_ONLY, HISTORY_KINDS, history_statement

HistoryRow = tuple[str, dict[str, Any]]
#: (kind, bound columns, rows of parameters): one statement executed for many rows.
HistoryGroup = tuple[str, tuple[str, ...], list[dict[str, Any]]]

# Where a positional parameter's value comes from.
_PARAM, _CONSTANT, _DEFAULT = range(3)


class DriverStatement:
    """A history statement compiled for one dialect: its SQL and how to turn rows of
    parameters into the driver's positional tuples."""

    __slots__ = ("_slots", "sql")

    def __init__(self, statement: Any, columns: tuple[str, ...], dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if compiled.positiontup is None or compiled.post_compile_params:
            raise ValueError(f"{dialect.name} history statements need positional parameters")
        binds = {name: bind for bind, name in compiled.bind_names.items()}
        defaults = {column.key: column.default for column in compiled.insert_prefetch}
        if compiled.update_prefetch:
            raise ValueError("history statements do not run UPDATE defaults")
        self.sql: str = compiled.string
        self._slots: list[tuple[int, Any, Callable[[Any], Any] | None]] = []
        for name in compiled.positiontup:
            bind = binds[name]
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            default = defaults.get(name)
            if name in columns:  # as construct_params: a given value wins
                self._slots.append((_PARAM, name, process))
            elif default is not None and default.is_callable:
                self._slots.append((_DEFAULT, default.arg, process))
            else:
                if default is not None and default.is_scalar:
                    value = default.arg
                elif default is None and not bind.required:
                    value = bind.effective_value
                else:
                    raise ValueError(f"no value for {name!r} in a history statement")
                processed = value if process is None else process(value)
                self._slots.append((_CONSTANT, processed, None))

    def args(self, rows: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
        """The driver's parameters of ``rows`` (processed as SQLAlchemy would)."""
        out = []
        for params in rows:
            values = []
            for source, key, process in self._slots:
                if source == _PARAM:
                    value = params[key]
                elif source == _CONSTANT:
                    values.append(key)
                    continue
                else:
                    value = key(None)  # a wrapped column default: ignores its context
                values.append(value if process is None else process(value))
            out.append(tuple(values))
        return out


_COMPILED: dict[tuple[str, str, str, tuple[str, ...]], DriverStatement] = {}


def driver_statement(dialect: Dialect, kind: str, columns: tuple[str, ...]) -> DriverStatement:
    """The history statement of ``kind`` binding ``columns``, compiled for ``dialect``."""
    key = (dialect.name, dialect.driver, kind, columns)
    compiled = _COMPILED.get(key)
    if compiled is None:
        statement = history_statement(dialect.name == "postgresql", kind, columns)
        compiled = _COMPILED[key] = DriverStatement(statement, columns, dialect)
    return compiled


def _fold_pending(rows: Sequence[HistoryRow]) -> list[HistoryRow]:
    """An execution with both a "pending" and a "job" write in one batch gets one insert:
    the job write carrying the creation columns (an upsert that never changes them)."""
    pending = {p["execution_id"]: p for kind, p in rows if kind == "pending"}
    if not pending:
        return list(rows)
    folded: set[str] = set()
    out: list[HistoryRow] = []
    for kind, params in rows:
        created = pending.get(params.get("execution_id", "")) if kind == "job" else None
        if created is not None:
            params = {**{c: created[c] for c in CREATION_ONLY if c in created}, **params}
            folded.add(params["execution_id"])
        out.append((kind, params))
    return [(k, p) for k, p in out if not (k == "pending" and p["execution_id"] in folded)]


def history_groups(rows: Sequence[HistoryRow]) -> list[HistoryGroup]:
    """History writes ``(kind, params)`` as ``(kind, columns, rows)`` groups, one statement
    each: kinds in ``HISTORY_KINDS`` order, the rows of a group in the order given (which
    keeps the ``start_order`` of an execution's new steps)."""
    groups: dict[tuple[int, tuple[str, ...]], list[dict[str, Any]]] = {}
    for kind, params in _fold_pending(rows):
        groups.setdefault((HISTORY_KINDS.index(kind), tuple(sorted(params))), []).append(params)
    return [
        (HISTORY_KINDS[index], columns, group)
        for (index, columns), group in sorted(groups.items(), key=lambda item: item[0][0])
    ]


def write_history_sync(conn: Connection, groups: Sequence[HistoryGroup]) -> None:
    """Write ``history_groups`` in ``conn``'s transaction, one ``executemany`` each.
    Errors are raised as ``Connection.execute`` raises them (its handling is called): a
    parameter that cannot be processed as a ``StatementError``, a driver error wrapped in
    a ``DBAPIError`` (a lost connection invalidated with its pool), anything else as is."""
    dialect = conn.dialect
    cursor = conn.connection.cursor()
    for kind, columns, group in groups:
        statement = driver_statement(dialect, kind, columns)
        try:
            args = statement.args(group)
        except Exception as exc:
            conn._handle_dbapi_exception(exc, statement.sql, group, None, None)
        try:
            cursor.executemany(statement.sql, args)
        except BaseException as exc:
            raise_as_sqlalchemy(conn, exc, statement.sql, args, cursor)
            raise
    cursor.close()


async def write_history(conn: AsyncConnection, groups: Sequence[HistoryGroup]) -> None:
    """``write_history_sync`` on an async connection (the driver's adapter runs there)."""
    await conn.run_sync(write_history_sync, groups)
