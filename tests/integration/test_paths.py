"""Path confinement where it is enforced last: in the shell and PowerShell steps, when they
run (real files, real symlinks, real processes)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from app.domain.enums import StepStatus
from app.domain.models import JobDefinition, StepExecutionResult
from app.steps import ExecutionContext, StepFactory, StepResources
from app.steps.paths import PathNotAllowedError, confine, confine_step_paths
from tests.support.pwsh import install_fake_pwsh


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "ok.sh").write_text('echo "ok $(pwd -P)"\n')
    (root / "sub" / "inner.sh").write_text("echo inner\n")
    (outside / "evil.sh").write_text(f"touch {outside / 'CANARY'}\necho evil\n")
    (root / "out.sh").symlink_to(outside / "evil.sh")
    (root / "outdir").symlink_to(outside)
    return {"root": root, "outside": outside}


async def run(config: dict[str, Any], resources: StepResources) -> StepExecutionResult:
    step_type = config.pop("type", "shell")
    config = {"step_id": "s", "type": step_type, **config}
    job = JobDefinition(job_id="j", job_name="j", steps=[config])
    step = StepFactory.create_step(config, ExecutionContext(job, "e", resources=resources))
    async with asyncio.timeout(30):
        return await step.run()


# -- confine() --------------------------------------------------------------------------------
def test_confine_rules(tree: dict[str, Path]) -> None:
    root, outside = str(tree["root"]), tree["outside"]

    assert confine("ok.sh", [root], field="f") == f"{root}/ok.sh"
    assert confine(f"{root}/sub", [root], field="f") == f"{root}/sub"
    assert confine(root, [root], field="f") == root
    assert confine("inner.sh", [root], field="f", base=f"{root}/sub") == f"{root}/sub/inner.sh"
    assert confine("x", None, field="f", base="/base") == "/base/x"  # unconfined library use
    for bad, why in [
        ("out.sh", "outside"),
        ("outdir/evil.sh", "outside"),
        (str(outside / "evil.sh"), "outside"),
        ("../root/ok.sh", "'..'"),
        ("sub/..", "'..'"),
        ("a\x00", "NUL"),
        (root + "-sibling/x", "outside"),  # a prefix of the root's name is not inside it
    ]:
        with pytest.raises(PathNotAllowedError, match=why) as info:
            confine(bad, [root], field="steps[0].script_path")
        assert info.value.field == "steps[0].script_path"
    with pytest.raises(PathNotAllowedError, match="V2_SCRIPT_ROOTS"):
        confine("ok.sh", [], field="f")


def test_step_paths_name_each_field(tree: dict[str, Path]) -> None:
    root = str(tree["root"])
    _, _, problems = confine_step_paths("/etc", "/etc/passwd", [root], prefix="steps[2]")

    assert [p.field for p in problems] == ["steps[2].working_directory", "steps[2].script_path"]
    cwd, script, problems = confine_step_paths("sub", "inner.sh", [root], prefix="steps[0]")
    assert (cwd, script, problems) == (f"{root}/sub", f"{root}/sub/inner.sh", [])


# -- the shell step at run time ---------------------------------------------------------------
async def test_shell_runs_inside_the_root(tree: dict[str, Path]) -> None:
    resources = StepResources(script_roots=(str(tree["root"]),))

    result = await run(
        {"script_path": str(tree["root"] / "ok.sh"), "working_directory": "sub"}, resources
    )

    assert result.status is StepStatus.SUCCESS, result.error_message
    assert result.output == f"ok {tree['root']}/sub\n"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"script_path": "out.sh"}, "outside the script roots"),
        ({"script_path": "outdir/evil.sh"}, "outside the script roots"),
        ({"script_path": "../outside/evil.sh"}, "'..'"),
        ({"script": "touch CANARY", "working_directory": "outdir"}, "outside the script roots"),
    ],
)
async def test_shell_refuses_paths_leading_out(
    tree: dict[str, Path], config: dict[str, Any], message: str
) -> None:
    resources = StepResources(script_roots=(str(tree["root"]),))

    result = await run(config, resources)

    assert result.status is StepStatus.FAILED
    assert message in (result.error_message or "")
    assert not (tree["outside"] / "CANARY").exists()


async def test_no_roots_refuses_script_files(tree: dict[str, Path]) -> None:
    result = await run({"script_path": str(tree["root"] / "ok.sh")}, StepResources(script_roots=()))

    assert result.status is StepStatus.FAILED
    assert "V2_SCRIPT_ROOTS" in (result.error_message or "")


async def test_the_resolved_path_is_what_runs(tree: dict[str, Path]) -> None:
    """A script reached through an inner symlink runs as its real path (``$0``), so swapping
    the link after the check cannot redirect the interpreter."""
    root = tree["root"]
    (root / "alias.sh").symlink_to(root / "sub" / "inner.sh")
    (root / "sub" / "inner.sh").write_text('printf %s "$0"\n')

    result = await run({"script_path": "alias.sh"}, StepResources(script_roots=(str(root),)))

    assert result.output == str(root / "sub" / "inner.sh")


# -- the PowerShell step at run time (fake pwsh) ----------------------------------------------


async def test_powershell_paths_are_checked_when_it_runs(
    tree: dict[str, Path], tmp_path: Path
) -> None:
    launcher, record = install_fake_pwsh(tmp_path)
    root = tree["root"]
    (root / "job.ps1").write_text("Write-Output 1\n")
    resources = StepResources(powershell_executable=str(launcher), script_roots=(str(root),))

    ok = await run({"type": "powershell", "script_path": "job.ps1"}, resources)
    assert ok.status is StepStatus.SUCCESS, ok.error_message
    assert json.loads(record.read_text())["env"]["JSV2_SCRIPT"] == str(root / "job.ps1")
    record.unlink()

    refused = await run({"type": "powershell", "script_path": "out.sh"}, resources)
    assert refused.status is StepStatus.FAILED
    assert "outside the script roots" in (refused.error_message or "")
    assert not record.exists()  # pwsh was never started
