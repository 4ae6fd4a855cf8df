"""The subprocess runner shared by the process-running steps (``shell`` and ``powershell``).

``run_process`` starts one program (an argv list, never a shell string) and supervises it:

* The child gets its own session and process group (``start_new_session=True``) and
  ``/dev/null`` as stdin. Everything it starts stays in that group unless it deliberately
  leaves it (``setsid``), so the group is what we stop.
* stdout and stderr are drained concurrently by the event loop. Each keeps at most
  ``max_output_bytes``; the rest is read and discarded (so the child never blocks on a full
  pipe) and the stream is marked truncated. Output is decoded as UTF-8 with replacement.
* Cancellation (the engine's ``asyncio.timeout`` around a step, or a user cancel) stops the
  whole group: SIGTERM, up to ``kill_grace_seconds`` for it to go, then SIGKILL; the child is
  always reaped before ``CancelledError`` is re-raised. That cleanup runs in its own task that
  is never cancelled, so a second cancel cannot skip it; a second cancel only skips the
  grace and sends SIGKILL at once.
* Normal exit: the step ends when its main process exits. Pipes still held open by
  processes it left behind get a short grace (``PIPE_DRAIN_GRACE_SECONDS``), then whatever is
  still alive in the group is stopped the same way (SIGTERM, grace, SIGKILL): nothing started
  by a step outlives it. Scripts that want a background child's work must ``wait`` for it.

Why ``loop.subprocess_exec`` and not ``asyncio.create_subprocess_exec``: in Python 3.11
``Process.wait()`` only returns once every pipe is closed, so a grandchild that keeps stdout
open would make "wait for the main process" hang; and ``StreamReader`` adds nothing to a
byte-capped capture. The protocol below learns of the exit (``process_exited``, called after
the child watcher reaped the child) and of each pipe's end separately. It is the same
machinery ``create_subprocess_exec`` is built on.

Known limit: a process that calls ``setsid`` leaves the group and is not stopped (a cgroup
would be needed for that); if it keeps a pipe open, the capture stops waiting for it after
the grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

from app.domain.errors import FieldError
from app.steps.live_output import current_splitter
from app.steps.paths import PathNotAllowedError, confine

log = logging.getLogger(__name__)

#: After the main process exited, how long pipes held open by leftovers may keep streaming
#: before the leftovers are stopped; after that, how long to wait for the pipes to close.
PIPE_DRAIN_GRACE_SECONDS = 1.0
#: How long to wait for a SIGKILLed group to disappear before giving up (and logging).
KILL_WAIT_SECONDS = 10.0
_POLL_START = 0.005
_POLL_MAX = 0.1
_STDOUT, _STDERR = 1, 2


class ProcessStartError(Exception):
    """The program could not be started (missing executable, bad working directory, ...)."""

    NOT_FOUND = "not_found"
    PERMISSION_DENIED = "permission_denied"
    BAD_WORKING_DIRECTORY = "bad_working_directory"
    OTHER = "other"

    def __init__(self, message: str, *, reason: str, executable: str) -> None:
        self.reason = reason
        self.executable = executable
        super().__init__(message)


@dataclass(frozen=True)
class ProcessResult:
    """What a finished process left behind."""

    stdout: str
    stderr: str
    #: Exit status; negative ``-N`` when the process was ended by signal ``N``.
    exit_code: int
    stdout_truncated: bool
    stderr_truncated: bool
    pid: int
    #: True when processes left behind in the group after the main one exited were stopped.
    stopped_leftovers: bool = False


async def run_process(
    argv: list[str],
    *,
    cwd: str | None,
    env: Mapping[str, str] | None,
    max_output_bytes: int,
    kill_grace_seconds: float,
) -> ProcessResult:
    """Run ``argv`` to completion in its own process group and capture its output.

    ``env`` is the child's complete environment (``None`` inherits the server's, which the
    steps never do). Raises ``ProcessStartError`` when the program cannot be started.
    On cancellation the whole process group is stopped and reaped, then ``CancelledError``
    is re-raised.
    """
    if not argv:
        raise ValueError("argv must not be empty")
    supervisor = _Supervisor(
        argv,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        max_output_bytes=max(0, max_output_bytes),
        kill_grace_seconds=max(0.0, kill_grace_seconds),
    )
    task = asyncio.create_task(supervisor.run(), name=f"subprocess:{os.path.basename(argv[0])}")
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        supervisor.request_stop()
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                supervisor.request_kill()  # cancelled again: no more grace
            except BaseException:  # its own failure matters less than our cancellation
                break
        if not task.cancelled():
            task.exception()  # mark retrieved; we were cancelled, that is what we report
        raise


class _Capture(asyncio.SubprocessProtocol):
    """Collects both pipes (byte-capped) and notes the exit; pokes ``notify`` on changes."""

    def __init__(self, max_bytes: int, notify: Callable[[], None]) -> None:
        self._max = max_bytes
        self._notify = notify
        self.buffers = {_STDOUT: bytearray(), _STDERR: bytearray()}
        self.truncated = {_STDOUT: False, _STDERR: False}
        self.open_pipes = {_STDOUT, _STDERR}
        self.exited = False
        self.lines = current_splitter(max_bytes)  # live output, when the engine listens

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if self.lines is not None:
            self.lines.feed(fd, data)
        buffer = self.buffers[fd]
        room = self._max - len(buffer)
        if room > 0:
            buffer += data[:room]
        if len(data) > room:
            self.truncated[fd] = True

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if self.lines is not None:
            self.lines.close(fd)
        self.open_pipes.discard(fd)
        self._notify()

    def process_exited(self) -> None:
        self.exited = True
        self._notify()

    @property
    def pipes_closed(self) -> bool:
        return not self.open_pipes

    def text(self, fd: int) -> str:
        return bytes(self.buffers[fd]).decode("utf-8", errors="replace")


class _Supervisor:
    """One process's life: start, wait, stop the group, reap. Never cancelled from outside."""

    def __init__(
        self,
        argv: list[str],
        *,
        cwd: str | None,
        env: dict[str, str] | None,
        max_output_bytes: int,
        kill_grace_seconds: float,
    ) -> None:
        self._argv = argv
        self._cwd = cwd
        self._env = env
        self._max = max_output_bytes
        self._grace = kill_grace_seconds
        self._changed = asyncio.Event()
        self._stop_requested = False
        self._kill_requested = False
        self._pgid: int | None = None

    def request_stop(self) -> None:
        self._stop_requested = True
        self._changed.set()

    def request_kill(self) -> None:
        self._stop_requested = self._kill_requested = True
        if self._pgid is not None:
            _signal_group(self._pgid, signal.SIGKILL)
        self._changed.set()

    async def run(self) -> ProcessResult:
        if self._stop_requested:  # cancelled before it even started: start nothing
            raise asyncio.CancelledError
        loop = asyncio.get_running_loop()
        executable = _resolve_executable(self._argv[0])
        capture = _Capture(self._max, self._changed.set)
        try:
            transport, _ = await loop.subprocess_exec(
                lambda: capture,
                executable,
                *self._argv[1:],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self._cwd,
                env=self._env,
                start_new_session=True,
            )
        except (OSError, ValueError) as exc:
            raise _start_error(exc, self._argv[0], self._cwd) from exc
        pid = transport.get_pid()
        self._pgid = pid
        stopped_leftovers = False
        try:
            if self._kill_requested:
                _signal_group(pid, signal.SIGKILL)
            await self._wait_for(lambda: capture.exited or self._stop_requested)
            if not capture.exited:
                await self._stop_group(pid)  # timeout or cancel while running
            else:
                # Normal exit: let output still in flight arrive, then stop leftovers.
                await self._wait_for(
                    lambda: capture.pipes_closed or self._stop_requested,
                    timeout=PIPE_DRAIN_GRACE_SECONDS,
                )
                stopped_leftovers = await self._stop_group(pid)
            # Always reap the child (bounded only for one that even SIGKILL cannot end).
            if not await self._wait_for(lambda: capture.exited, timeout=KILL_WAIT_SECONDS):
                log.error("process %d did not exit after SIGKILL; not waiting for it", pid)
            if not await self._wait_for(
                lambda: capture.pipes_closed, timeout=PIPE_DRAIN_GRACE_SECONDS
            ):
                log.warning(
                    "process %d: output pipes still held open by a process outside its "
                    "group; capture ends without them",
                    pid,
                )
        except BaseException:  # event loop shutdown or a bug: leave nothing running
            _signal_group(pid, signal.SIGKILL)
            raise
        finally:
            try:
                transport.close()
            except OSError as exc:  # close() kills a child still running; that may be refused
                log.error("closing process %d: %s", pid, exc)
        exit_code = transport.get_returncode()
        return ProcessResult(
            stdout=capture.text(_STDOUT),
            stderr=capture.text(_STDERR),
            exit_code=-signal.SIGKILL if exit_code is None else exit_code,
            stdout_truncated=capture.truncated[_STDOUT],
            stderr_truncated=capture.truncated[_STDERR],
            pid=pid,
            stopped_leftovers=stopped_leftovers,
        )

    async def _stop_group(self, pgid: int) -> bool:
        """SIGTERM the group, wait up to the grace, SIGKILL; False when it was already gone."""
        if not group_alive(pgid):
            return False
        if not self._kill_requested:
            _signal_group(pgid, signal.SIGTERM)
            if await self._wait_for(
                lambda: self._kill_requested or not group_alive(pgid),
                timeout=self._grace,
                poll=True,
            ) and not group_alive(pgid):
                return True
        _signal_group(pgid, signal.SIGKILL)
        if not await self._wait_for(
            lambda: not group_alive(pgid), timeout=KILL_WAIT_SECONDS, poll=True
        ):
            log.error("process group %d survived SIGKILL for %ss", pgid, KILL_WAIT_SECONDS)
        return True

    async def _wait_for(
        self, predicate: Callable[[], bool], *, timeout: float | None = None, poll: bool = False
    ) -> bool:
        """Wait until ``predicate()`` holds (True) or ``timeout`` passes (False).

        Re-checked whenever the process, a pipe or a stop request changes, and, with
        ``poll``, at short growing intervals too (nothing announces a grandchild's death).
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        interval = _POLL_START
        while True:
            if predicate():
                return True
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            wait = remaining
            if poll:
                wait = interval if wait is None else min(wait, interval)
                interval = min(interval * 2, _POLL_MAX)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._changed.wait()


def group_alive(pgid: int) -> bool:
    """True while process group ``pgid`` has a member that is not a zombie."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg also succeeds for zombies (exited, not yet reaped by their new parent).
    return bool(live_group_members(pgid)) if os.path.isdir("/proc/self") else True


