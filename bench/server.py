"""Run an ASGI app under uvicorn as a separate process on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT
from bench.loadgen import HttpConnection

STARTUP_DEADLINE_SECONDS = 60.0
STOP_DEADLINE_SECONDS = 30.0


@dataclass
class Server:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def uvicorn_server(
    target: str, env: dict[str, str], log_path: Path, health_path: str = "/ready"
) -> AsyncIterator[Server]:
    """``uvicorn <target> --factory`` with ``env`` added to this process's environment,
    log level WARNING, waited for until ``health_path`` answers 200."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        target,
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("V2_")}
    full_env = {**inherited, "V2_LOG_LEVEL": "WARNING", **env}
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: ASYNC220 (returns at once; waits are threaded)
            command, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
    server = Server("127.0.0.1", port, process, log_path)
    try:
        await _wait_ready(server, health_path)
        yield server
    finally:
        await asyncio.to_thread(_stop, process)


async def _wait_ready(server: Server, path: str) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.log_path.name}: the server exited:\n{server.log_tail()}")
        conn = HttpConnection(server.host, server.port)
        try:
            status, _ = await conn.request("GET", path)
            if status == 200:
                return
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            await conn.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.log_path.name}: not ready in time:\n{server.log_tail()}")
        await asyncio.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
