"""ShellStep end to end with real /bin/sh processes, run the way the engine runs steps."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from app.domain.enums import StepStatus
from app.domain.errors import ConfigurationError
from app.domain.models import JobDefinition, StepExecutionResult
from app.steps import ExecutionContext, ExecutionStep, StepFactory, StepResources
from tests.support.processes import (
    STUBBORN_COUNT,
    STUBBORN_TREE,
    group_members,
    read_pids,
    running_in_group,
    wait_until,
)

RESOURCES = StepResources(kill_grace_seconds=0.3)


# -- helpers -------------------------------------------------------------------------------------
def make_context(*steps: dict[str, Any], resources: StepResources = RESOURCES) -> ExecutionContext:
    job = JobDefinition(job_id="job-1", job_name="Shell job", steps=list(steps))
    return ExecutionContext(job, "exec-1", resources=resources)


def make_step(
    config: dict[str, Any],
    context: ExecutionContext | None = None,
    resources: StepResources = RESOURCES,
) -> ExecutionStep:
    config = {"step_id": "sh1", "type": "shell", **config}
    return StepFactory.create_step(config, context or make_context(config, resources=resources))


async def run_step(step: ExecutionStep) -> StepExecutionResult:
    async with asyncio.timeout(step.get_timeout()):
        return await step.run()


async def run_config(config: dict[str, Any], **kwargs: Any) -> StepExecutionResult:
    return await run_step(make_step(config, **kwargs))


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def gone(path: Path) -> bool:
    return not path.exists()


def real(path: Path) -> str:
    return os.path.realpath(path)


# -- the key test: timeout / cancel leave no process behind ---------------------------------------


async def test_timeout_kills_term_ignoring_children_and_grandchildren(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    step = make_step(
        {"script": STUBBORN_TREE, "timeout": 1, "parameters": {"PIDS": str(pids_file)}}
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await run_step(step)
    took = loop.time() - started

    pids = read_pids(pids_file)
    assert len(pids) == STUBBORN_COUNT, "the script did not start its whole tree"
    pgid = pids[0]  # the script is its group's leader
    # Gone the moment the step hands control back: no waiting needed.
    assert [pid for pid in pids if running_in_group(pid, pgid)] == []
    assert group_members(pgid) == []
    # Zombies are reaped by init on its own schedule; then the group is gone for good.
    await wait_until(lambda: not group_exists(pgid), "the group's zombies to be reaped")
    assert 1 + RESOURCES.kill_grace_seconds <= took < 1 + RESOURCES.kill_grace_seconds + 5


async def test_cancel_kills_term_ignoring_children_and_grandchildren(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    step = make_step({"script": STUBBORN_TREE, "parameters": {"PIDS": str(pids_file)}})
    task = asyncio.create_task(run_step(step), name="shell-step")
    await wait_until(lambda: len(read_pids(pids_file)) == STUBBORN_COUNT, "the tree to start")
    pids = read_pids(pids_file)
    pgid = pids[0]
    assert all(running_in_group(pid, pgid) for pid in pids)

    assert await step.cancel() is True
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [pid for pid in pids if running_in_group(pid, pgid)] == []
    assert group_members(pgid) == []


async def test_inline_script_file_is_removed_after_a_timeout(tmp_path: Path) -> None:
    where = tmp_path / "where"
    step = make_step({"script": f'echo "$0" > "{where}"; sleep 300', "timeout": 1})
    with pytest.raises(TimeoutError):
        await run_step(step)
    script = Path(where.read_text().strip())
    assert gone(script) and gone(script.parent)


async def test_leftover_background_process_is_stopped_when_the_script_ends(
    tmp_path: Path,
) -> None:
    pids_file = tmp_path / "pids"
    script = f'echo $$ > "{pids_file}"; (trap "" TERM; exec sleep 300) & echo $! >> "{pids_file}"'
    result = await run_config({"script": script})
    assert result.status is StepStatus.SUCCESS
    assert result.metadata["stopped_leftover_processes"] is True
    pgid, leftover = read_pids(pids_file)
    assert not running_in_group(leftover, pgid)


# -- parameters -----------------------------------------------------------------------------------
def hostile_values(canary: Path) -> dict[str, str]:
    return {
        "QUOTES": "it's \"double\" and 'single'",
        "SEMICOLON": f"x; touch {canary}; echo",
        "SUBSTITUTION": f"$(touch {canary})",
        "BACKTICKS": f"`touch {canary}`",
        "NEWLINES": "line one\nline two\n",
        "PERCENT": "100% %s %n %d %%",
        "LEADING_DASH": "-n",
        "OPTION_LIKE": "--help",
        "UNICODE": "Grüße, 世界 🚀",
        "BACKSLASHES": "a\\nb\\\\c\\",
        "GLOB": "* ?",
        "EMPTY": "",
        "DOLLAR": "$HOME ${PATH} $1 $@",
    }


async def test_parameters_arrive_verbatim_as_environment_variables(tmp_path: Path) -> None:
    canary = tmp_path / "CANARY"
    values = hostile_values(canary)
    script = "printf '%s\\0' " + " ".join(f'"${name}"' for name in values)
    result = await run_config(
        {"script": script, "parameters": values, "working_directory": str(tmp_path)}
    )
    assert result.status is StepStatus.SUCCESS, result.error_message
    received = result.output.split("\0")[:-1] if result.output else []
    assert dict(zip(values, received, strict=True)) == values
    assert not canary.exists()


async def test_non_string_parameters_arrive_as_json() -> None:
    values: dict[str, Any] = {
        "INT": 42,
        "FLOAT": 1.5,
        "TRUE": True,
        "FALSE": False,
        "NONE": None,
        "LIST": [1, "two", {"three": 3}],
        "OBJECT": {"a": [1, 2], "s": "x'y\n$(z)"},
    }
    script = "printf '%s\\0' " + " ".join(f'"${name}"' for name in values)
    result = await run_config({"script": script, "parameters": values})
    assert result.output is not None
    texts = result.output.split("\0")[:-1]
    assert texts[:5] == ["42", "1.5", "true", "false", "null"]
    assert [json.loads(t) for t in texts] == list(values.values())


async def test_from_reference_to_an_earlier_step_output() -> None:
    first = {"step_id": "first", "type": "shell", "script": "printf 'hello from first'"}
    second = {
        "step_id": "second",
        "type": "shell",
        "script": 'printf "%s|%s" "$GREETING" "$N"',
        "parameters": {
            "GREETING": {"$from": "steps.first.stdout"},
            "N": {"$from": "steps.rows.items[1].n"},
        },
    }
    context = make_context(first, second)
    context.set_step_output("rows", {"items": [{"n": 1}, {"n": 7}]})
    one = await run_step(StepFactory.create_step(first, context))
    assert one.status is StepStatus.SUCCESS
    assert context.get_step_output("first") == {
        "stdout": "hello from first",
        "stderr": "",
        "exit_code": 0,
    }
    two = await run_step(StepFactory.create_step(second, context))
    assert (two.status, two.output) == (StepStatus.SUCCESS, "hello from first|7")


async def test_bad_reference_fails_the_step() -> None:
    result = await run_config(
        {"script": "echo never", "parameters": {"X": {"$from": "steps.nope.stdout"}}}
    )
    assert result.status is StepStatus.FAILED
    assert "bad parameter reference" in (result.error_message or "")


async def test_nul_in_a_referenced_value_fails_the_step() -> None:
    config = {
        "step_id": "sh1",
        "type": "shell",
        "script": "echo never",
        "parameters": {"X": {"$from": "steps.prev.value"}},
    }
    context = make_context(config)
    context.set_step_output("prev", {"value": "a\0b"})
    result = await run_step(StepFactory.create_step(config, context))
    assert result.status is StepStatus.FAILED
    assert "NUL" in (result.error_message or "")


async def test_server_environment_is_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("V2_SECRET_TEST", "s3cr3t-value")
    monkeypatch.setenv("V2_CONNECTIONS", '{"db": "postgresql://u:pw@h/db"}')
    result = await run_config({"script": "env", "parameters": {"MINE": "yes"}})
    assert result.output is not None
    names = {line.split("=", 1)[0] for line in result.output.splitlines() if "=" in line}
    assert "V2_SECRET_TEST" not in names and "V2_CONNECTIONS" not in names
    assert "s3cr3t-value" not in result.output and "pw@h" not in result.output
    assert {"PATH", "HOME", "LANG", "MINE"} <= names


# -- script sources, working directory -------------------------------------------------------------
async def test_inline_script_runs_from_a_private_file_removed_afterwards() -> None:
    script = 'echo "$0"; stat -c %a "$0"; stat -c %a "$(dirname "$0")"; cat "$0"'
    result = await run_config({"script": script})
    assert result.status is StepStatus.SUCCESS, result.error_message
    assert result.output is not None
    path, file_mode, dir_mode, content = result.output.split("\n", 3)
    assert (file_mode, dir_mode) == ("600", "700")
    assert content == script  # written verbatim
    assert gone(Path(path)) and gone(Path(path).parent)


async def test_working_directory_is_honoured(tmp_path: Path) -> None:
    result = await run_config({"script": "pwd -P", "working_directory": str(tmp_path)})
    assert result.output == real(tmp_path) + "\n"


async def test_missing_working_directory_fails_clearly(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    result = await run_config({"script": "pwd", "working_directory": str(missing)})
    assert result.status is StepStatus.FAILED
    assert f"working_directory {str(missing)!r} does not exist" in (result.error_message or "")


async def test_script_path_absolute_and_relative_to_working_directory(tmp_path: Path) -> None:
    (tmp_path / "job.sh").write_text('echo "ran $0 with $WHO"\n')
    absolute = await run_config(
        {"script_path": str(tmp_path / "job.sh"), "parameters": {"WHO": "abs"}}
    )
    assert absolute.output == f"ran {tmp_path / 'job.sh'} with abs\n"
    relative = await run_config(
        {"script_path": "job.sh", "working_directory": str(tmp_path), "parameters": {"WHO": "rel"}}
    )
    assert relative.output == f"ran {tmp_path / 'job.sh'} with rel\n"
    assert (tmp_path / "job.sh").exists()  # a script_path is never removed


async def test_missing_script_path_fails_clearly(tmp_path: Path) -> None:
    result = await run_config({"script_path": str(tmp_path / "nope.sh")})
    assert result.status is StepStatus.FAILED
    assert "script_path" in (result.error_message or "")


# -- results ---------------------------------------------------------------------------------------
async def test_success_result_and_step_output() -> None:
    step = make_step({"script": "echo out; echo note >&2"})
    result = await run_step(step)
    assert (result.status, result.output, result.error_message) == (
        StepStatus.SUCCESS,
        "out\n",
        None,
    )
    assert result.metadata == {
        "exit_code": 0,
        "stdout_truncated": False,
        "stderr_truncated": False,
        "stderr": "note\n",
    }
    assert step.context.get_step_output("sh1") == {
        "stdout": "out\n",
        "stderr": "note\n",
        "exit_code": 0,
    }


async def test_non_zero_exit_fails_with_the_stderr_tail() -> None:
    step = make_step({"script": "echo partial; echo 'disk full' >&2; exit 3"})
    result = await run_step(step)
    assert result.status is StepStatus.FAILED
    assert result.error_message == "exit code 3: disk full"
    assert result.output == "partial\n"
    assert result.metadata["exit_code"] == 3 and result.metadata["stderr"] == "disk full\n"
    assert step.context.get_step_output("sh1") is None


async def test_exit_without_stderr_says_the_exit_code() -> None:
    result = await run_config({"script": "exit 4"})
    assert (result.status, result.error_message) == (StepStatus.FAILED, "exit code 4")


async def test_output_is_capped() -> None:
    resources = StepResources(max_output_bytes=1000, kill_grace_seconds=0.3)
    result = await run_config(
        {"script": "head -c 5000 /dev/zero | tr '\\0' x"}, resources=resources
    )
    assert result.output == "x" * 1000
    assert result.metadata["stdout_truncated"] is True


async def test_missing_shell_executable_fails_clearly(tmp_path: Path) -> None:
    shell = str(tmp_path / "no-sh")
    resources = StepResources(shell_executable=shell)
    result = await run_config({"script": "echo hi"}, resources=resources)
    assert result.status is StepStatus.FAILED
    assert result.error_message == f"shell executable {shell!r} not found; set V2_SHELL_EXECUTABLE"


# -- configuration ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bad-name", "1ST", "A B", "A\n", "É", ""])
def test_bad_parameter_names_are_rejected(name: str) -> None:
    config = {"step_id": "sh1", "type": "shell", "script": "true", "parameters": {name: "x"}}
    with pytest.raises(ConfigurationError) as info:
        StepFactory.create_step(config, make_context(config))
    assert [e.field for e in info.value.errors] == [f"parameters.{name}"]
    job = JobDefinition(job_id="j", job_name="j", steps=[config])
    assert f"steps[0].parameters.{name}" in [e.field for e in job.validation_errors()]


def test_script_and_script_path_together_are_rejected() -> None:
    config = {"step_id": "sh1", "type": "shell", "script": "true", "script_path": "/x.sh"}
    with pytest.raises(ConfigurationError) as info:
        StepFactory.create_step(config, make_context(config))
    assert [e.field for e in info.value.errors] == ["script_path"]


def test_neither_script_nor_script_path_is_rejected() -> None:
    config = {"step_id": "sh1", "type": "shell"}
    with pytest.raises(ConfigurationError):
        StepFactory.create_step(config, make_context(config))


def test_nul_in_a_literal_value_is_rejected() -> None:
    config = {"step_id": "sh1", "type": "shell", "script": "true", "parameters": {"A": "x\0y"}}
    job = JobDefinition(job_id="j", job_name="j", steps=[config])
    assert [(e.field, e.message) for e in job.validation_errors()] == [
        ("steps[0].parameters.A", "must not contain NUL characters")
    ]
