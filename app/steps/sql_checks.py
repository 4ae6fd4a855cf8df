"""What a SQL step's query may hold on its connection's database (checked where a job enters,
against the server's V2_CONNECTIONS, and again when the step runs).

* SQL Server: ``GO`` lines split the query into batches (:mod:`app.steps.tsql`); a ``GO``
  line SQLCMD would refuse is refused. ``transaction: false`` is refused on a ``read_only``
  connection (SQL Server has no read-only transaction; the step's writes are undone by
  rolling its transaction back, which autocommit would defeat).
* PostgreSQL, MariaDB, SQLite: a ``GO`` line is refused (it would become a column alias), and
  so is a second statement after a ``;`` (one statement per step; the drivers refuse it with
  their own words).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from app.domain.errors import FieldError
from app.steps.sql_text import go_lines, second_statement_line
from app.steps.tsql import BatchSyntaxError, split_batches

_NAMES = {"postgresql": "PostgreSQL", "mysql": "MariaDB/MySQL", "sqlite": "SQLite"}


def step_problems(
    step: Mapping[str, Any], family: str, *, read_only: bool, where: str
) -> list[FieldError]:
    """Problems of SQL step ``step`` on a connection of ``family`` (``where``: ``steps[i]``)."""
    query = step.get("query")
    errors: list[FieldError] = []
    if isinstance(query, str):
        errors.extend(FieldError(f"{where}.query", p) for p in query_problems(query, family))
    if family == "mssql" and read_only and step.get("transaction") is False:
        errors.append(
            FieldError(
                f"{where}.transaction",
                "must not be false on a read_only SQL Server connection: SQL Server has no "
                "read-only transaction, the step's writes are undone by rolling its "
                "transaction back",
            )
        )
    return errors


@functools.lru_cache(maxsize=1024)
def query_problems(query: str, family: str) -> tuple[str, ...]:
    """Why ``query`` cannot run as one step on ``family`` (cached: checked on every run)."""
    if family == "mssql":
        try:
            split_batches(query)
        except BatchSyntaxError as exc:
            return tuple(exc.problems)
        return ()
    name = _NAMES.get(family, family)
    problems = [
        f"line {go.line.number}: GO separates T-SQL batches and is understood on SQL Server "
        f"(mssql) connections only; on {name} it would become part of the statement (a "
        "column alias): remove it"
        for go in go_lines(query, family)
        if go.problem is None
    ]
    if not problems:
        line = second_statement_line(query, family)
        if line is not None:
            problems.append(
                f"holds more than one statement (another one starts on line {line}, after a "
                f"';'): a SQL step runs one statement on {name}; give each statement its own "
                "step"
            )
    return tuple(problems)
