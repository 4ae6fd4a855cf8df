"""Group commit for the execution history.

Every execution writes its job row and step rows several times (PENDING, RUNNING, each step
starting and ending, the end). Written one transaction each, those writes cost more than the
job's own work. Here they are queued and written by one task, many at a time, in one
transaction per batch:

* Rows are keyed (job row per execution, step row per execution/attempt/step): a newer state
  of a row that is still queued replaces the older one, keeping its first ``created_at``.
* A batch writes every pending row first, then job rows, then step rows (a step row needs its
  job row), then marks scheduled runs started.
* A caller that needs its write durable awaits the future ``submit`` returns; it resolves
  once the batch holding the row has committed, or carries the error if it could not be
  written. A failed batch is retried row by row, so one bad row fails only its own callers.
* Rows nobody waits for linger up to ``linger_seconds`` before they are written, unless a
  durable write, a barrier or ``close()`` comes first: a short job's RUNNING rows are then
  replaced by its final ones in the queue and never written at all.
* ``barrier()`` waits until everything submitted before it has been written (or has failed):
  the store calls it before every read and every other write, so nothing it does ever sees
  the history older than what was submitted before.
* ``close()`` writes what is queued and stops the task.
* A database that cannot be reached (a restart, a failover, a dropped connection) is a
  transient fault: the batch stays queued and is tried again with back-off until it is
  written, so running executions go on and their records land once the database is back
  (on ``close()``, for at most ``close_wait_seconds``; what is still unwritten then is left
  to the recovery of the next node, which finds this node dead).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.sqlpool import is_transient

log = logging.getLogger("app.persistence.writer")

#: Kinds of row, in the order a batch writes them.
KINDS = ("pending", "job", "step", "started", "outbox")


@dataclass
class QueuedRow:
    kind: str
    params: dict[str, Any]
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    key: Hashable = None


WriteRows = Callable[[Sequence[QueuedRow]], Awaitable[None]]


class GroupCommitWriter:
    def __init__(
        self,
        write_rows: WriteRows,
        *,
        linger_seconds: float = 0.05,
        close_wait_seconds: float = 5.0,
    ) -> None:
        """``write_rows`` writes the given rows in one transaction (all or nothing)."""
        self._write_rows = write_rows
        self._linger = linger_seconds
        self._close_wait = close_wait_seconds
        self._outage_started: float | None = None
        self._outage_delay = 0.0
        self._urgent: asyncio.Event | None = None
        self._queued: dict[Hashable, QueuedRow] = {}
        self._queued_barriers: list[asyncio.Future[None]] = []
        self._inflight_barriers: list[asyncio.Future[None]] | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.batches = 0
        self.rows_written = 0

    # -- producers -----------------------------------------------------------------------
    def submit(
        self, key: Hashable, kind: str, params: dict[str, Any], *, wait: bool
    ) -> asyncio.Future[None] | None:
        """Queue a row write; with ``wait`` a future that resolves when it is committed."""
        if self._closing:
            raise RuntimeError("the history writer is closed")
        row = self._queued.get(key)
        if row is None:
            row = QueuedRow(kind, params, key=key)
            self._queued[key] = row
        else:
            created_at = row.params.get("created_at")
            row.params = params
            if created_at is not None and "created_at" in params:
                params["created_at"] = created_at
        future: asyncio.Future[None] | None = None
        self._ensure_running()
        assert self._wake is not None and self._urgent is not None
        if wait:
            future = asyncio.get_running_loop().create_future()
            row.waiters.append(future)
            self._urgent.set()
        self._wake.set()
        return future

    async def barrier(self) -> None:
        """Return once everything submitted so far has been written (or has failed)."""
        if self._queued:
            waiters = self._queued_barriers
        elif self._inflight_barriers is not None:
            waiters = self._inflight_barriers
        else:
            return
        future = asyncio.get_running_loop().create_future()
        waiters.append(future)
        if self._urgent is not None:
            self._urgent.set()
        await asyncio.shield(future)

    @property
    def idle(self) -> bool:
        return not self._queued and self._inflight_barriers is None

    async def close(self) -> None:
        """Write what is queued, then stop."""
        self._closing = True
        task = self._task
        if task is None:
            return
        assert self._wake is not None and self._urgent is not None
        self._urgent.set()
        self._wake.set()
        try:
            await asyncio.shield(task)
        finally:
            self._task = None

    # -- the writer task -----------------------------------------------------------------
    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._urgent = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="history-writer")

    async def _run(self) -> None:
        assert self._wake is not None and self._urgent is not None
        while True:
            if not self._queued:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._urgent.is_set() and self._linger > 0:
                try:
                    async with asyncio.timeout(self._linger):
                        await self._urgent.wait()
                except TimeoutError:
                    pass
            self._urgent.clear()
            rows = sorted(self._queued.values(), key=lambda r: KINDS.index(r.kind))
            barriers = self._queued_barriers
            self._queued, self._queued_barriers = {}, []
            self._inflight_barriers = barriers
            written = False
            try:
                written = await self._write(rows)
            finally:
                self._inflight_barriers = None
                if written:
                    for future in barriers:
                        if not future.done():
                            future.set_result(None)
                else:  # the database is unreachable: keep everything for the next try
                    self._requeue(rows, barriers)
            if not written:
                await self._back_off()

    def _requeue(self, rows: list[QueuedRow], barriers: list[asyncio.Future[None]]) -> None:
        """Put a batch that could not be written back in front of what came since (a newer
        state of the same row wins, keeping the waiters of both)."""
        newer = self._queued
        self._queued = {}
        for row in rows:
            self._queued[self._key_of(row)] = row
        for key, row in newer.items():
            older = self._queued.get(key)
            if older is not None:
                row.waiters[:0] = older.waiters
            self._queued[key] = row
        self._queued_barriers = barriers + self._queued_barriers

    def _key_of(self, row: QueuedRow) -> Hashable:
        return row.key

    async def _back_off(self) -> None:
        """Wait before trying an unreachable database again (doubling up to 5 s)."""
        assert self._urgent is not None
        self._outage_delay = min(max(self._outage_delay * 2, 0.1), 5.0)
        try:
            async with asyncio.timeout(self._outage_delay):
                while True:  # only close() may cut the wait short
                    await self._urgent.wait()
                    self._urgent.clear()
                    if self._closing:
                        return
        except TimeoutError:
            pass

    async def _write(self, rows: list[QueuedRow]) -> bool:
        """Write ``rows``; False (nothing settled) when the database is unreachable and the
        rows should be kept for later."""
        try:
            await self._write_rows(rows)
        except Exception as exc:
            if is_transient(exc) and not self._give_up():
                if self._outage_started is None:
                    self._outage_started = asyncio.get_running_loop().time()
                    log.warning(
                        "the database is unreachable (%s): keeping %d history rows until it "
                        "is back",
                        describe(exc),
                        len(rows),
                    )
                return False
            if len(rows) == 1:
                _settle(rows, exc)
                return True
            log.warning(
                "writing a batch of %d history rows failed (%s); retrying them one by one",
                len(rows),
                describe(exc),
            )
            for row in rows:
                try:
                    await self._write_rows([row])
                except Exception as row_exc:
                    _settle([row], row_exc)
                else:
                    _settle([row], None)
            return True
        if self._outage_started is not None:
            log.warning("the database is back: the history rows kept meanwhile are written")
            self._outage_started = None
            self._outage_delay = 0.0
        self.batches += 1
        self.rows_written += len(rows)
        _settle(rows, None)
        return True

    def _give_up(self) -> bool:
        """On close, an unreachable database is waited for at most ``close_wait_seconds``."""
        if not self._closing or self._outage_started is None:
            return False
        waited = asyncio.get_running_loop().time() - self._outage_started
        return waited > self._close_wait


def describe(error: Exception) -> str:
    """The error's type and first line (a database error's later lines list the statement's
    parameters: row contents never go to the log)."""
    first = str(error).split("\n", 1)[0]
    return f"{type(error).__name__}: {first[:300]}"


def _settle(rows: Sequence[QueuedRow], error: Exception | None) -> None:
    for row in rows:
        if error is not None and not row.waiters:
            log.error(
                "a %s history row of execution %s could not be written: %s",
                row.kind,
                row.params.get("execution_id") or row.params.get("b_execution_id"),
                describe(error),
            )
        for future in row.waiters:
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
