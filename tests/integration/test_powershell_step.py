"""PowerShellStep through the real subprocess runner.

pwsh cannot be installed on the dev machines, so most tests run the real step against a fake
pwsh (tests/fixtures/fake_pwsh.py) that records how it was started. The tests marked ``pwsh``
run real PowerShell 7 and are skipped, with the reason shown, where it is not on PATH.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from app.domain.enums import StepStatus
from app.domain.errors import StepExecutionError
from app.domain.models import JobDefinition, StepExecutionResult
from app.steps import ExecutionContext, ExecutionStep, PowerShellStep, StepFactory, StepResources
from app.steps.context import RUN_ENVIRONMENT
from app.steps.powershell import PARAMS_ENV, POWERSHELL_WRAPPER, SCRIPT_ENV
from tests.support.processes import running
from tests.support.pwsh import install_fake_pwsh

PWSH = shutil.which("pwsh")
F = TypeVar("F", bound=Callable[..., Any])


def needs_pwsh(test: F) -> F:
    """Mark a test as needing real PowerShell 7; skipped, with the reason shown, without it."""
    marked: F = pytest.mark.pwsh(
        pytest.mark.skipif(PWSH is None, reason="PowerShell 7 (pwsh) is not on PATH")(test)
    )
    return marked


HOSTILE: dict[str, Any] = {
    "Injection": "'; Remove-Item -Recurse CANARY_DIR ;'",
    "Subexpression": "$(New-Item -ItemType File CANARY)",
    "Backticks": "`$(whoami)` `n",
    "Newlines": "one\ntwo\r\nthree\n",
    "LeadingDash": "-Force",
    "Quotes": 'it\'s "quoted" \u2018curly\u2019 \u201cdouble\u201d',
    "Unicode": "Grüße, 世界 🚀",
    "DateLike": "2026-01-01T00:00:00Z",
    "Percent": "100% %s",
    "Empty": "",
    "Number": 42,
    "Flag": True,
    "Nothing": None,
    "List": ["a", 2, ["$(x)"]],
    "Object": {"path": "C:\\Temp\\x", "n": [1, 2]},
}


# -- helpers -------------------------------------------------------------------------------------
class FakePwsh:
    def __init__(self, directory: Path) -> None:
        self.launcher, self.record_file = install_fake_pwsh(directory)

    @property
    def record(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.record_file.read_text())
        return result

    @property
    def pids(self) -> list[int]:
        path = Path(f"{self.record_file}.pids")
        return [int(x) for x in path.read_text().split()] if path.exists() else []

    def resources(self, **kwargs: Any) -> StepResources:
        return StepResources(
            powershell_executable=str(self.launcher), **{"kill_grace_seconds": 0.3, **kwargs}
        )


@pytest.fixture
def fake(tmp_path: Path) -> FakePwsh:
    directory = tmp_path / "fake"
    directory.mkdir()
    return FakePwsh(directory)


def make_step(
    config: dict[str, Any], resources: StepResources, context: ExecutionContext | None = None
) -> ExecutionStep:
    config = {"step_id": "ps1", "type": "powershell", **config}
    if context is None:
        job = JobDefinition(job_id="job-1", job_name="PowerShell job", steps=[config])
        context = ExecutionContext(job, "exec-1", resources=resources)
    return StepFactory.create_step(config, context)


async def run_step(step: ExecutionStep) -> StepExecutionResult:
    async with asyncio.timeout(step.get_timeout()):
        return await step.run()


# -- with the fake pwsh ---------------------------------------------------------------------------
async def test_exact_command_and_literal_parameters(fake: FakePwsh, tmp_path: Path) -> None:
    script = "param($Injection)\nWrite-Output $Injection\n"
    step = make_step(
        {
            "script": script,
            "parameters": HOSTILE,
            "execution_policy": "Bypass",
            "working_directory": str(tmp_path),
        },
        fake.resources(),
    )
    result = await run_step(step)
    assert result.status is StepStatus.SUCCESS, result.error_message

    record = fake.record
    wrapper = record["wrapper"]
    assert record["argv"] == [
        str(fake.launcher),
        "-NoProfile",
        "-NonInteractive",
        "-ExecutionPolicy",
        "Bypass",
        "-File",
        wrapper["path"],
    ]
    # The parameters reach pwsh as one JSON document that decodes to exactly the originals.
    assert json.loads(record["env"][PARAMS_ENV]) == HOSTILE
    assert record["cwd"] == str(tmp_path)
    # The wrapper is the constant text; the inline script is written verbatim; both private.
    assert wrapper["text"] == POWERSHELL_WRAPPER
    assert record["script"]["text"] == script
    assert record["env"][SCRIPT_ENV] == record["script"]["path"]
    for written in (wrapper, record["script"]):
        assert written["bom"] is True  # UTF-8 with BOM: read as UTF-8 by every PowerShell
        assert (written["mode"], written["dir_mode"]) == ("0o600", "0o700")
        assert written["path"].startswith(os.path.join(tempfile.gettempdir(), "jsv2-pwsh-"))
        assert not Path(written["path"]).parent.exists()  # removed afterwards

    params_line = json.dumps(HOSTILE, sort_keys=True)
    assert result.output == f"fake pwsh ran script.ps1\n{params_line}\n"
    assert step.context.get_step_output("ps1") == {
        "stdout": result.output,
        "stderr": "",
        "exit_code": 0,
    }


async def test_default_execution_policy_is_remote_signed(fake: FakePwsh) -> None:
    await run_step(make_step({"script": "Write-Output 1"}, fake.resources()))
    assert fake.record["argv"][3:5] == ["-ExecutionPolicy", "RemoteSigned"]


async def test_script_path_is_passed_not_copied(fake: FakePwsh, tmp_path: Path) -> None:
    (tmp_path / "job.ps1").write_text("param($Name)\n")
    result = await run_step(
        make_step(
            {
                "script_path": "job.ps1",
                "working_directory": str(tmp_path),
                "parameters": {"Name": "-x"},
            },
            fake.resources(),
        )
    )
    assert result.status is StepStatus.SUCCESS, result.error_message
    record = fake.record
    assert record["env"][SCRIPT_ENV] == str(tmp_path / "job.ps1")  # relative to the cwd
    assert record["script"]["text"] == "param($Name)\n"
    assert str(tmp_path / "job.ps1") not in record["argv"]
    assert (tmp_path / "job.ps1").exists()


async def test_missing_script_path_fails_clearly(fake: FakePwsh, tmp_path: Path) -> None:
    result = await run_step(
        make_step({"script_path": str(tmp_path / "nope.ps1")}, fake.resources())
    )
    assert result.status is StepStatus.FAILED
    assert "script_path" in (result.error_message or "")
    assert not fake.record_file.exists()  # pwsh was never started


async def test_non_zero_exit_fails_the_step(fake: FakePwsh) -> None:
    step = make_step({"script": "#fake: exit 7\nexit 7\n"}, fake.resources())
    result = await run_step(step)
    assert result.status is StepStatus.FAILED
    assert result.error_message == "exit code 7: fake pwsh: failing on purpose"
    assert result.metadata["exit_code"] == 7
    assert step.context.get_step_output("ps1") is None


async def test_missing_working_directory_fails_clearly(fake: FakePwsh, tmp_path: Path) -> None:
    result = await run_step(
        make_step({"script": "x", "working_directory": str(tmp_path / "no")}, fake.resources())
    )
    assert result.status is StepStatus.FAILED
    assert "working_directory" in (result.error_message or "")


@pytest.mark.parametrize("executable", ["jsv2-no-such-pwsh", "/nonexistent/bin/pwsh"])
async def test_missing_powershell_fails_clearly(executable: str) -> None:
    resources = StepResources(powershell_executable=executable)
    result = await run_step(make_step({"script": "Write-Output 1"}, resources))
    assert result.status is StepStatus.FAILED
    assert result.error_message == (
        f"PowerShell executable {executable!r} not found; set V2_POWERSHELL_EXECUTABLE"
    )


async def test_executable_name_is_looked_up_on_path(
    fake: FakePwsh, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{fake.launcher.parent}{os.pathsep}{os.environ['PATH']}")
    result = await run_step(
        make_step({"script": "x"}, StepResources(powershell_executable=fake.launcher.name))
    )
    assert result.status is StepStatus.SUCCESS, result.error_message
    assert fake.record["argv"][0] == str(fake.launcher)


async def test_server_environment_is_not_passed_on(
    fake: FakePwsh, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("V2_SECRET_TEST", "s3cr3t-value")
    await run_step(make_step({"script": "x"}, fake.resources()))
    env = fake.record["env"]
    env.pop("PWD", None)  # set by the fake's /bin/sh launcher
    env.pop("LC_CTYPE", None)  # Python's own locale coercion in the fake, not ours
    assert set(env) == {
        "PATH",
        "HOME",
        "LANG",
        "POWERSHELL_TELEMETRY_OPTOUT",
        "POWERSHELL_UPDATECHECK",
        SCRIPT_ENV,
        PARAMS_ENV,
        *RUN_ENVIRONMENT,  # the run tokens (JOBSCHEDULER_EXECUTION_ID, ...)
    }
    assert env["JOBSCHEDULER_EXECUTION_ID"] == "exec-1"


async def test_from_reference_reaches_the_script(fake: FakePwsh) -> None:
    config = {
        "step_id": "ps1",
        "type": "powershell",
        "script": "x",
        "parameters": {"Rows": {"$from": "steps.query.rows"}},
    }
    job = JobDefinition(job_id="job-1", job_name="j", steps=[config])
    context = ExecutionContext(job, "exec-1", resources=fake.resources())
    context.set_step_output("query", {"rows": [{"id": 1, "name": "O'Brien; $(x)"}]})
    result = await run_step(StepFactory.create_step(config, context))
    assert result.status is StepStatus.SUCCESS, result.error_message
    assert json.loads(fake.record["env"][PARAMS_ENV]) == {
        "Rows": [{"id": 1, "name": "O'Brien; $(x)"}]
    }


async def test_timeout_stops_pwsh_and_its_children(fake: FakePwsh) -> None:
    step = make_step({"script": "#fake: hang\n", "timeout": 1}, fake.resources())
    with pytest.raises(TimeoutError):
        await run_step(step)
    pids = fake.pids
    assert len(pids) == 2  # the fake and its TERM-ignoring child
    assert [pid for pid in pids if running(pid)] == []


async def test_spec_run_powershell_returns_the_triple(fake: FakePwsh) -> None:
    step = make_step({"script": "unused"}, fake.resources())
    assert isinstance(step, PowerShellStep)
    _, stderr, code = await step._run_powershell("#fake: exit 3\n", {"A": 1})
    assert (stderr, code) == ("fake pwsh: failing on purpose\n", 3)
    missing = make_step({"script": "x"}, StepResources(powershell_executable="/nonexistent/pwsh"))
    assert isinstance(missing, PowerShellStep)
    with pytest.raises(StepExecutionError, match="not found; set V2_POWERSHELL_EXECUTABLE"):
        await missing._run_powershell("x", {})


# -- with real PowerShell 7 -----------------------------------------------------------------------
ECHO_SCRIPT = """
param($Injection, $Subexpression, $Backticks, $Newlines, $LeadingDash, $Quotes, $Unicode,
      $DateLike, $Percent, $Empty, $Number, $Flag, $Nothing, $List, $Object)
