"""WAL checkpoints of the SQLite store run off the commit path (``WalCheckpointer``): the
store's connections never checkpoint on commit, the WAL stays bounded under a steady stream
of commits, a reader holding an old snapshot only delays the reset, closing leaves an empty
WAL, and a checkpoint that fails is logged without stopping anything."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import pytest
from sqlalchemy import text

from app.domain import JobExecutionResult, JobStatus
from app.domain.timeutil import utc_now
from app.persistence import SqlExecutionStore, upgrade_to_head
from app.persistence.checkpoint import WalCheckpointer

PAGE = 4096


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # as the store's connections
    return conn


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "wal.db"
    conn = _connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    conn.close()
    yield path


def _wal_bytes(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


def _wal_pages(path: Path) -> int:
    return _wal_bytes(path) // PAGE


def _commit_many(
    conn: sqlite3.Connection, n: int, writing: Callable[[], AbstractContextManager[None]]
) -> None:
    for i in range(n):
        with writing():
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (body) VALUES (?)", ("x" * 3000 + str(i),))
            conn.execute("COMMIT")


def _wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_wal_stays_bounded_under_steady_commits(db: Path) -> None:
    writer = _connect(db)
    checkpointer = WalCheckpointer(lambda: _connect(db), every_commits=10, limit_pages=100)
    checkpointer.start()
    try:
        _commit_many(writer, 3000, checkpointer.writing)  # ~2 pages a commit: 6,000 pages
        # the file is as large as the WAL ever was: 100 pages and what was committed (back
        # to back here) while a PASSIVE checkpoint ran
        assert _wal_pages(db) <= 1000
    finally:
        checkpointer.close()
        writer.close()
    assert checkpointer.runs["PASSIVE"] >= 3000 // 10 // 2


def test_without_checkpoints_the_wal_grows(db: Path) -> None:
    """What the test above guards against: nothing else checkpoints these connections."""
    writer = _connect(db)
    try:
        _commit_many(writer, 600, nullcontext)
        assert _wal_pages(db) >= 600
    finally:
        writer.close()


def test_a_reader_holding_a_snapshot_delays_the_reset_until_it_is_done(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer, reader, probe = _connect(db), _connect(db), _connect(db)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()  # holds its snapshot
    checkpointer = WalCheckpointer(
        lambda: _connect(db), every_commits=5, limit_pages=40, busy_seconds=0.05
    )
    checkpointer.start()
    try:
        with caplog.at_level(logging.WARNING, "app.persistence.checkpoint"):
            _commit_many(writer, 100, checkpointer.writing)
            _wait_until(lambda: "could not be reset" in caplog.text)
        reader.execute("COMMIT")
        _commit_many(writer, 60, checkpointer.writing)  # the next try resets the WAL
        _wait_until(lambda: checkpointer.runs["RESTART"] >= 2)
        _commit_many(writer, 1, checkpointer.writing)
        # frames now in the WAL (a PASSIVE checkpoint reports them): few, from its start
        _, frames, _ = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert frames < 40 + 5 * 3
    finally:
        checkpointer.close()
        for conn in (writer, reader, probe):
            conn.close()


def test_close_leaves_an_empty_wal(db: Path) -> None:
    other = _connect(db)  # an open connection: SQLite would not clean up on its own
    writer = _connect(db)
    checkpointer = WalCheckpointer(lambda: _connect(db))
    checkpointer.start()
    try:
        _commit_many(writer, 20, checkpointer.writing)
        assert _wal_pages(db) > 0
        checkpointer.close()
        assert Path(f"{db}-wal").exists() and _wal_bytes(db) == 0
        assert other.execute("SELECT count(*) FROM t").fetchone() == (20,)
    finally:
        writer.close()
        other.close()


def test_a_failing_checkpoint_is_logged_and_tried_again(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0
    lock = threading.Lock()

    def connect() -> sqlite3.Connection:
        nonlocal calls
        with lock:
            calls += 1
            if calls == 1:
                raise sqlite3.OperationalError("unable to open database file")
        return _connect(db)

    writer = _connect(db)
    checkpointer = WalCheckpointer(connect, every_commits=1)
    checkpointer.start()
    try:
        with caplog.at_level(logging.WARNING, "app.persistence.checkpoint"):
            _commit_many(writer, 1, checkpointer.writing)
            _wait_until(lambda: "unable to open database file" in caplog.text)
            _commit_many(writer, 1, checkpointer.writing)
            _wait_until(lambda: checkpointer.runs["PASSIVE"] >= 1)
    finally:
        checkpointer.close()
        writer.close()
    assert checkpointer.runs["TRUNCATE"] == 1


async def test_the_store_checkpoints_off_its_commits_and_empties_the_wal_on_close(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    url = f"sqlite+aiosqlite:///{path}"
    await upgrade_to_head(url)
    other = _connect(path)
    store = SqlExecutionStore(url)
    await store.open()
    try:
        async with store.engine.connect() as conn:
            assert await conn.scalar(text("PRAGMA wal_autocheckpoint")) == 0
        for n in range(5):
            await store.record_job(
                JobExecutionResult(
                    execution_id=f"e{n}",
                    job_id="j",
                    job_name="j",
                    status=JobStatus.SUCCESS,
                    timezone="UTC",
                    start_time=utc_now(),
                )
            )
        assert _wal_pages(path) > 0
    finally:
        await store.close()
    assert _wal_bytes(path) == 0  # (SQLite removes it only when its last connection closes)
    assert other.execute("SELECT count(*) FROM job_executions_v2").fetchone() == (5,)
    other.close()
