"""Optional sampling profiles (``python -m bench --profile``): py-spy attached to the server
process (B1) or to the benchmark process itself (B2, B5, B6) while a benchmark runs.

Writes ``bench/results/profiles/<name>.txt`` (the raw collapsed stacks) and
``<name>.summary.txt`` (inclusive and self time per function, idle threads dropped).
Profiling slows the measured code down: figures of a profiled run are marked as such.
py-spy must be installed (``pip install py-spy``) and allowed to attach (ptrace).
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from bench.common import RESULTS_DIR

PROFILE_DIR = RESULTS_DIR / "profiles"
RATE_HZ = 250
# Leaves where a thread waits: thread pools, selectors, and uvloop's C event loop (py-spy
# shows its epoll wait as the Python frame that entered it, Runner.run).
IDLE_LEAVES = (
    "Condition.wait",
    "_worker (concurrent",
    "select (selectors",
    "Queue.get",
    "poll (",
    "Runner.run (asyncio/runners.py",
    "_connection_worker_thread (aiosqlite/core.py:59)",
)
_enabled = False


def enable() -> None:
    global _enabled
    _enabled = True


def enabled() -> bool:
    return _enabled


def _py_spy() -> str | None:
    candidate = Path(sys.executable).with_name("py-spy")
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def sampling(name: str, pid: int | None = None) -> Iterator[Path | None]:
    """Sample ``pid`` (default: this process) until the block ends, when profiling is on."""
    if not _enabled:
        yield None
        return
    exe = _py_spy()
    if exe is None:
        print("[bench] --profile: py-spy not found; pip install py-spy", file=sys.stderr)
        yield None
        return
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    raw = PROFILE_DIR / f"{name}.txt"
    command = [exe, "record", "--pid", str(pid or os.getpid()), "--rate", str(RATE_HZ)]
    command += ["--format", "raw", "--output", str(raw), "--nonblocking"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield raw
    finally:
        process.send_signal(2)  # SIGINT: py-spy writes its output and exits
        try:
            _, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
        if raw.exists():
            (PROFILE_DIR / f"{name}.summary.txt").write_text(summarize(raw))
        else:
            print(
                f"[bench] py-spy wrote nothing for {name}: {err.decode()[-500:]}", file=sys.stderr
            )


def _short(frame: str) -> str:
    return re.sub(r" \(/[^()]*?/(site-packages|lib/python3\.\d+|main)/", " (", frame)


def summarize(raw: Path, top: int = 60) -> str:
    """Inclusive and self share of the active samples per function."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames or any(frames[-1].startswith(i) for i in IDLE_LEAVES):
            continue
        n = int(count)
        total += n
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    total = total or 1
    out = [
        f"{raw.name}: {total} busy samples at {RATE_HZ} Hz (waits dropped). SQLAlchemy runs",
        "its statements in greenlets: those frames appear as separate stacks rooted at",
        "Session.execute / greenlet_spawn rather than under the app/ frame that called them.",
        "",
        "inclusive, app/ only:",
    ]
    app = [(f, n) for f, n in inclusive.most_common() if "(app/" in f][:top]
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in app]
    out += ["", "inclusive, everything:"]
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    out += ["", "self:"]
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top // 2)]
    return "\n".join(out) + "\n"
