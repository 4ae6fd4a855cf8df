"""PowerShellStep: runs a PowerShell 7 script with parameters passed as literal values.

How parameters reach the script, whatever they contain: the command line is constant
(``pwsh -NoProfile -NonInteractive -ExecutionPolicy <policy> -File <wrapper.ps1>``) and so is
the wrapper script (``POWERSHELL_WRAPPER``: no job data is ever written into it). The wrapper
reads the target script's path from ``$env:JSV2_SCRIPT`` and the parameters, one JSON object,
from ``$env:JSV2_PARAMS_JSON``; it decodes the JSON with System.Text.Json into plain values
(string, long/double, bool, null, object[] for lists, ordered hashtables for objects) and calls
``& $script @parameters``. No value is ever parsed as PowerShell code, and strings stay strings
(``ConvertFrom-Json`` would turn date-looking strings into DateTime, so it is not used).

Exit code: the script's ``exit N``; otherwise ``$LASTEXITCODE`` of the last native command it
ran, 0 when it ran none; 1 when it ends with an uncaught terminating error (written to stderr).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.domain.enums import StepStatus
from app.domain.errors import FieldError, StepExecutionError
from app.domain.models import StepExecutionResult
from app.steps.base import ExecutionStep
from app.steps.generated.powershell import PowerShellStepConfig
from app.steps.subprocess_runner import (
    MAX_ENV_STRING_BYTES,
    ProcessResult,
    ProcessStartError,
    StepInputError,
    check_working_directory,
    minimal_environment,
    private_workspace,
    process_outcome,
    process_step_config_errors,
    resolve_script_path,
    run_process,
    to_json,
    write_private_file,
)

SCRIPT_ENV = "JSV2_SCRIPT"
PARAMS_ENV = "JSV2_PARAMS_JSON"
DEFAULT_EXECUTION_POLICY = "RemoteSigned"
WRAPPER_FILE_NAME = "jsv2_wrapper.ps1"
INLINE_SCRIPT_FILE_NAME = "script.ps1"
#: Quiet pwsh: no telemetry, no update check on start.
POWERSHELL_QUIET_ENV = {"POWERSHELL_TELEMETRY_OPTOUT": "1", "POWERSHELL_UPDATECHECK": "Off"}

POWERSHELL_WRAPPER = r"""# Job Scheduler V2: PowerShell step wrapper.
# This text is constant: it never holds job data.
# It runs the script named by $env:JSV2_SCRIPT with the parameters in $env:JSV2_PARAMS_JSON
# (a JSON object) splatted, so every value reaches the script as a literal.
try { [Console]::OutputEncoding = [System.Text.UTF8Encoding]::new($false) } catch { }
$OutputEncoding = [System.Text.UTF8Encoding]::new($false)

function ConvertFrom-Jsv2JsonElement($Element) {
    $kind = $Element.ValueKind.ToString()
    if ($kind -eq 'Object') {
        $table = [ordered]@{}
        foreach ($property in $Element.EnumerateObject()) {
            $table[$property.Name] = ConvertFrom-Jsv2JsonElement $property.Value
        }
        return $table
    }
    if ($kind -eq 'Array') {
        $items = [System.Collections.Generic.List[object]]::new()
        foreach ($item in $Element.EnumerateArray()) {
            $items.Add((ConvertFrom-Jsv2JsonElement $item))
        }
        return , $items.ToArray()
    }
    if ($kind -eq 'String') { return $Element.GetString() }
    if ($kind -eq 'Number') {
        $whole = [long]0
        if ($Element.TryGetInt64([ref]$whole)) { return $whole }
        return $Element.GetDouble()
    }
    if ($kind -eq 'True') { return $true }
    if ($kind -eq 'False') { return $false }
    return $null
}

