"""Replicas on one PostgreSQL, as real processes: kill -9, SIGSTOP past the lease, cancel
through a node that does not own the run, recurring fires over three nodes, and processes
that must not start (port taken, SQLite file in use)."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster.conftest import (
    NODE_TIMEOUT,
    Cluster,
    execution,
    get_json,
    kill,
    node_id_of,
    query,
    wait_for,
)
from tests.e2e.server import ROOT, LiveServer, free_port

#: Runs long the first time (and leaves its pid in MARK); a retry finds MARK and ends at once.
ONCE_THEN_QUICK = (
    'if [ -e "$MARK" ]; then echo "second run"; exit 0; fi; '
    'echo $$ > "$MARK"; echo "first run"; sleep "$HOLD"'
)


def long_job(job_id: str, mark: Path, *, max_retries: int = 1, hold: int = 30) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "job_name": job_id,
        "max_retries": max_retries,
        "steps": [
            {
                "step_id": "work",
                "type": "shell",
                "script": ONCE_THEN_QUICK,
                "parameters": {"MARK": str(mark), "HOLD": str(hold)},
                "timeout": 120,
            }
        ],
    }


def submit(server: LiveServer, job: dict[str, Any]) -> str:
    response = httpx.post(
        f"{server.base_url}/api/v2/jobs/execute", params={"wait": "false"}, json=job, timeout=10
    )
    assert response.status_code == 202, response.text
    execution_id: str = response.json()["execution_id"]
    return execution_id


def started(mark: Path) -> int:
    """The pid the first run wrote (0 until it did)."""
    text = mark.read_text().strip() if mark.exists() else ""
    return int(text) if text else 0


@contextlib.contextmanager
def reaping(mark: Path) -> Iterator[None]:
    """A killed node leaves its step's process group behind: end it after the test."""
    try:
        yield
    finally:
        pid = started(mark)
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_node_s_running_job_is_interrupted_and_retried_on_another(
    cluster: Cluster, tmp_path: Path
) -> None:
    first, second = cluster.start(), cluster.start()
    mark, ledger = tmp_path / "mark", tmp_path / "ledger"
    job = long_job("failover", mark)
    job["steps"].insert(
        0,
        {
            "step_id": "before",
            "type": "shell",
            "script": 'echo done >> "$LEDGER"',
            "parameters": {"LEDGER": str(ledger)},
        },
    )
    with reaping(mark):
        execution_id = submit(first, job)
        wait_for("the step to start on the first node", lambda: started(mark))
        dead = node_id_of(first)
        killed_at = time.monotonic()
        kill(first)

        def settled() -> dict[str, Any] | None:
            record = execution(second, execution_id)
            return record if record["status"] == "failed" else None

        record = wait_for("the survivor to settle the run", settled, timeout=NODE_TIMEOUT + 10)
        assert record["error_message"].startswith(f"interrupted on node {dead}")
        retry_id = record["error_message"].rsplit(" ", 1)[-1]
        retry = wait_for(
            "the retry to succeed",
            lambda: (r := execution(second, retry_id))["status"] == "success" and r,
            timeout=NODE_TIMEOUT + 10,
        )
        assert time.monotonic() - killed_at < NODE_TIMEOUT + 10
        assert retry["metadata"]["retry_of"] == execution_id
        # The step was in flight on the dead node: its re-run is flagged, never silent.
        assert retry["metadata"]["possible_duplicate_of"] == execution_id
        assert retry["metadata"]["possible_duplicate_steps"] == ["work"]
        # The step that had finished is not run again (its record is reused); only the one
        # in flight is.
        assert ledger.read_text() == "done\n"
        assert [s["step_id"] for s in retry["steps"]] == ["before", "work"]
        assert retry["steps"][0]["metadata"]["cached"] is True
        assert retry["steps"][1]["output"].strip() == "second run"
        assert [s["status"] for s in record["steps"]] == ["success", "failed"]
        # The dead node is gone from the cluster; the survivor is listed with its id.
        nodes = get_json(second, "/api/v2/cluster")["nodes"]
        assert [n["node_id"] for n in nodes] == [node_id_of(second)]


