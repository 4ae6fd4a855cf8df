"""Issue 12 item 9: start-up and configuration errors are one clear line each; with
V2_LOG_FORMAT=json every line the process writes is a JSON object, uvicorn's included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import ROOT, live_server


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"V2_CONNECTIONS": "{not json"}, "error: V2_CONNECTIONS: is not valid JSON"),
        ({"V2_PORT": "eighty"}, "error: V2_PORT: Input should be a valid integer"),
        ({"V2_DATABASE_URL": "not a url"}, "error: V2_DATABASE_URL: is not a database URL"),
        (
            {"V2_DATABASE_URL": "mysql+asyncmy://root@db/x"},
            "error: V2_DATABASE_URL: the driver of 'mysql+asyncmy' is not installed",
        ),
        (
            {"V2_CONNECTIONS": '{"sales": "mssql+aioodbc://u:pw@h/d?driver=No+Such+Driver"}'},
            "error: V2_CONNECTIONS.sales: ODBC driver 'No Such Driver' is not registered with "
            "unixODBC (installed: ",
        ),
    ],
)
def test_a_bad_configuration_is_one_line(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2
    assert done.stderr.splitlines() == [done.stderr.strip()], done.stderr
    assert done.stderr.startswith(expected), done.stderr
    assert "Traceback" not in done.stderr


def test_json_logs_cover_every_line(tmp_path: Path) -> None:
    with live_server(tmp_path, V2_LOG_FORMAT="json") as server:
        assert httpx.get(f"{server.base_url}/health").status_code == 200
    lines = [line for line in server.log().splitlines() if line.strip()]

    entries = [json.loads(line) for line in lines]  # every line parses
    assert {"uvicorn.error", "uvicorn.access"} <= {e["logger"] for e in entries}
    assert any(e["logger"] == "uvicorn.access" and "/health" in e["message"] for e in entries)