$jsv2Script = $env:JSV2_SCRIPT
$jsv2Parameters = @{}
try {
    $jsv2Json = $env:JSV2_PARAMS_JSON
    if ([string]::IsNullOrEmpty($jsv2Json)) { $jsv2Json = '{}' }
    $jsv2Document = [System.Text.Json.JsonDocument]::Parse($jsv2Json)
    try {
        if ($jsv2Document.RootElement.ValueKind.ToString() -ne 'Object') {
            throw 'the parameters must be a JSON object'
        }
        foreach ($jsv2Property in $jsv2Document.RootElement.EnumerateObject()) {
            $jsv2Parameters[$jsv2Property.Name] = ConvertFrom-Jsv2JsonElement $jsv2Property.Value
        }
    } finally {
        $jsv2Document.Dispose()
    }
} catch {
    $jsv2Message = $_.Exception.Message
    [Console]::Error.WriteLine("job scheduler: cannot read the step parameters: $jsv2Message")
    exit 1
}
Remove-Item -LiteralPath Env:JSV2_SCRIPT, Env:JSV2_PARAMS_JSON -ErrorAction SilentlyContinue
if ([string]::IsNullOrEmpty($jsv2Script)) {
    [Console]::Error.WriteLine('job scheduler: no script to run (JSV2_SCRIPT is empty)')
    exit 1
}

