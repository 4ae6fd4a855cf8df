"""StepFactory, step schemas (the JSON files) and the models generated from them."""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app import ExecutionContext, ExecutionStep, JobDefinition, StepFactory
from app.domain import ConfigurationError, StepExecutionResult
from app.domain.enums import StepStatus
from app.steps import PowerShellStep, ShellStep, SqlStep
from app.steps import base as step_base
from app.steps.context import ParameterReferenceError, parse_reference

ROOT = Path(__file__).resolve().parents[2]


def ctx() -> ExecutionContext:
    job = JobDefinition(job_id="j", job_name="J", steps=[{"step_id": "x", "type": "shell"}])
    return ExecutionContext(job, "exec-1")


def test_builtin_types_and_classes() -> None:
    assert StepFactory.get_available_step_types() == ["powershell", "shell", "sql"]
    c = ctx()
    sql = StepFactory.create_step(
        {"step_id": "a", "type": "sql", "query": "select 1", "connection_name": "db"}, c
    )
    assert isinstance(sql, SqlStep) and sql.get_step_type() == "sql"
    assert sql.get_timeout() == 300 and sql.supports_cancel()
    ps = StepFactory.create_step(
        {"step_id": "b", "type": "powershell", "script_path": "/x.ps1", "timeout": 9}, c
    )
    assert isinstance(ps, PowerShellStep) and ps.get_timeout() == 9
    sh = StepFactory.create_step({"step_id": "c", "type": "shell", "script": "true"}, c)
    assert isinstance(sh, ShellStep) and sh.validate_config() == []


def test_unknown_type_is_value_error() -> None:
    with pytest.raises(ValueError, match="unsupported step type 'ftp'"):
        StepFactory.create_step({"step_id": "a", "type": "ftp"}, ctx())
    with pytest.raises(ValueError):
        StepFactory.get_step_schema("ftp")


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"step_id": "a", "type": "sql", "connection_name": "db"}, "query"),
        ({"step_id": "a", "type": "sql", "query": "", "connection_name": "db"}, "query"),
        ({"step_id": "a", "type": "sql", "query": "q", "connection_name": "db", "x": 1}, "x"),
        ({"step_id": "a", "type": "sql", "query": "q", "connection_name": 5}, "connection_name"),
        (
            {"step_id": "a", "type": "sql", "query": "q", "connection_name": "d", "timeout": 0},
            "timeout",
        ),
        ({"type": "shell", "script": "x"}, "step_id"),
        ({"step_id": "a b", "type": "shell", "script": "x"}, "step_id"),
        (
            {"step_id": "a", "type": "powershell", "script": "x", "execution_policy": "Nope"},
            "execution_policy",
        ),
    ],
)
def test_invalid_config_names_the_field(config: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        StepFactory.create_step(config, ctx())
    assert field in [e.field for e in info.value.errors]


def test_any_of_rule_from_the_json_schema_is_enforced() -> None:
    with pytest.raises(ConfigurationError, match="one of script or script_path is required"):
        StepFactory.create_step({"step_id": "a", "type": "powershell"}, ctx())


def test_schemas_are_the_json_files_and_keep_the_spec_fields() -> None:
    goto = json.loads((ROOT / "app/steps/schemas/goto.json").read_text())
    del goto["$schema"], goto["$id"]
    for step_type in ("sql", "powershell", "shell"):
        on_disk = json.loads((ROOT / f"app/steps/schemas/{step_type}.json").read_text())
        # The routing fields refer to goto.json; the served schema has it inlined.
        for route in ("on_success", "on_failure"):
            assert on_disk["properties"][route]["anyOf"][1] == {"$ref": "goto.json"}
            on_disk["properties"][route]["anyOf"][1] = goto
        assert StepFactory.get_step_schema(step_type) == on_disk
    sql = StepFactory.get_step_schema("sql")
    assert sql["required"] == ["step_id", "type", "query", "connection_name"]
    assert sql["properties"]["timeout"]["default"] == 300
    assert sql["properties"]["fetch_results"]["default"] is True
    assert sql["properties"]["parameters"]["default"] == {}
    ps = StepFactory.get_step_schema("powershell")
    assert ps["anyOf"] == [{"required": ["script"]}, {"required": ["script_path"]}]
    assert ps["properties"]["execution_policy"]["default"] == "RemoteSigned"


def test_generated_model_json_schema_carries_any_of() -> None:
    from app.steps.generated.powershell import PowerShellStepConfig

    schema = PowerShellStepConfig.model_json_schema()
    assert schema["anyOf"] == [{"required": ["script"]}, {"required": ["script_path"]}]
    model = PowerShellStepConfig.model_validate(
        {"step_id": "a", "type": "powershell", "script": "x"}
    )
    assert model.execution_policy == "RemoteSigned" and model.parameters == {}
    assert model.script_path is None


def test_generated_models_are_not_stale(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts/generate_step_models.py"), str(out)], check=True
    )
    current = ROOT / "app/steps/generated"
    names = sorted(p.name for p in out.glob("*.py"))
    assert names == sorted(p.name for p in current.glob("*.py"))
    _match, mismatch, errors = filecmp.cmpfiles(out, current, names, shallow=False)
    assert not mismatch and not errors, (
        f"app/steps/generated is stale ({mismatch + errors}): run `make generate`"
    )


class EchoStep(ExecutionStep):
    step_type = "echo"

    async def execute(self) -> StepExecutionResult:
        result = self.new_result()
        return self.finish(result, StepStatus.SUCCESS, output=str(self.step_config.get("text")))


def test_register_step_type_at_runtime() -> None:
    StepFactory.register_step_type("echo", EchoStep)
    try:
        assert "echo" in StepFactory.get_available_step_types()
        step = StepFactory.create_step({"step_id": "e", "type": "echo", "text": "hi"}, ctx())
        assert isinstance(step, EchoStep)
        assert StepFactory.get_step_schema("echo")["required"] == ["step_id", "type"]
        job = JobDefinition(job_id="j", job_name="J", steps=[{"step_id": "e", "type": "echo"}])
        assert job.validate()
    finally:
        StepFactory.unregister_step_type("echo")
    with pytest.raises(TypeError):
        StepFactory.register_step_type("bad", dict)  # type: ignore[arg-type]


def test_context_api() -> None:
    job = JobDefinition(
        job_id="j",
        job_name="J",
        metadata={"team": "ops"},
        steps=[{"step_id": "x", "type": "shell"}],
    )
    c = ExecutionContext(job, "e1")
    meta = c.get_job_metadata()
    meta["team"] = "changed"
    assert c.get_job_metadata() == {"team": "ops"}
    assert c.get_step_output("nope") is None
    c.set_step_output("count", {"rows": [{"n": 3}, {"n": 4}], "columns": ["n"]})
    assert c.resolve_reference("steps.count.rows[1].n") == 4
    assert c.resolve_reference("steps.count.rows[-1].n") == 4
    assert c.resolve_reference("job.job_id") == "j"
    c.add_execution_metadata("k", 1)
    assert c.execution_metadata == {"k": 1}
    assert not c.is_cancelled()
    c.request_cancel()
    assert c.is_cancelled()
    resolved = c.resolve_parameters(
        {"a": {"$from": "steps.count.columns[0]"}, "b": [{"$from": "job.metadata"}], "c": 1},
        step_id="s",
        step_type="sql",
    )
    assert resolved == {"a": "n", "b": [{"team": "ops"}], "c": 1}


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("steps.count.rows[5].n", "has 2 items, no [5]"),
        ("steps.count.rows.n", "is not an object"),
        ("steps.count.columns[0][1]", "is not a list"),
        ("steps.ghost.rows", "step 'ghost' has no output"),
        ("steps.count.nokey", "has no key 'nokey'"),
        ("env.HOME", "must start with"),
        ("steps.count.rows[0]; import os", "cannot parse"),
        ("__import__('os')", "cannot parse"),
    ],
)
def test_bad_references_fail_clearly(path: str, message: str) -> None:
    c = ctx()
    c.set_step_output("count", {"rows": [{"n": 3}, {"n": 4}], "columns": ["n"]})
    with pytest.raises(
        ParameterReferenceError, match=message.replace("[", r"\[").replace("(", r"\(")
    ):
        c.resolve_reference(path)


