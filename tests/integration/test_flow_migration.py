"""Revision ``flow`` keeps older rows readable: an execution written at revision 0002 (one
step row per attempt and step, no attempt summaries) reads after the upgrade with its
attempts rebuilt from its step rows, and new step runs of it are stored beside the old ones."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from app.domain import JobStatus, StepExecutionResult, StepStatus
from app.persistence import SqlExecutionStore, upgrade_to_head
from app.persistence.database import create_engine

ROOT = Path(__file__).resolve().parents[2]
ALEMBIC = [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini")]
T0 = datetime(2026, 11, 30, 2, 30, tzinfo=UTC)


def upgrade_cli(url: str, revision: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "V2_DATABASE_URL"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [*ALEMBIC, "-x", f"url={url}", "upgrade", revision],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


async def test_an_execution_written_before_flow_reads_with_its_attempts(empty_db_url: str) -> None:
    upgrade_cli(empty_db_url, "0002")
    engine = create_engine(empty_db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO job_executions_v2 (execution_id, job_id, job_name, status, "
                    "timezone, start_time, end_time, duration_seconds, error_message, "
                    "retry_count, metadata_json, created_at, trigger, attempt, updated_at, "
                    "owner) VALUES ('old', 'j', 'J', 'success', 'UTC', :t, :t, 0, NULL, 1, "
                    "'{\"trigger\": \"now\"}', :t, 'now', 0, :t, 'old-node')"
                ),
                {"t": T0},
            )
            for attempt, status in ((0, "failed"), (1, "success")):
                await conn.execute(
                    text(
                        "INSERT INTO step_executions_v2 (step_execution_id, execution_id, "
                        "step_id, step_name, step_type, status, start_time, end_time, "
                        "duration_seconds, output_text, error_message, metadata_json, "
                        "created_at, attempt, start_order, updated_at) VALUES (:sid, 'old', "
                        "'load', 'load', 'shell', :status, :t, :t, 0, :out, NULL, '{}', :t, "
                        ":attempt, 0, :t)"
                    ),
                    {
                        "sid": f"s{attempt}",
                        "status": status,
                        "t": T0,
                        "attempt": attempt,
                        "out": f"try {attempt}",
                    },
                )
    finally:
        await engine.dispose()

    await upgrade_to_head(empty_db_url)
    store = SqlExecutionStore(empty_db_url, owner="old-node")  # writes are fenced on the owner
    await store.open()
    try:
        old = await store.get_execution("old")
        assert old is not None and old.status is JobStatus.SUCCESS
        assert [(a.attempt, a.status, a.path) for a in old.attempts] == [
            (0, JobStatus.FAILED, ["load"]),
            (1, JobStatus.SUCCESS, ["load"]),
        ]
        assert [s.output for s in old.attempts[0].steps] == ["try 0"]
        assert [(s.step_id, s.output) for s in old.steps] == [("load", "try 1")]
        # A second run of the same step in attempt 1 gets a row of its own (run 1).
        again = StepExecutionResult(
            "load",
            "load",
            "shell",
            StepStatus.SUCCESS,
            start_time=T0,
            end_time=T0,
            output="try 1 again",
            metadata={"attempt": 1, "run": 1},
        )
        await store.record_step("old", again, 1)
        reread = await store.get_execution("old")
        assert reread is not None
        assert [s.output for s in reread.steps] == ["try 1", "try 1 again"]
    finally:
        await store.close()