def test_cancel_through_a_node_that_does_not_own_the_run(cluster: Cluster, tmp_path: Path) -> None:
    owner, other = cluster.start(), cluster.start()
    mark = tmp_path / "mark"
    with reaping(mark):
        execution_id = submit(owner, long_job("remote-cancel", mark, max_retries=0))
        pid = wait_for("the step to start", lambda: started(mark))
        response = httpx.post(
            f"{other.base_url}/api/v2/executions/{execution_id}/cancel", timeout=15
        )
        assert response.status_code == 200, response.text
        record = wait_for(
            "the owner to record the cancel",
            lambda: (r := execution(other, execution_id))["status"] == "cancelled" and r,
            timeout=5,
        )
        assert record["steps"][0]["status"] == "cancelled"
        wait_for("the step's process group to be gone", lambda: not alive(pid), timeout=5)


def test_a_paused_node_s_late_writes_are_refused(cluster: Cluster, tmp_path: Path) -> None:
    paused, survivor = cluster.start(), cluster.start()
    mark = tmp_path / "mark"
    with reaping(mark):
        execution_id = submit(paused, long_job("stale", mark, hold=3))
        wait_for("the step to start", lambda: started(mark))
        stale_node = node_id_of(paused)
        kill(paused, signal.SIGSTOP)
        try:
            record = wait_for(
                "the survivor to take the run over",
                lambda: (r := execution(survivor, execution_id))["status"] == "failed" and r,
                timeout=NODE_TIMEOUT + 10,
            )
            retry_id = record["error_message"].rsplit(" ", 1)[-1]
            wait_for(
                "the retry to succeed",
                lambda: execution(survivor, retry_id)["status"] == "success",
                timeout=NODE_TIMEOUT + 10,
            )
        finally:
            kill(paused, signal.SIGCONT)
        # Resumed, the stale node's step ends after its 3 s sleep and it tries to record
        # success; it then learns from its heartbeat that it lost its work, and registers
        # again. Neither changes the record the survivor settled.
        wait_for(
            "the paused node to learn it was declared dead",
            lambda: "was declared dead by another node" in paused.log(),
            timeout=15,
        )
        wait_for(
            "the paused node to be back in the cluster",
            lambda: any(
                n["node_id"] == stale_node and n["alive"]
                for n in get_json(survivor, "/api/v2/cluster")["nodes"]
            ),
            timeout=10,
        )
        after = execution(survivor, execution_id)
        assert after["status"] == "failed"
        assert after["error_message"] == record["error_message"]
        assert [s["status"] for s in after["steps"]] == ["failed"]
        assert (
            query(
                cluster.url,
                "SELECT count(*) AS n FROM job_executions_v2 WHERE job_id = 'stale'",
            )[0]["n"]
            == 2
        )  # the original and its one retry, nothing else


@pytest.mark.timeout(240)
def test_three_replicas_fire_every_recurring_time_once(cluster: Cluster) -> None:
    connections = f'{{"db": "{cluster.url}"}}'
    nodes = [cluster.start(V2_CONNECTIONS=connections) for _ in range(3)]
    for i in range(30):
        job = {
            "job_id": f"tick-{i:02d}",
            "job_name": f"tick {i}",
            "schedule_config": {"type": "interval", "every_seconds": 2},
            "steps": [
                {"step_id": "q", "type": "sql", "connection_name": "db", "query": "SELECT 1"}
            ],
        }
        response = httpx.post(f"{nodes[i % 3].base_url}/api/v2/jobs", json=job, timeout=10)
        assert response.status_code == 201, response.text

    def fired() -> bool:
        rows = query(
            cluster.url,
            "SELECT job_id, count(*) AS n FROM job_executions_v2 "
            "WHERE trigger = 'schedule' GROUP BY job_id",
        )
        return len(rows) == 30 and min(r["n"] for r in rows) >= 3

    wait_for("three fires of every job", fired, timeout=120, every=0.5)
    for i in range(30):  # through one node: disabling holds on every node at once
        response = httpx.post(f"{nodes[0].base_url}/api/v2/jobs/tick-{i:02d}/disable", timeout=10)
        assert response.status_code == 200, response.text
    duplicates = query(
        cluster.url,
        "SELECT job_id, scheduled_for, count(*) AS n FROM job_executions_v2 "
        "WHERE trigger = 'schedule' GROUP BY job_id, scheduled_for HAVING count(*) > 1",
    )
    assert duplicates == []
    rows = query(
        cluster.url,
        "SELECT job_id, scheduled_for, status FROM job_executions_v2 "
        "WHERE trigger = 'schedule' ORDER BY job_id, scheduled_for",
    )
    by_job: dict[str, list[Any]] = {}
    for row in rows:
        by_job.setdefault(row["job_id"], []).append(row["scheduled_for"])
    for job_id, fires in by_job.items():
        gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(fires)}
        assert gaps == {2.0}, f"{job_id} missed a fire: gaps {sorted(gaps)}"
    ran_on = query(
        cluster.url,
        "SELECT count(DISTINCT owner) AS n FROM job_executions_v2 WHERE trigger = 'schedule'",
    )[0]["n"]
    assert ran_on >= 2  # the work is spread, not pinned to one node


