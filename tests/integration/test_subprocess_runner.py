"""The shared subprocess runner, with real processes."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from pathlib import Path

import pytest

from app.steps.subprocess_runner import (
    PIPE_DRAIN_GRACE_SECONDS,
    ProcessResult,
    ProcessStartError,
    run_process,
)
from tests.support.processes import (
    STUBBORN_COUNT,
    STUBBORN_TREE,
    group_members,
    read_pids,
    running_in_group,
    wait_until,
)

SH = "/bin/sh"
ENV = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"}
MiB = 1024 * 1024


# -- helpers (independent of the runner's own /proc code) --------------------------------------


async def run(argv: list[str], **kwargs: object) -> ProcessResult:
    options: dict[str, object] = {
        "cwd": None,
        "env": ENV,
        "max_output_bytes": MiB,
        "kill_grace_seconds": 1.0,
    }
    options.update(kwargs)
    async with asyncio.timeout(60):  # a deadlock fails the test instead of hanging it
        return await run_process(argv, **options)  # type: ignore[arg-type]


# -- output -------------------------------------------------------------------------------------
async def test_drains_stdout_and_stderr_concurrently_and_caps_each() -> None:
    # 5 MiB to stderr *first*, then 5 MiB to stdout: a runner reading stdout to its end
    # before touching stderr would deadlock on the full stderr pipe.
    code = textwrap.dedent("""
        import sys
        for stream, ch in ((sys.stderr, b"e"), (sys.stdout, b"o")):
            for _ in range(80):
                stream.buffer.write(ch * 65536)
            stream.buffer.flush()
    """)
    result = await run([sys.executable, "-c", code], max_output_bytes=MiB)
    assert result.exit_code == 0
    assert result.stdout == "o" * MiB
    assert result.stderr == "e" * MiB
    assert result.stdout_truncated and result.stderr_truncated


async def test_interleaved_big_output_under_the_cap_is_complete() -> None:
    code = textwrap.dedent("""
        import sys
        for i in range(100):
            sys.stdout.buffer.write(b"%05d" % i * 8000); sys.stdout.buffer.flush()
            sys.stderr.buffer.write(b"E" * 40000); sys.stderr.buffer.flush()
    """)
    result = await run([sys.executable, "-c", code], max_output_bytes=4_000_000)
    assert result.stdout == "".join(f"{i:05d}" * 8000 for i in range(100))
    assert result.stderr == "E" * 4_000_000
    assert not result.stdout_truncated and not result.stderr_truncated


async def test_output_exactly_at_the_cap_is_not_truncated() -> None:
    result = await run([SH, "-c", "printf 0123456789"], max_output_bytes=10)
    assert (result.stdout, result.stdout_truncated) == ("0123456789", False)
    result = await run([SH, "-c", "printf 0123456789x"], max_output_bytes=10)
    assert (result.stdout, result.stdout_truncated) == ("0123456789", True)


async def test_invalid_utf8_is_replaced_not_fatal() -> None:
    result = await run([SH, "-c", r"printf 'ok \377\376 caf\303\251'; printf '\377' >&2"])
    assert result.stdout == "ok \ufffd\ufffd café"
    assert result.stderr == "\ufffd"


# -- exit codes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("code", [0, 1, 3, 255])
async def test_exit_code_is_reported(code: int) -> None:
    result = await run([SH, "-c", f"exit {code}"])
    assert result.exit_code == code


async def test_death_by_signal_is_a_negative_exit_code() -> None:
    result = await run([SH, "-c", "kill -KILL $$"])
    assert result.exit_code == -9


# -- starting -----------------------------------------------------------------------------------
async def test_missing_executable_is_a_start_error(tmp_path: Path) -> None:
    with pytest.raises(ProcessStartError) as info:
        await run([str(tmp_path / "no-such-program"), "x"])
    assert info.value.reason == ProcessStartError.NOT_FOUND
    assert "not found" in str(info.value)


async def test_unknown_command_name_is_a_start_error() -> None:
    with pytest.raises(ProcessStartError) as info:
        await run(["jsv2-no-such-command-anywhere"])
    assert info.value.reason == ProcessStartError.NOT_FOUND
    assert "jsv2-no-such-command-anywhere" in str(info.value)


async def test_non_executable_file_is_a_start_error(tmp_path: Path) -> None:
    program = tmp_path / "not-executable"
    program.write_text("#!/bin/sh\necho hi\n")
    program.chmod(0o644)
    if os.geteuid() == 0 and os.access(program, os.X_OK):
        pytest.skip("root may execute anything here")
    with pytest.raises(ProcessStartError) as info:
        await run([str(program)])
    assert info.value.reason == ProcessStartError.PERMISSION_DENIED


@pytest.mark.parametrize("kind", ["missing", "file"])
async def test_bad_working_directory_is_a_start_error(tmp_path: Path, kind: str) -> None:
    cwd = tmp_path / "nowhere"
    if kind == "file":
        cwd.write_text("")
    with pytest.raises(ProcessStartError) as info:
        await run([SH, "-c", "pwd"], cwd=str(cwd))
    assert info.value.reason == ProcessStartError.BAD_WORKING_DIRECTORY
    assert str(cwd) in str(info.value)


async def test_child_has_its_own_session_and_devnull_stdin() -> None:
    code = (
        "import os; print(os.getpid(), os.getpgid(0), os.getsid(0)); "
        "print(os.readlink('/proc/self/fd/0'))"
    )
    result = await run([sys.executable, "-c", code])
    ids, stdin = result.stdout.splitlines()
    pid, pgid, sid = map(int, ids.split())
    assert pid == pgid == sid == result.pid
    assert pgid != os.getpgid(0)
    assert stdin == "/dev/null"


async def test_environment_is_exactly_the_one_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("V2_SECRET_TEST", "hunter2")
    result = await run(["/usr/bin/env"], env={"ONLY": "this"})
    assert result.stdout == "ONLY=this\n"


async def test_working_directory_is_used(tmp_path: Path) -> None:
    expected = str(tmp_path.resolve())  # noqa: ASYNC240 - test setup, not the code under test
    result = await run([SH, "-c", "pwd -P"], cwd=str(tmp_path))
    assert result.stdout.strip() == expected


# -- stopping -----------------------------------------------------------------------------------


async def test_cancel_kills_the_whole_group_escalating_to_sigkill(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    grace = 0.3
    task = asyncio.create_task(
        run_process(
            [SH, "-c", STUBBORN_TREE],
            cwd=None,
            env={**ENV, "PIDS": str(pids_file)},
            max_output_bytes=MiB,
            kill_grace_seconds=grace,
        ),
        name="stubborn",
    )
    await wait_until(lambda: len(read_pids(pids_file)) == STUBBORN_COUNT, "the tree to start")
    pids = read_pids(pids_file)
    pgid = pids[0]
    assert all(running_in_group(pid, pgid) for pid in pids)

    loop = asyncio.get_running_loop()
    cancelled_at = loop.time()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    took = loop.time() - cancelled_at
    # Nothing of the group is left the moment the runner gives control back.
    assert [pid for pid in pids if running_in_group(pid, pgid)] == []
    assert group_members(pgid) == []
    assert grace <= took < grace + 5  # waited the grace for SIGTERM, then SIGKILL


async def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1):
            await run_process(
                [SH, "-c", STUBBORN_TREE],
                cwd=None,
                env={**ENV, "PIDS": str(pids_file)},
                max_output_bytes=MiB,
                kill_grace_seconds=0.2,
            )
    pids = read_pids(pids_file)
    assert len(pids) == STUBBORN_COUNT
    assert group_members(pids[0]) == []


async def test_second_cancel_skips_the_grace(tmp_path: Path) -> None:
    terms = tmp_path / "terms"
    pids_file = tmp_path / "pids"
    # The shell notes SIGTERM and carries on; only SIGKILL can end it.
    script = textwrap.dedent(f"""
        trap 'echo term >> "{terms}"' TERM
        echo $$ > "{pids_file}"
        while :; do sleep 300 & wait $!; done
    """)
    task = asyncio.create_task(
        run_process(
            [SH, "-c", script], cwd=None, env=ENV, max_output_bytes=MiB, kill_grace_seconds=60.0
        ),
        name="stubborn-shell",
    )
    await wait_until(lambda: len(read_pids(pids_file)) == 1, "the script to start")
    pgid = read_pids(pids_file)[0]
    task.cancel()
    await wait_until(terms.exists, "SIGTERM to arrive")
    assert not task.done()  # within its 60 s grace
    loop = asyncio.get_running_loop()
    started = loop.time()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert loop.time() - started < 10
    assert group_members(pgid) == []


async def test_leftover_holding_stdout_is_stopped_after_normal_exit(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    script = textwrap.dedent(f"""
        echo $$ > "{pids_file}"
        (trap '' TERM; exec sleep 300) &
        echo $! >> "{pids_file}"
        echo done
    """)
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await run([SH, "-c", script], kill_grace_seconds=0.2)
    took = loop.time() - started
    assert (result.exit_code, result.stdout) == (0, "done\n")
    assert result.stopped_leftovers
    pgid, leftover = read_pids(pids_file)
    assert not running_in_group(leftover, pgid)
    assert group_members(pgid) == []
    assert took < PIPE_DRAIN_GRACE_SECONDS + 0.2 + 5


async def test_leftover_with_closed_pipes_is_stopped_after_normal_exit(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    script = f'sleep 300 >/dev/null 2>&1 & echo $! > "{pids_file}"; echo $$ >> "{pids_file}"'
    result = await run([SH, "-c", script])
    assert result.exit_code == 0 and result.stopped_leftovers
    leftover, pgid = read_pids(pids_file)
    assert not running_in_group(leftover, pgid)


async def test_clean_exit_reports_no_leftovers() -> None:
    result = await run([SH, "-c", "sleep 0 & wait; echo fine"])
    assert (result.stdout, result.stopped_leftovers) == ("fine\n", False)
