"""A second client language: a TypeScript client generated from openapi/openapi.json with
openapi-typescript, called through openapi-fetch, type-checks under ``tsc --strict`` for a
minimal job (required fields only) and then creates, runs and reads a job against uvicorn.

openapi-typescript runs with ``--default-non-nullable false`` (README, "A TypeScript
client"): with its default, fields that have a default (a step's ``timeout``, ``parameters``,
``continue_on_failure``) would be required in request bodies (openapi-typescript#2489).
The npm packages come from ``clients/typescript/package-lock.json`` (``make install``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from app.api.keys import key_entry, new_api_key
from tests.e2e.server import ROOT, live_server

CLIENT = ROOT / "clients" / "typescript"
BIN = CLIENT / "node_modules" / ".bin"


def run(*command: str | Path, cwd: Path) -> str:
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{command[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_a_typescript_client_creates_runs_and_reads_a_job(tmp_path: Path) -> None:
    assert BIN.is_dir(), "npm packages missing: run `make install` (npm ci in clients/typescript)"
    work = tmp_path / "client"
    shutil.copytree(CLIENT, work, ignore=shutil.ignore_patterns("node_modules", "dist"))
    (work / "node_modules").symlink_to(CLIENT / "node_modules")
    run(
        BIN / "openapi-typescript",
        ROOT / "openapi" / "openapi.json",
        "-o",
        "src/schema.d.ts",
        "--default-non-nullable",
        "false",
        cwd=work,
    )
    run(BIN / "tsc", "-p", ".", cwd=work)  # tsconfig.json: "strict": true

    key = new_api_key()
    entries = json.dumps([key_entry(key, "node", ["admin"])])
    (tmp_path / "server").mkdir()
    with live_server(tmp_path / "server", V2_API_KEYS=entries) as server:
        out = run("node", work / "dist" / "main.js", server.base_url, key, cwd=work)

    result = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == "success"
    assert "hello from node" in json.dumps(result["output"])
