"""Process-group inspection for the subprocess tests, read straight from /proc
(independent of the runner's own code), and a condition wait with a deadline."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, pgrp) of ``pid``, or None when it no longer exists."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[2])


# A process tree whose every process ignores SIGTERM (``trap '' TERM`` is inherited across
# fork and exec), so only the escalation to SIGKILL can end it. Each process appends its pid
# to the file named by $PIDS.
STUBBORN_TREE = textwrap.dedent("""
    trap '' TERM
    echo $$ >> "$PIDS"
    for i in 1 2; do
        sh -c 'sleep 300 & echo $! >> "$PIDS"; echo $$ >> "$PIDS"; wait' &
    done
    echo started
    wait
""")
STUBBORN_COUNT = 5  # the script, two children, two grandchildren


def running(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def running_in_group(pid: int, pgid: int) -> bool:
    """``pid`` is alive (not a zombie) and still in process group ``pgid``."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X") and stat[1] == pgid


def group_members(pgid: int) -> list[int]:
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and running_in_group(int(p.name), pgid)
    ]


def read_pids(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().split()]


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
