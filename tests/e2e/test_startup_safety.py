"""``python -m app`` checks the address before it listens: without API keys it serves
loopback only (with a warning) and refuses any other address, saying what to set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import ROOT, free_port, live_server


@pytest.mark.parametrize("how", ["env", "flag"])
def test_refuses_a_public_address_without_keys(tmp_path: Path, how: str) -> None:
    env = {
        **os.environ,
        "V2_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        "V2_PORT": str(free_port()),
    }
    env.pop("V2_API_KEYS", None)
    env.pop("V2_API_KEYS_FILE", None)
    args = ["--host", "0.0.0.0"] if how == "flag" else []
    if how == "env":
        env["V2_HOST"] = "0.0.0.0"

    finished = subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert finished.returncode == 2, finished.stdout + finished.stderr
    assert "refusing to listen on '0.0.0.0' without API keys" in finished.stderr
    assert "Set V2_API_KEYS" in finished.stderr


def test_open_mode_serves_loopback_and_warns(tmp_path: Path) -> None:
    with live_server(tmp_path) as running:
        response = httpx.get(f"{running.base_url}/api/v2/steps/types", timeout=10)

        assert response.status_code == 200
        assert "no API keys configured" in running.log()