def live_group_members(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that are not zombies (Linux ``/proc``)."""
    members: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ..." - comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        log.warning("not permitted to send %s to process group %d", sig.name, pgid)


def _resolve_executable(name: str) -> str:
    """A name without a slash is looked up on the *server's* PATH (not the child's)."""
    if os.sep in name:
        return name
    found = shutil.which(name)
    if found is None:
        raise ProcessStartError(
            f"executable {name!r} not found on PATH",
            reason=ProcessStartError.NOT_FOUND,
            executable=name,
        )
    return found


def _start_error(exc: OSError | ValueError, executable: str, cwd: str | None) -> ProcessStartError:
    def error(message: str, reason: str) -> ProcessStartError:
        return ProcessStartError(message, reason=reason, executable=executable)

    if isinstance(exc, ValueError):  # e.g. "embedded null byte"
        return error(f"cannot start {executable!r}: {exc}", ProcessStartError.OTHER)
    about_cwd = cwd is not None and exc.filename == cwd
    if about_cwd or isinstance(exc, NotADirectoryError):
        return error(
            f"working directory {cwd!r} is not usable: {exc.strerror}",
            ProcessStartError.BAD_WORKING_DIRECTORY,
        )
    if isinstance(exc, FileNotFoundError):
        return error(f"executable {executable!r} not found", ProcessStartError.NOT_FOUND)
    if isinstance(exc, PermissionError):
        return error(
            f"executable {executable!r} cannot be run: permission denied",
            ProcessStartError.PERMISSION_DENIED,
        )
    if exc.errno == errno.E2BIG:
        return error(
            f"cannot start {executable!r}: arguments and environment are too large "
            "(each environment value must stay under 128 KiB)",
            ProcessStartError.OTHER,
        )
    return error(f"cannot start {executable!r}: {exc.strerror or exc}", ProcessStartError.OTHER)


# -- environment and files shared by the process steps ------------------------------------------

#: Largest single environment string Linux accepts (MAX_ARG_STRLEN), name=value included.
MAX_ENV_STRING_BYTES = 128 * 1024 - 1


def minimal_environment() -> dict[str, str]:
    """The base environment of every step process: PATH, HOME and LANG only.

    The server's own environment is never passed on: it may hold secrets (``V2_CONNECTIONS``
    carries database passwords). Steps add their parameters on top of this.
    """
    return {
        "PATH": os.environ.get("PATH") or os.defpath,
        "HOME": os.environ.get("HOME") or "/",
        "LANG": os.environ.get("LANG") or "C.UTF-8",
    }


def json_default(value: Any) -> Any:
    """``json.dumps`` fallback for the non-JSON values step outputs may hold."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"a {type(value).__name__} value cannot be passed to a script")