@pytest.mark.timeout(180)
def test_overlap_queue_runs_one_at_a_time_across_replicas(cluster: Cluster) -> None:
    """Fires every second of a job that takes longer than that, with overlap_policy queue,
    on two replicas: the runs wait for each other whichever node claimed them."""
    nodes = [cluster.start() for _ in range(2)]
    job = {
        "job_id": "serial",
        "job_name": "serial",
        "schedule_config": {
            "type": "interval",
            "every_seconds": 1,
            "overlap_policy": "queue",
        },
        "steps": [{"step_id": "work", "type": "shell", "script": "sleep 1.5"}],
    }
    response = httpx.post(f"{nodes[0].base_url}/api/v2/jobs", json=job, timeout=10)
    assert response.status_code == 201, response.text

    def finished_on_both() -> bool:
        rows = query(
            cluster.url,
            "SELECT owner FROM job_executions_v2 WHERE job_id = 'serial' AND status = 'success'",
        )
        return len(rows) >= 8 and len({r["owner"] for r in rows}) == 2

    wait_for("eight runs, on both nodes", finished_on_both, timeout=120, every=0.5)
    response = httpx.post(f"{nodes[1].base_url}/api/v2/jobs/serial/disable", timeout=10)
    assert response.status_code == 200, response.text
    for server in nodes:  # the runs still queued finish or are cancelled at a clean stop
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(30)
    runs = query(
        cluster.url,
        "SELECT execution_id, owner, start_time, end_time FROM job_executions_v2 "
        "WHERE job_id = 'serial' AND start_time IS NOT NULL AND status = 'success' "
        "ORDER BY start_time",
    )
    for before, after in itertools.pairwise(runs):
        assert before["end_time"] <= after["start_time"], (
            f"{before['execution_id']} on {before['owner']} and {after['execution_id']} on "
            f"{after['owner']} overlapped"
        )
    assert query(cluster.url, "SELECT * FROM job_serial_locks_v2") == []  # all given back


def _start_second(url: str, port: int, workdir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "V2_DATABASE_URL": url, "V2_AUTO_MIGRATE": "false"}
    return subprocess.run(
        [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_second_process_that_cannot_bind_touches_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    first = cluster.start()
    mark = tmp_path / "mark"
    with reaping(mark):
        execution_id = submit(first, long_job("busy", mark, max_retries=0))
        wait_for("the step to start", lambda: started(mark))
        wait_for(  # its RUNNING rows are written (they may linger a moment in a batch)
            "the running step on record",
            lambda: query(
                cluster.url,
                "SELECT 1 FROM step_executions_v2 WHERE execution_id = $1 AND status = 'running'",
                execution_id,
            ),
        )
        tables = {  # everything but the first node's heartbeat, which goes on
            "scheduler_nodes": "node_id, host, pid, state, started_at",
            "job_executions_v2": "*",
            "step_executions_v2": "*",
            "scheduled_runs_v2": "*",
        }
        snapshot = "SELECT {} FROM {} ORDER BY 1"
        before = {t: query(cluster.url, snapshot.format(c, t)) for t, c in tables.items()}
        port = int(first.base_url.rsplit(":", 1)[1])
        second = _start_second(cluster.url, port, tmp_path)
        assert second.returncode != 0
        assert f"127.0.0.1:{port}" in second.stderr
        after = {t: query(cluster.url, snapshot.format(c, t)) for t, c in tables.items()}
        assert after == before
        assert execution(first, execution_id)["status"] == "running"


def test_a_second_process_on_the_same_sqlite_file_is_refused(
    cluster: Cluster, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'single.db'}"
    first = cluster.start(V2_DATABASE_URL=url, V2_AUTO_MIGRATE="true")
    assert get_json(first, "/ready")["status"] == "ready"
    second = _start_second(url, free_port(), tmp_path)
    assert second.returncode != 0
    output = second.stderr + second.stdout
    assert str(tmp_path / "single.db") in output
    assert "PostgreSQL" in output
