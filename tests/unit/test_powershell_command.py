"""The PowerShell command line and parameter encoding (pure: no process is started)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from app.steps import PowerShellStep
from app.steps.powershell import (
    PARAMS_ENV,
    POWERSHELL_WRAPPER,
    SCRIPT_ENV,
    build_powershell_command,
    encode_parameters,
)
from app.steps.subprocess_runner import StepInputError, minimal_environment

BASE_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/home/jobs", "LANG": "C.UTF-8"}
WRAPPER = "/tmp/jsv2-pwsh-abc/jsv2_wrapper.ps1"

HOSTILE: dict[str, Any] = {
    "Injection": "'; Remove-Item -Recurse / ;'",
    "Subexpression": "$(whoami)",
    "Variable": "$env:V2_CONNECTIONS ${HOME} $null",
    "Backticks": "`whoami` `n `0",
    "Newlines": "one\ntwo\r\nthree\n",
    "LeadingDash": "-Force",
    "DoubleDash": "--%",
    "Quotes": 'it\'s "quoted" \u2018curly\u2019 \u201cdouble\u201d',  # all quotes to pwsh
    "Unicode": "Grüße, 世界 🚀",
    "Nul": "before\0after",
    "DateLike": "2026-01-01T00:00:00Z",
    "NumberLike": "007",
    "Empty": "",
    "Splat": "@args",
    "Int": 42,
    "Big": 2**53 + 1,
    "Float": -1.5,
    "Bool": True,
    "Null": None,
    "List": ["a", 1, ["nested", "$(x)"], {"k": "v"}],
    "EmptyList": [],
    "Object": {"path": "C:\\Program Files\\x", "when": "2026-03-29T02:30:00", "deep": {"n": [1]}},
}


def build(**overrides: Any) -> tuple[list[str], dict[str, str]]:
    kwargs: dict[str, Any] = {
        "executable": "pwsh",
        "wrapper_path": WRAPPER,
        "script_path": "/tmp/jsv2-pwsh-abc/script.ps1",
        "parameters": HOSTILE,
        "base_env": BASE_ENV,
    }
    kwargs.update(overrides)
    return build_powershell_command(**kwargs)


def test_argv_is_exact_and_defaults_to_remote_signed() -> None:
    argv, _ = build()
    assert argv == [
        "pwsh",
        "-NoProfile",
        "-NonInteractive",
        "-ExecutionPolicy",
        "RemoteSigned",
        "-File",
        WRAPPER,
    ]


@pytest.mark.parametrize("policy", ["Bypass", "AllSigned", "Unrestricted"])
def test_argv_carries_the_execution_policy(policy: str) -> None:
    argv, _ = build(executable="/opt/microsoft/powershell/7/pwsh", execution_policy=policy)
    assert argv == [
        "/opt/microsoft/powershell/7/pwsh",
        "-NoProfile",
        "-NonInteractive",
        "-ExecutionPolicy",
        policy,
        "-File",
        WRAPPER,
    ]


def test_no_user_data_on_the_command_line() -> None:
    odd_script = "/srv/it's $(odd)/-File `x`.ps1"
    argv, env = build(script_path=odd_script)
    assert odd_script not in argv
    for value in HOSTILE.values():
        if isinstance(value, str) and len(value) > 2:
            assert all(value not in arg for arg in argv), value
    assert env[SCRIPT_ENV] == odd_script


def test_parameters_round_trip_through_the_environment() -> None:
    _, env = build()
    assert json.loads(env[PARAMS_ENV]) == HOSTILE


def test_parameters_are_one_ascii_line_in_the_environment() -> None:
    _, env = build()
    encoded = env[PARAMS_ENV]
    assert encoded.isascii()
    assert not any(ch in encoded for ch in "\0\r\n")


def test_environment_is_base_plus_the_wrapper_variables() -> None:
    _, env = build()
    assert env == {
        **BASE_ENV,
        "POWERSHELL_TELEMETRY_OPTOUT": "1",
        "POWERSHELL_UPDATECHECK": "Off",
        SCRIPT_ENV: "/tmp/jsv2-pwsh-abc/script.ps1",
        PARAMS_ENV: encode_parameters(HOSTILE),
    }


def test_base_environment_leaves_server_secrets_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("V2_CONNECTIONS", '{"db": "postgresql://u:secret@h/db"}')
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "abc")
    monkeypatch.setenv("PATH", "/custom/bin:/usr/bin")
    base = minimal_environment()
    assert set(base) == {"PATH", "HOME", "LANG"}
    assert base["PATH"] == "/custom/bin:/usr/bin"
    _, env = build(base_env=base)
    assert "secret" not in json.dumps(env) and "AWS_SECRET_ACCESS_KEY" not in env


def test_values_from_step_outputs_are_encoded_as_text() -> None:
    when = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    uid = UUID("12345678-1234-5678-1234-567812345678")
    encoded = encode_parameters(
        {"When": when, "Amount": Decimal("12.50"), "Id": uid, "Pair": (1, 2)}
    )
    assert json.loads(encoded) == {
        "When": "2026-03-29T01:30:00+00:00",
        "Amount": "12.50",
        "Id": str(uid),
        "Pair": [1, 2],
    }


@pytest.mark.parametrize("bad", [math.nan, math.inf, object(), b"bytes"])
def test_values_json_cannot_carry_are_refused(bad: Any) -> None:
    with pytest.raises(StepInputError, match="cannot be passed to PowerShell"):
        encode_parameters({"X": bad})


def test_too_large_parameters_are_refused() -> None:
    with pytest.raises(StepInputError, match="too large"):
        build(parameters={"Blob": "x" * 200_000})


def test_wrapper_is_constant_and_holds_no_user_data() -> None:
    # Building a command never touches the wrapper text; it is a module constant.
    before = POWERSHELL_WRAPPER
    build()
    assert before == POWERSHELL_WRAPPER
    for value in HOSTILE.values():
        if isinstance(value, str) and len(value) > 3:
            assert value not in POWERSHELL_WRAPPER, value


def test_wrapper_reads_its_inputs_as_data_and_splats_them() -> None:
    assert f"$env:{SCRIPT_ENV}" in POWERSHELL_WRAPPER
    assert f"$env:{PARAMS_ENV}" in POWERSHELL_WRAPPER
    assert "& $jsv2Script @jsv2Parameters" in POWERSHELL_WRAPPER
    assert "exit $global:LASTEXITCODE" in POWERSHELL_WRAPPER
    # Nothing evaluates text as code; and ConvertFrom-Json is avoided on purpose: it turns
    # date-looking strings into DateTime, so such a parameter would not arrive literally.
    for forbidden in (
        "Invoke-Expression",
        "iex ",
        "-Command",
        "ConvertFrom-Json",
        "[scriptblock]::Create",
    ):
        assert forbidden not in POWERSHELL_WRAPPER


# -- configuration -------------------------------------------------------------------------------
def fields(config: dict[str, Any]) -> list[str]:
    base = {"step_id": "ps1", "type": "powershell"}
    return [e.field for e in PowerShellStep.check_config({**base, **config})]


def test_inline_or_path_but_exactly_one() -> None:
    assert fields({"script": "Write-Output 1"}) == []
    assert fields({"script_path": "/srv/job.ps1"}) == []
    assert fields({"script": "x", "script_path": "/srv/job.ps1"}) == ["script_path"]
    assert fields({}) != []


@pytest.mark.parametrize("name", ["bad-name", "9Lives", "With Space", "Ünicode", "A\n"])
def test_parameter_names_must_be_identifiers(name: str) -> None:
    assert fields({"script": "x", "parameters": {name: 1}}) == [f"parameters.{name}"]


def test_parameter_names_differing_only_in_case_are_rejected() -> None:
    # PowerShell binds parameters case-insensitively: one would silently replace the other.
    assert fields({"script": "x", "parameters": {"Path": 1, "PATH": 2}}) == ["parameters.PATH"]


def test_any_value_is_allowed_including_nul() -> None:
    assert fields({"script": "x", "parameters": HOSTILE}) == []


def test_execution_policy_must_be_a_known_one() -> None:
    assert fields({"script": "x", "execution_policy": "Bypass"}) == []
    assert fields({"script": "x", "execution_policy": "Bypass; rm -rf /"}) == ["execution_policy"]