def to_json(value: Any, *, ascii_only: bool) -> str:
    """JSON text of ``value``; ``ValueError`` for NaN/Infinity or values JSON cannot hold."""
    try:
        return json.dumps(
            value,
            ensure_ascii=ascii_only,
            allow_nan=False,
            default=json_default,
            separators=(",", ":"),
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from exc


@contextlib.contextmanager
def private_workspace(prefix: str) -> Iterator[Path]:
    """A fresh directory only this user can read (0700), removed with all it holds."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_private_file(directory: Path, name: str, text: str, *, bom: bool = False) -> Path:
    """Write ``text`` (UTF-8) to a new file ``directory/name`` with mode 0600."""
    path = directory / name
    data = text.encode("utf-8")  # UnicodeEncodeError for lone surrogates: caller reports it
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        if bom:
            fh.write(b"\xef\xbb\xbf")
        fh.write(data)
    return path


# -- helpers for the steps that run processes --------------------------------------------------

#: How much of stderr goes into a failed step's error message / its metadata.
ERROR_TAIL_CHARS = 2000
STDERR_METADATA_CHARS = 64 * 1024
#: Names a parameter may have (environment variables, PowerShell parameters).
PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class StepInputError(ValueError):
    """A problem with a step's input found when it runs; the step ends FAILED with it."""


def check_working_directory(path: str | None, roots: Sequence[str] | None = None) -> str | None:
    """``path`` made absolute (real, when confined to ``roots``: see ``app.steps.paths``),
    or ``StepInputError`` when it is outside the roots or not an existing directory."""
    if path is None:
        return None
    try:
        full = confine(path, roots, field="working_directory")
    except PathNotAllowedError as exc:
        raise StepInputError(str(exc)) from None
    if not os.path.isdir(full):
        raise StepInputError(f"working_directory {path!r} does not exist or is not a directory")
    return full


def resolve_script_path(path: str, cwd: str | None, roots: Sequence[str] | None = None) -> str:
    """Absolute path of ``script_path`` (real, when confined to ``roots``); a relative one is
    taken from the working directory (confined: else from the first root)."""
    try:
        full = confine(path, roots, field="script_path", base=cwd)
    except PathNotAllowedError as exc:
        raise StepInputError(str(exc)) from None
    if not os.path.isfile(full):
        raise StepInputError(f"script_path {path!r} does not exist or is not a file")
    return full


def process_outcome(proc: ProcessResult) -> tuple[bool, str | None, dict[str, Any]]:
    """(succeeded, error message, metadata) of a finished step process."""
    metadata: dict[str, Any] = {
        "exit_code": proc.exit_code,
        "stdout_truncated": proc.stdout_truncated,
        "stderr_truncated": proc.stderr_truncated,
        "stderr": proc.stderr[-STDERR_METADATA_CHARS:],
    }
    if proc.stopped_leftovers:
        metadata["stopped_leftover_processes"] = True
    if proc.exit_code == 0:
        return True, None, metadata
    if proc.exit_code < 0:
        try:
            what = f"killed by signal {signal.Signals(-proc.exit_code).name}"
        except ValueError:
            what = f"killed by signal {-proc.exit_code}"
    else:
        what = f"exit code {proc.exit_code}"
    tail = proc.stderr.strip()[-ERROR_TAIL_CHARS:]
    return False, f"{what}: {tail}" if tail else what, metadata


def process_step_config_errors(
    step_config: dict[str, Any], prefix: str, *, nul_free_values: bool
) -> list[FieldError]:
    """Rules the JSON schema cannot say, shared by the ``shell`` and ``powershell`` steps."""

    def where(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    errors: list[FieldError] = []
    if step_config.get("script") is not None and step_config.get("script_path") is not None:
        errors.append(
            FieldError(where("script_path"), "give either script or script_path, not both")
        )
    for name in ("script_path", "working_directory"):
        value = step_config.get(name)
        if isinstance(value, str) and "\x00" in value:
            errors.append(FieldError(where(name), "must not contain NUL characters"))
    parameters = step_config.get("parameters") or {}
    for name, value in parameters.items() if isinstance(parameters, dict) else ():
        field = where(f"parameters.{name}")
        if not isinstance(name, str) or not PARAMETER_NAME.fullmatch(name):
            errors.append(
                FieldError(
                    field,
                    "parameter names must be letters, digits and underscores, "
                    "not starting with a digit",
                )
            )
        elif nul_free_values and isinstance(value, str) and "\x00" in value:
            errors.append(FieldError(field, "must not contain NUL characters"))
    return errors