$out = [ordered]@{}
foreach ($name in $PSBoundParameters.Keys) { $out[$name] = $PSBoundParameters[$name] }
$out['Types'] = [ordered]@{
    DateLike = $DateLike.GetType().Name
    Number = $Number.GetType().Name
    Flag = $Flag.GetType().Name
    List = $List.GetType().Name
    Object = $Object.GetType().Name
    LeadingDash = $LeadingDash.GetType().Name
}
[Console]::Out.Write(($out | ConvertTo-Json -Depth 10 -Compress))
"""


@needs_pwsh
async def test_pwsh_hostile_parameters_arrive_verbatim(tmp_path: Path) -> None:
    (tmp_path / "CANARY_DIR").mkdir()
    step = make_step(
        {"script": ECHO_SCRIPT, "parameters": HOSTILE, "working_directory": str(tmp_path)},
        StepResources(powershell_executable=str(PWSH), kill_grace_seconds=1),
    )
    result = await run_step(step)
    assert result.status is StepStatus.SUCCESS, result.error_message
    received = json.loads(result.output or "")
    types = received.pop("Types")
    expected = {k: v for k, v in HOSTILE.items() if v is not None}
    received.pop("Nothing", None)
    assert received == expected
    assert types == {
        "DateLike": "String",
        "Number": "Int64",
        "Flag": "Boolean",
        "List": "Object[]",
        "Object": "OrderedDictionary",
        "LeadingDash": "String",
    }
    assert (tmp_path / "CANARY_DIR").is_dir() and not (tmp_path / "CANARY").exists()


@needs_pwsh
async def test_pwsh_lists_and_hashtables() -> None:
    script = (
        "param($List, $Table)\n"
        "Write-Output \"$($List.Count)|$($List[2][0])|$($Table['inner']['k'])|"
        "$($Table.Keys -join ',')\"\n"
    )
    step = make_step(
        {
            "script": script,
            "parameters": {"List": ["a", "b", ["c", "d"]], "Table": {"z": 1, "inner": {"k": "v"}}},
        },
        StepResources(powershell_executable=str(PWSH)),
    )
    result = await run_step(step)
    assert result.status is StepStatus.SUCCESS, result.error_message
    assert result.output == "3|c|v|z,inner\n"


@needs_pwsh
@pytest.mark.parametrize(
    ("script", "code", "stderr"),
    [
        ("exit 7", 7, ""),
        ("throw 'boom'", 1, "boom"),
        ("Write-Output fine", 0, ""),
        ("param($Required) if (-not $Required) { exit 5 }", 5, ""),
    ],
)
async def test_pwsh_exit_codes(script: str, code: int, stderr: str) -> None:
    step = make_step({"script": script}, StepResources(powershell_executable=str(PWSH)))
    result = await run_step(step)
    assert result.metadata["exit_code"] == code
    assert (result.status is StepStatus.SUCCESS) == (code == 0)
    assert stderr in result.metadata["stderr"]


@needs_pwsh
async def test_pwsh_working_directory(tmp_path: Path) -> None:
    step = make_step(
        {"script": "[Console]::Out.Write((Get-Location).Path)", "working_directory": str(tmp_path)},
        StepResources(powershell_executable=str(PWSH)),
    )
    result = await run_step(step)
    assert result.output == str(tmp_path)


@needs_pwsh
async def test_pwsh_timeout_stops_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    step = make_step(
        {
            "script": "param($PidFile) Set-Content $PidFile $PID; Start-Sleep 300",
            "parameters": {"PidFile": str(pid_file)},
            "timeout": 3,
        },
        StepResources(powershell_executable=str(PWSH), kill_grace_seconds=1),
    )
    with pytest.raises(TimeoutError):
        await run_step(step)
    assert not running(int(pid_file.read_text().strip()))
