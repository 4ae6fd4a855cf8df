"""Hostile parameter values are inert: each of at least 50 values (quotes, ``;``, ``$(...)``,
backticks, newlines, ``%``, a leading ``-``, very long values, unicode, NUL where the channel
carries it) reaches the SQL, shell and PowerShell steps verbatim, and a canary file that any
injection would create never appears.

SQL runs on real SQLite, PostgreSQL and MariaDB (MariaDB's driver interpolates parameters on
the client, the case where escaping matters). The shell step runs real ``/bin/sh``. There is
no PowerShell here: the fake pwsh (tests/fixtures) checks the channel (a constant command
line, the values as JSON in the environment); the real-pwsh test runs wherever pwsh is.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.domain.enums import StepStatus
from app.domain.models import JobDefinition, StepExecutionResult
from app.main import create_app
from app.steps import ConnectionRegistry, ExecutionContext, StepFactory, StepResources
from tests.api.helpers import BASE_URL, make_settings
from tests.support.pwsh import install_fake_pwsh

PWSH = shutil.which("pwsh")
LONG = "A-" + "x" * 99_990 + "-Z"  # 100 000 characters


def hostile(canary: str, table: str = "victims") -> list[str]:
    """Values an injection would turn into a command (every command creates ``canary``)."""
    c = canary
    return [
        "'",
        '"',
        "''",
        "' OR '1'='1",
        f"'; DROP TABLE {table}; --",
        f'"; DROP TABLE {table}; --',
        f"'); DELETE FROM {table}; --",
        f"x'; ATTACH DATABASE '{c}' AS pwn; --",
        f"'; COPY (SELECT 1) TO PROGRAM 'touch {c}'; --",
        f"'; SELECT 1 INTO OUTFILE '{c}'; --",
        "\\'; SELECT 1; -- ",
        "1; SELECT 1",
        f"; touch {c}",
        f"&& touch {c}",
        f"|| touch {c}",
        f"| touch {c}",
        f"$(touch {c})",
        f"`touch {c}`",
        f"${{IFS}}touch${{IFS}}{c}",
        f"\ntouch {c}\n",
        f"\r\ntouch {c}\r\n",
        f"'\ntouch {c}\n'",
        f'"; touch {c}; echo "',
        f"'; touch {c}; echo '",
        f"$(New-Item -ItemType File '{c}')",
        f"'; New-Item -ItemType File '{c}'; '",
        f"`$(New-Item {c})",
        f"@(New-Item {c})",
        f"& touch {c}",
        f"%COMSPEC% /c type nul > {c}",
        "%s%s%s%n",
        "%(password)s",
        "%%",
        "100%",
        "%",
        "-rf",
        "--help",
        f"-c 'touch {c}'",
        f"-Command New-Item {c}",
        "-",
        "--",
        "$HOME",
        "${PATH}",
        "$((1+1))",
        "!!",
        "*",
        "?",
        "[a-z]*",
        "~",
        "~root",
        "\\",
        "\\\\'",
        '\\"',
        "\t tab \v vt \f ff",
        "\x1b[31mred\x1b[0m",
        "Grüße, 世界 🚀 ∑ 𝄞",
        "\u202eevil.txt",
        "\ufeffBOM",
        "e\u0301",
        "{{7*7}} ${7*7} #{7*7}",
        "<script>alert(1)</script>",
        "line1\nline2\r\nline3\r",
        " leading and trailing ",
        "",
        LONG,
    ]


NUL_VALUES = ["a\x00b", "\x00", "\x00; touch CANARY\x00"]


def test_the_suite_is_big_enough() -> None:
    assert len(hostile("/tmp/c")) >= 50


@pytest.fixture
def canary() -> Iterator[Path]:
    """A path nothing creates unless a value was run as a command (in /tmp: the database
    servers can write there too)."""
    path = Path("/tmp") / f"jsv2-canary-{uuid.uuid4().hex}"
    yield path
    assert not path.exists(), f"an injection created {path}"
    path.unlink(missing_ok=True)


def context(config: dict[str, Any], resources: StepResources) -> ExecutionContext:
    job = JobDefinition(job_id="inj", job_name="Injection", steps=[config])
    return ExecutionContext(job, uuid.uuid4().hex, resources=resources)


async def run(config: dict[str, Any], resources: StepResources) -> StepExecutionResult:
    step = StepFactory.create_step(config, context(config, resources))
    async with asyncio.timeout(60):
        return await step.run()


# -- SQL --------------------------------------------------------------------------------------
BACKENDS = {"sqlite": "sqlite_url", "postgresql": "pg_url", "mariadb": "mariadb_url"}


@pytest.fixture(params=list(BACKENDS))
def sql_url(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param, str(request.getfixturevalue(BACKENDS[request.param]))


@pytest.fixture
async def sql(sql_url: tuple[str, str]) -> AsyncIterator[tuple[str, StepResources]]:
    backend, url = sql_url
    registry = ConnectionRegistry({"db": url})
    try:
        yield backend, StepResources(connections=registry)
    finally:
        await registry.dispose()


def sql_step(query: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "step_id": "q",
        "type": "sql",
        "connection_name": "db",
        "query": query,
        "parameters": parameters,
    }


async def test_sql_parameters_are_bound_verbatim(
    sql: tuple[str, StepResources], canary: Path
) -> None:
    backend, resources = sql
    table = f"victims_{uuid.uuid4().hex[:8]}"
    values = hostile(str(canary), table)
    if backend != "postgresql":  # PostgreSQL text cannot hold NUL at all
        values += NUL_VALUES
    text_type = "LONGTEXT" if backend == "mariadb" else "TEXT"
    created = await run(sql_step(f"CREATE TABLE {table} (i INTEGER, v {text_type})", {}), resources)
    assert created.status is StepStatus.SUCCESS, created.error_message

    selected = await run(
        sql_step(
            "SELECT " + ", ".join(f":p{i} AS p{i}" for i in range(len(values))),
            {f"p{i}": v for i, v in enumerate(values)},
        ),
        resources,
    )
    for i, value in enumerate(values):
        inserted = await run(
            sql_step(f"INSERT INTO {table} (i, v) VALUES (:i, :v)", {"i": i, "v": value}),
            resources,
        )
        assert inserted.status is StepStatus.SUCCESS, (value[:80], inserted.error_message)
    stored = await run(sql_step(f"SELECT i, v FROM {table} ORDER BY i", {}), resources)

    assert selected.status is StepStatus.SUCCESS, selected.error_message
    assert json.loads(selected.output or "") == [{f"p{i}": v for i, v in enumerate(values)}]
    assert stored.status is StepStatus.SUCCESS, stored.error_message  # the table survived
    assert [row["v"] for row in json.loads(stored.output or "")] == values
    await run(sql_step(f"DROP TABLE {table}", {}), resources)


# -- shell ------------------------------------------------------------------------------------
def shell_config(values: list[str], out: Path) -> dict[str, Any]:
    """A script that writes each parameter's value (quoted, as a script should) to a file
    named after it."""
    parameters = {f"P{i}": v for i, v in enumerate(values)}
    script = "".join(f'printf %s "${name}" > "$OUT/{name}"\n' for name in parameters)
    return {
        "step_id": "sh",
        "type": "shell",
        "script": script,
        "parameters": {**parameters, "OUT": str(out)},
    }


def written(out: Path, count: int) -> list[str]:
    return [(out / f"P{i}").read_bytes().decode("utf-8") for i in range(count)]


async def test_shell_parameters_arrive_verbatim(tmp_path: Path, canary: Path) -> None:
    values = hostile(str(canary))
    out = tmp_path / "out"
    out.mkdir()

    result = await run(shell_config(values, out), StepResources())

    assert result.status is StepStatus.SUCCESS, result.error_message
    assert written(out, len(values)) == values


async def test_shell_parameters_in_a_naive_script_stay_inert(tmp_path: Path, canary: Path) -> None:
    """Even an unquoted ``echo $P`` never runs a value: a shell does not re-parse the result
    of an expansion (it only splits and globs it)."""
    for value in hostile(str(canary)):
        config = {"step_id": "sh", "type": "shell", "script": "echo $P", "parameters": {"P": value}}
        result = await run(config, StepResources())
        assert result.status is StepStatus.SUCCESS, (value[:80], result.error_message)


def test_shell_refuses_nul_it_cannot_carry() -> None:
    config = {"step_id": "sh", "type": "shell", "script": "true", "parameters": {"P": "a\x00b"}}

    errors = StepFactory.validate_step_config(config)

    assert [e.field for e in errors] == ["parameters.P"]


async def test_shell_values_arrive_verbatim_through_the_http_api(
    tmp_path: Path, canary: Path
) -> None:
    values = hostile(str(canary))
    out = tmp_path / "out"
    out.mkdir()
    job = {"job_id": "inj", "job_name": "Injection", "steps": [shell_config(values, out)]}
    application = create_app(make_settings(max_body_bytes=1024 * 1024))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            response = await client.post("/api/v2/jobs/execute", json=job)

    assert response.status_code == 200, response.text
    assert written(out, len(values)) == values


# -- PowerShell -------------------------------------------------------------------------------
@pytest.fixture
def fake_pwsh(tmp_path: Path) -> tuple[Path, Path]:
    return install_fake_pwsh(tmp_path)


@pytest.mark.parametrize("long_value", [False, True], ids=["short values", "a long value"])
async def test_powershell_parameters_arrive_verbatim(
    fake_pwsh: tuple[Path, Path], canary: Path, long_value: bool
) -> None:
    launcher, record_file = fake_pwsh
    values = [v for v in hostile(str(canary)) + NUL_VALUES if (v == LONG) == long_value]
    parameters = {f"P{i}": v for i, v in enumerate(values)}
    config = {"step_id": "ps", "type": "powershell", "script": "param()", "parameters": parameters}

    result = await run(config, StepResources(powershell_executable=str(launcher)))

    assert result.status is StepStatus.SUCCESS, result.error_message
    record = json.loads(record_file.read_text())
    assert json.loads(record["env"]["JSV2_PARAMS_JSON"]) == parameters  # decoded: verbatim
    assert record["env"]["JSV2_PARAMS_JSON"].isascii()  # no NUL, newline or raw unicode
    argv = record["argv"]
    assert argv[1:6] == [
        "-NoProfile",
        "-NonInteractive",
        "-ExecutionPolicy",
        "RemoteSigned",
        "-File",
    ]
    assert len(argv) == 7  # the constant wrapper: no value is on the command line
    assert "param()" in record["script"]["text"]
    assert all(v not in record["wrapper"]["text"] for v in values if len(v) > 3)


@pytest.mark.pwsh
@pytest.mark.skipif(PWSH is None, reason="PowerShell 7 (pwsh) is not on PATH")
async def test_real_powershell_receives_values_verbatim(tmp_path: Path, canary: Path) -> None:
    values = hostile(str(canary)) + NUL_VALUES
    out = tmp_path / "out"
    out.mkdir()
    names = [f"P{i}" for i in range(len(values))]
    script = (
        "param("
        + ", ".join(f"[string]${n}" for n in names)
        + ")\n"
        + "".join(
            f"[IO.File]::WriteAllText('{out}/{n}', ${n}, [Text.UTF8Encoding]::new($false))\n"
            for n in names
        )
    )
    config = {
        "step_id": "ps",
        "type": "powershell",
        "script": script,
        "parameters": dict(zip(names, values, strict=True)),
    }

    result = await run(config, StepResources(powershell_executable=str(PWSH)))

    assert result.status is StepStatus.SUCCESS, result.error_message
    assert [(out / n).read_bytes().decode("utf-8") for n in names] == values
