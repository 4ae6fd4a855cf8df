"""ShellStep: runs a POSIX shell script; its parameters arrive as environment variables."""

from __future__ import annotations

from typing import Any

from app.domain.enums import StepStatus
from app.domain.errors import FieldError, StepExecutionError
from app.domain.models import StepExecutionResult
from app.steps.base import ExecutionStep
from app.steps.generated.shell import ShellStepConfig
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


def parameter_environment(parameters: dict[str, Any]) -> dict[str, str]:
    """Environment variables for ``parameters``: strings as they are, anything else as JSON.

    Numbers and booleans become their JSON text (``42``, ``true``), ``None`` becomes ``null``,
    lists and objects compact JSON. Values are never parsed by a shell: they are only
    environment strings, so quotes, ``$( )``, backticks or newlines stay literal.
    Raises ``StepInputError`` for values an environment cannot carry.
    """
    env: dict[str, str] = {}
    for name, value in parameters.items():
        if isinstance(value, str):
            text = value
        else:
            try:
                text = to_json(value, ascii_only=False)
            except ValueError as exc:
                raise StepInputError(f"parameter {name!r}: {exc}") from exc
        if "\x00" in text:
            raise StepInputError(f"parameter {name!r} contains a NUL character")
        try:
            size = len(name.encode()) + 1 + len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise StepInputError(f"parameter {name!r} is not valid Unicode text") from exc
        if size > MAX_ENV_STRING_BYTES:
            raise StepInputError(
                f"parameter {name!r} is too large for an environment variable "
                f"({size} bytes; at most {MAX_ENV_STRING_BYTES})"
            )
        env[name] = text
    return env


class ShellStep(ExecutionStep):
    """POSIX shell script execution step.

    Runs ``resources.shell_executable`` (``/bin/sh``) as ``sh <file>`` on ``script_path`` or on
    the inline ``script``, which is written to a private temporary file (0600, in a 0700
    directory) and removed afterwards. A relative ``script_path`` is taken from
    ``working_directory``, the directory the script runs in.

    The script's environment is PATH, HOME and LANG from the server plus the parameters (see
    ``parameter_environment``) and the run's ``JOBSCHEDULER_*`` variables (execution id, job
    id, scheduled time, logical date); nothing else of the server's environment is passed
    on, since it may hold secrets. A parameter may override PATH, HOME or LANG.

    Succeeds iff the exit code is 0. Output is stdout; the step output for later steps is
    ``{"stdout", "stderr", "exit_code"}``. Timeout and cancel stop the script's whole process
    group (SIGTERM, ``resources.kill_grace_seconds``, SIGKILL); so does a normal exit for
    anything it left running.
    """

    step_type = "shell"
    output_fields = {"stdout": False, "stderr": False, "exit_code": False}
    config_model = ShellStepConfig

    @classmethod
    def extra_checks(cls, step_config: dict[str, Any], prefix: str) -> list[FieldError]:
        return process_step_config_errors(step_config, prefix, nul_free_values=True)

    async def execute(self) -> StepExecutionResult:
        """
        Execute the shell script

        Returns:
            Step result with script output and metadata (exit code, truncation, stderr)
        """
        result = self.new_result()
        try:
            env = minimal_environment()
            env.update(parameter_environment(self.resolved_parameters()))
            env.update(self.context.run_environment())
            roots = self.context.resources.script_roots
            cwd = check_working_directory(self.step_config.get("working_directory"), roots)
            script_path = self.step_config.get("script_path")
            if script_path is not None:
                proc = await self._run([resolve_script_path(script_path, cwd, roots)], cwd, env)
            else:
                with private_workspace("jsv2-shell-") as workspace:
                    try:
                        script = write_private_file(
                            workspace, "script.sh", self.step_config["script"]
                        )
                    except UnicodeEncodeError as exc:
                        raise StepInputError("script is not valid Unicode text") from exc
                    proc = await self._run([str(script)], cwd, env)
        except (StepExecutionError, StepInputError) as exc:
            return self.finish(result, StepStatus.FAILED, error=str(exc))
        except ProcessStartError as exc:
            message = str(exc)
            if exc.reason == ProcessStartError.NOT_FOUND:
                message = f"shell executable {exc.executable!r} not found; set V2_SHELL_EXECUTABLE"
            return self.finish(result, StepStatus.FAILED, error=message)
        ok, error, metadata = process_outcome(proc)
        if ok:
            self.context.set_step_output(
                self.step_id,
                {"stdout": proc.stdout, "stderr": proc.stderr, "exit_code": proc.exit_code},
            )
        status = StepStatus.SUCCESS if ok else StepStatus.FAILED
        return self.finish(result, status, output=proc.stdout, error=error, **metadata)

    async def _run(self, args: list[str], cwd: str | None, env: dict[str, str]) -> ProcessResult:
        resources = self.context.resources
        return await run_process(
            [resources.shell_executable, *args],
            cwd=cwd,
            env=env,
            max_output_bytes=resources.max_output_bytes,
            kill_grace_seconds=resources.kill_grace_seconds,
        )
