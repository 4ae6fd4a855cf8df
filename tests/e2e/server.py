"""Run the service as a real process: ``python -m app`` (uvicorn inside, after the bind
check) on a free loopback port, waited for by polling /health with a deadline."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
STARTUP_DEADLINE_SECONDS = 30.0
STOP_DEADLINE_SECONDS = 15.0


@dataclass
class LiveServer:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    #: A key (all scopes) when the server runs with V2_API_KEYS; None in open mode.
    api_key: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def live_server(workdir: Path, **env_overrides: str) -> Iterator[LiveServer]:
    """The service on 127.0.0.1:<free port> with its database in ``workdir``."""
    port = free_port()
    env = {
        **os.environ,
        "V2_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'jobscheduler.db'}",
        "V2_POLL_INTERVAL_SECONDS": "0.05",
        "V2_SHUTDOWN_GRACE_SECONDS": "2",
        "V2_KILL_GRACE_SECONDS": "0.5",
        "V2_LOG_LEVEL": "INFO",
        "V2_AUTO_MIGRATE": "true",
        **env_overrides,
    }
    log_path = workdir / "server.log"
    command = [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_until_healthy(server)
        yield server
    finally:
        _stop(process)


def _wait_until_healthy(server: LiveServer) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited at startup:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not become healthy:\n{server.log()}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