def test_reference_grammar() -> None:
    assert parse_reference("steps.a-b.rows[0].n") == ["steps", "a-b", "rows", 0, "n"]
    with pytest.raises(ParameterReferenceError):
        parse_reference("")


def test_a_config_is_checked_again_when_it_changed() -> None:
    """Checks are cached by a configuration's contents: a changed dict, or one that only
    looks the same (an int key for a str key), is checked anew."""
    config: dict[str, Any] = {"step_id": "a", "type": "sql", "query": "q", "connection_name": "d"}
    assert SqlStep.check_config(config) == []
    assert SqlStep.check_config(config) == []
    config["query"] = ""
    assert [e.field for e in SqlStep.check_config(config)] == ["query"]
    config["query"] = "select 1"
    config["parameters"] = {"1": "v"}
    assert [e.field for e in SqlStep.check_config(config)] == ["parameters"]  # not used
    config["parameters"] = {1: "v"}
    assert [e.field for e in SqlStep.check_config(config)] == ["parameters[1].[key]"]
    errors = SqlStep.check_config({"step_id": "a", "type": "sql"}, "steps[0]")
    errors.clear()  # the caller's own list
    assert SqlStep.check_config({"step_id": "a", "type": "sql"}, "steps[0]") != []


def test_a_config_with_a_long_text_is_not_kept_by_the_check_cache() -> None:
    """The cache of checks keeps what it holds alive: a configuration with a long script
    is checked each time, and the cache does not grow with such configurations."""
    before = len(step_base._MODEL_PROBLEMS)
    for n in range(3):
        script = f"echo {n} " + "x" * (step_base._CACHED_TEXT_MAX + 1)
        assert ShellStep.check_config({"step_id": "s", "type": "shell", "script": script}) == []
    assert len(step_base._MODEL_PROBLEMS) == before
    assert (
        ShellStep.check_config({"step_id": "s", "type": "shell", "script": "echo a short one"})
        == []
    )
    assert len(step_base._MODEL_PROBLEMS) == before + 1
