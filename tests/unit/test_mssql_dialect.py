"""SQL Server's own parts that need no server: the read-only connect string, the ODBC driver
check behind the start-up line, pyodbc's error shape, and the datetimeoffset converter."""

from __future__ import annotations

import struct
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import pyodbc
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.startup import url_problem
from app.steps.connections import ConnectionConfig, parse_connections
from app.steps.mssql import connect_url, driver_problem, odbc_driver_name, odbc_message
from app.steps.sql_values import to_json_safe

BASE = "mssql+aioodbc://jobs:p%40ss;w0rd@db.example:1433/sales?driver=FreeTDS"


def odbc_string(url: str) -> str:
    """The ODBC connect string SQLAlchemy's dialect hands to pyodbc for ``url``."""
    engine = create_async_engine(url)
    _, kwargs = engine.dialect.create_connect_args(make_url(url))
    return str(kwargs["dsn"])


def test_a_read_only_connection_asks_for_application_intent_read_only() -> None:
    dsn = odbc_string(connect_url(BASE, read_only=True))

    assert "ApplicationIntent=ReadOnly" in dsn.split(";")
    assert "PWD={p@ss;w0rd}" in dsn  # the password survives the rewrite, still quoted
    assert "DRIVER={FreeTDS}" in dsn


def test_a_read_write_connection_is_left_as_it_is() -> None:
    assert connect_url(BASE, read_only=False) == BASE
    assert "ApplicationIntent" not in odbc_string(BASE)


def test_read_only_replaces_an_application_intent_the_entry_gave() -> None:
    dsn = odbc_string(connect_url(BASE + "&applicationintent=ReadWrite", read_only=True))

    intents = [p for p in dsn.split(";") if p.lower().startswith("applicationintent")]
    assert intents == ["ApplicationIntent=ReadOnly"]


def test_read_only_inside_an_odbc_connect_string() -> None:
    raw = (
        "DRIVER={ODBC Driver 18 for SQL Server};SERVER=db,1433;UID=u;PWD=p;"
        "ApplicationIntent=ReadWrite;"
    )
    url = make_url("mssql+aioodbc://").set(query={"odbc_connect": raw}).render_as_string(False)

    dsn = odbc_string(connect_url(url, read_only=True))

    assert dsn.endswith(";ApplicationIntent=ReadOnly")
    assert "ReadWrite" not in dsn
    assert dsn.startswith("DRIVER={ODBC Driver 18 for SQL Server};SERVER=db,1433;UID=u;PWD=p")


def test_the_registry_opens_read_only_entries_with_the_intent() -> None:
    configs = parse_connections({"ro": {"url": BASE, "read_only": True}, "rw": BASE})

    assert configs["ro"].family == "mssql"
    assert "ApplicationIntent=ReadOnly" in configs["ro"].engine_url
    assert configs["rw"].engine_url == BASE
    assert ConnectionConfig("pg", "postgresql+asyncpg://u@h/d", read_only=True).engine_url == (
        "postgresql+asyncpg://u@h/d"
    )


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        (BASE, "FreeTDS"),
        (
            "mssql+aioodbc://u:p@h/d?driver=ODBC+Driver+18+for+SQL+Server",
            "ODBC Driver 18 for SQL Server",
        ),
        ("mssql+aioodbc://u:p@mydsn", None),
        ("mssql+aioodbc://?odbc_connect=DRIVER%3D%7BFreeTDS%7D%3BSERVER%3Dh", "FreeTDS"),
        ("mssql+aioodbc://?odbc_connect=Driver%3DFreeTDS%3BSERVER%3Dh", "FreeTDS"),
        ("mssql+aioodbc://?odbc_connect=DSN%3Dprod", None),
    ],
)
def test_the_odbc_driver_a_url_names(url: str, driver: str | None) -> None:
    assert odbc_driver_name(make_url(url)) == driver


def test_a_registered_driver_passes_the_start_up_check() -> None:
    assert "FreeTDS" in pyodbc.drivers(), "tdsodbc is installed on the project's machines"

    assert driver_problem(make_url(BASE)) is None
    assert url_problem(BASE) is None


def test_an_unregistered_driver_is_one_clear_line() -> None:
    url = "mssql+aioodbc://u:secret@h/d?driver=ODBC+Driver+18+for+SQL+Server"

    problem = url_problem(url)

    assert problem is not None
    assert problem.startswith("ODBC driver 'ODBC Driver 18 for SQL Server' is not registered")
    assert "'FreeTDS'" in problem  # what is installed
    assert "secret" not in problem


def test_pyodbc_that_cannot_load_names_unixodbc(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a machine without libodbc.so.2 gets (pyodbc's import fails)."""
    monkeypatch.setitem(sys.modules, "pyodbc", None)

    problem = url_problem(BASE)

    assert problem is not None
    assert problem.startswith("pyodbc cannot load (")
    assert problem.endswith(
        "install unixODBC and an ODBC driver (Debian: apt-get install unixodbc tdsodbc)"
    )


def test_a_url_without_driver_or_dsn_says_what_to_add() -> None:
    problem = url_problem("mssql+aioodbc://u:p@h:1433/d")

    assert problem is not None and "?driver=FreeTDS" in problem


def test_pyodbc_errors_become_one_line_with_their_sqlstate() -> None:
    error = pyodbc.ProgrammingError(
        "42S02", "[42S02] [FreeTDS][SQL Server]Invalid object name 'nope'. (208) (SQLExecDirectW)"
    )

    assert odbc_message(error) == (
        "ProgrammingError: [FreeTDS][SQL Server]Invalid object name 'nope'. (208) "
        "(SQLExecDirectW) [SQLSTATE 42S02]"
    )
    assert odbc_message(ValueError("x")) is None
    assert odbc_message(pyodbc.Error("not a sqlstate", "x")) is None


def test_datetimeoffset_converter_gives_an_aware_datetime() -> None:
    """The converter SQLAlchemy's dialect registers on every connection for ODBC type -155
    (SQL_SS_TIMESTAMPOFFSET_STRUCT), then the step's JSON conversion."""
    registered: dict[int, Any] = {}

    class Connection:
        def add_output_converter(self, code: int, func: Any) -> None:
            registered[code] = func

    engine = create_async_engine(BASE)
    engine.dialect._setup_timestampoffset_type(Connection())  # what on_connect calls
    raw = struct.pack("<6hI2h", 2026, 3, 29, 1, 30, 15, 123_456_700, -5, -30)

    value = registered[-155](raw)

    assert value == datetime(
        2026, 3, 29, 1, 30, 15, 123_456, timezone(timedelta(hours=-5, minutes=-30))
    )
    assert to_json_safe(value) == "2026-03-29T01:30:15.123456-05:30"
