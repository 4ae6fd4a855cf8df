"""``jobscheduler-v2 import-sql-agent`` as a real process against a real uvicorn: a dry run,
the real import (the jobs then stored on the server), a conflict, and a bad file."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.api.keys import key_entry, new_api_key
from tests.e2e.server import ROOT, LiveServer, live_server
from tests.support import msdb

ADMIN_KEY = new_api_key()


@pytest.fixture(scope="module")
def agent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("import-server")
    # The fixture's T-SQL is for SQL Server: there is none here (a closed port), the jobs
    # are stored, not run.
    connections = {
        "warehouse": "mssql+aioodbc://etl:pw@127.0.0.1:1/DW?driver=FreeTDS",
        "ops": "mssql+aioodbc://etl:pw@127.0.0.1:1/Ops?driver=FreeTDS",
    }
    with live_server(
        workdir,
        V2_API_KEYS=json.dumps([key_entry(ADMIN_KEY, "importer", ["admin"])]),
        V2_CONNECTIONS=json.dumps(connections),
    ) as running:
        running.api_key = ADMIN_KEY
        yield running


@pytest.fixture
def export_file(tmp_path: Path) -> Path:
    """The export as sqlcmd writes a FOR JSON result: SQL Server sends it as rows of 2033
    characters, one line each."""
    text = json.dumps(msdb.export())
    path = tmp_path / "msdb.json"
    path.write_text("\n".join(text[i : i + 2033] for i in range(0, len(text), 2033)))
    return path


def cli(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"JOBSCHEDULER_URL": server.base_url, "JOBSCHEDULER_API_KEY": ADMIN_KEY, "PATH": ""}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def stored_ids(server: LiveServer) -> list[str]:
    response = httpx.get(f"{server.base_url}/api/v2/jobs", headers=server.headers)
    assert response.status_code == 200, response.text
    return [j["job_id"] for j in response.json()["items"]]


OPTIONS = (
    "--timezone",
    "Europe/London",
    "--connection",
    "SQLPROD01/DW=warehouse",
    "--connection",
    "Ops=ops",
    "--job-id-prefix",
    "agent-",
)


def test_dry_run_then_import_then_a_conflict(agent_server: LiveServer, export_file: Path) -> None:
    dry = cli(agent_server, "import-sql-agent", str(export_file), *OPTIONS, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would store: 4 created, 0 replaced, 0 skipped; 1 not imported" in dry.stdout
    assert "agent-nightly-etl" in dry.stdout
    assert (
        "job_not_imported       'SSIS package' step 1 (Run package) [sysjobsteps[8].subsystem]"
        in dry.stdout
    )
    assert "schedule 'When the agent starts'" in dry.stdout
    assert stored_ids(agent_server) == []

    done = cli(agent_server, "--json", "import-sql-agent", str(export_file), *OPTIONS)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["dry_run"], data["created"], data["not_imported"]) == (False, 4, 1)
    assert stored_ids(agent_server) == [
        "agent-archive-logs",
        "agent-intraday-feed",
        "agent-month-end-close",
        "agent-nightly-etl",
    ]

    again = cli(agent_server, "import-sql-agent", str(export_file), *OPTIONS)
    assert again.returncode == 4
    assert "409" in again.stderr and "export.sysjobs[0].name" in again.stderr

    skipped = cli(
        agent_server, "import-sql-agent", str(export_file), *OPTIONS, "--on-conflict", "skip"
    )
    assert skipped.returncode == 0, skipped.stderr
    assert "stored: 0 created, 0 replaced, 4 skipped" in skipped.stdout


def test_bad_files_and_options_are_refused(agent_server: LiveServer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    refused = cli(agent_server, "import-sql-agent", str(bad), "--timezone", "UTC")
    assert refused.returncode == 2 and "is not JSON" in refused.stderr

    broken = tmp_path / "broken.json"
    export = msdb.export()
    export["sysschedules"][0]["freq_type"] = 3
    broken.write_text(json.dumps(export))
    answer = cli(agent_server, "import-sql-agent", str(broken), *OPTIONS)
    assert answer.returncode == 4
    assert "export.sysschedules[0].freq_type: unknown freq_type 3" in answer.stderr

    usage = cli(
        agent_server, "import-sql-agent", str(broken), "--timezone", "UTC", "--connection", "DW"
    )
    assert usage.returncode == 2 and "DATABASE=CONNECTION" in usage.stderr