$global:LASTEXITCODE = $null
try {
    & $jsv2Script @jsv2Parameters
} catch {
    [Console]::Error.WriteLine(($_ | Out-String).TrimEnd())
    exit 1
}
if ($null -eq $global:LASTEXITCODE) { exit 0 }
exit $global:LASTEXITCODE
"""


def encode_parameters(parameters: Mapping[str, Any]) -> str:
    """The parameters as one ASCII-only JSON object (the value of ``JSV2_PARAMS_JSON``).

    ASCII-only, so the environment string holds no NUL, newline or non-ASCII byte whatever
    the values contain; the wrapper's JSON decoder restores them exactly.
    Raises ``StepInputError`` for values JSON cannot carry (NaN, arbitrary objects).
    """
    try:
        return to_json(dict(parameters), ascii_only=True)
    except ValueError as exc:
        raise StepInputError(f"parameters cannot be passed to PowerShell: {exc}") from exc


def build_powershell_command(
    *,
    executable: str,
    wrapper_path: str,
    script_path: str,
    parameters: Mapping[str, Any],
    execution_policy: str = DEFAULT_EXECUTION_POLICY,
    base_env: Mapping[str, str],
) -> tuple[list[str], dict[str, str]]:
    """The argv and the complete environment that run ``script_path`` with ``parameters``.

    Pure: no I/O. Only the wrapper path is on the command line; the script path and the
    parameters travel in the environment, which the wrapper reads as data.
    """
    argv = [
        executable,
        "-NoProfile",
        "-NonInteractive",
        "-ExecutionPolicy",
        execution_policy,
        "-File",
        wrapper_path,
    ]
    encoded = encode_parameters(parameters)
    if len(PARAMS_ENV) + 1 + len(encoded) > MAX_ENV_STRING_BYTES:
        raise StepInputError(
            f"parameters are too large ({len(encoded)} bytes of JSON; "
            f"at most {MAX_ENV_STRING_BYTES - len(PARAMS_ENV) - 1})"
        )
    env = dict(base_env)
    env.update(POWERSHELL_QUIET_ENV)
    env[SCRIPT_ENV] = script_path
    env[PARAMS_ENV] = encoded
    return argv, env


class PowerShellStep(ExecutionStep):
    """PowerShell script execution step.

    Runs ``resources.powershell_executable`` (``pwsh``) on the constant wrapper, which calls the
    inline ``script`` (written to a private temporary ``.ps1`` file, 0600 in a 0700 directory,
    removed afterwards) or ``script_path`` (relative paths are taken from
    ``working_directory``) with the parameters splatted as literal values. Parameter names
    are letters, digits and underscores. The process environment is PATH, HOME and LANG from
    the server, the run's ``JOBSCHEDULER_*`` variables and the wrapper's two variables:
    nothing else of the server's environment.

    Succeeds iff the exit code is 0. Output is stdout; the step output for later steps is
    ``{"stdout", "stderr", "exit_code"}``. Timeout and cancel stop the whole process group.
    """

    step_type = "powershell"
    output_fields = {"stdout": False, "stderr": False, "exit_code": False}
    config_model = PowerShellStepConfig

    @classmethod
    def extra_checks(cls, step_config: dict[str, Any], prefix: str) -> list[FieldError]:
        # NUL is fine in values: the JSON encoding escapes it.
        errors = process_step_config_errors(step_config, prefix, nul_free_values=False)
        parameters = step_config.get("parameters")
        seen: dict[str, str] = {}
        for name in parameters if isinstance(parameters, dict) else ():
            first = seen.setdefault(str(name).casefold(), str(name))
            if first != name:
                field = f"{prefix}.parameters.{name}" if prefix else f"parameters.{name}"
                errors.append(
                    FieldError(
                        field, f"same name as {first!r}: PowerShell parameter names ignore case"
                    )
                )
        return errors

    async def execute(self) -> StepExecutionResult:
        """
        Execute PowerShell script

        Returns:
            Step result with script output and metadata
        """
        result = self.new_result()
        try:
            proc = await self._run(self.step_config.get("script"), self.resolved_parameters())
        except (StepExecutionError, StepInputError) as exc:
            return self.finish(result, StepStatus.FAILED, error=str(exc))
        except ProcessStartError as exc:
            return self.finish(result, StepStatus.FAILED, error=self._start_error_message(exc))
        ok, error, metadata = process_outcome(proc)
        if ok:
            self.context.set_step_output(
                self.step_id,
                {"stdout": proc.stdout, "stderr": proc.stderr, "exit_code": proc.exit_code},
            )
        status = StepStatus.SUCCESS if ok else StepStatus.FAILED
        return self.finish(result, status, output=proc.stdout, error=error, **metadata)

    async def _run_powershell(
        self, script: str | None, parameters: dict[str, Any]
    ) -> tuple[str, str, int]:
        """
        Run PowerShell script with parameters

        ``script`` is the inline script text; ``None`` runs the configured ``script_path``.

        Returns:
            Tuple of (stdout, stderr, exit_code)

        Raises:
            StepExecutionError: when the script cannot be started
        """
        try:
            proc = await self._run(script, parameters)
        except (StepInputError, ProcessStartError) as exc:
            message = (
                self._start_error_message(exc) if isinstance(exc, ProcessStartError) else str(exc)
            )
            raise StepExecutionError(self.step_id, self.get_step_type(), message) from exc
        return proc.stdout, proc.stderr, proc.exit_code

    async def _run(self, script: str | None, parameters: dict[str, Any]) -> ProcessResult:
        resources = self.context.resources
        roots = resources.script_roots
        cwd = check_working_directory(self.step_config.get("working_directory"), roots)
        with private_workspace("jsv2-pwsh-") as workspace:
            wrapper = write_private_file(workspace, WRAPPER_FILE_NAME, POWERSHELL_WRAPPER, bom=True)
            if script is not None:
                try:
                    target = write_private_file(
                        workspace, INLINE_SCRIPT_FILE_NAME, script, bom=True
                    )
                except UnicodeEncodeError as exc:
                    raise StepInputError("script is not valid Unicode text") from exc
                script_path = str(target)
            else:
                script_path = resolve_script_path(
                    str(self.step_config.get("script_path")), cwd, roots
                )
            argv, env = build_powershell_command(
                executable=resources.powershell_executable,
                wrapper_path=str(wrapper),
                script_path=script_path,
                parameters=parameters,
                execution_policy=str(
                    self.step_config.get("execution_policy") or DEFAULT_EXECUTION_POLICY
                ),
                base_env={**minimal_environment(), **self.context.run_environment()},
            )
            return await run_process(
                argv,
                cwd=cwd,
                env=env,
                max_output_bytes=resources.max_output_bytes,
                kill_grace_seconds=resources.kill_grace_seconds,
            )

    def _start_error_message(self, exc: ProcessStartError) -> str:
        executable = self.context.resources.powershell_executable
        if exc.reason == ProcessStartError.NOT_FOUND and exc.executable == executable:
            return f"PowerShell executable {executable!r} not found; set V2_POWERSHELL_EXECUTABLE"
        return str(exc)
