"""Serial runs: one run at a time of a job whose runs must not overlap (overlap ``queue``,
``run_all`` catch-ups, a manual run that waits its turn), on whichever node they run.

In this process, an ``asyncio.Lock`` per job keeps its runs in arrival order. Across the
cluster, the store holds one lock row per job (``ClusterStore.acquire_serial``) naming the
execution that may run and its node; a row whose node is dead, or whose execution ended, is
stale and the next node to ask replaces it, so a killed node holds nothing for longer than
the node timeout. A node waits for the row with LISTEN/NOTIFY (``serial``) and a poll as the
fallback; a database that cannot be reached only makes it wait longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from app.engine.ports import ClusterStore, ExecutionStore
from app.sqlpool import is_transient

log = logging.getLogger("app.engine.admission")

#: How often a waiting serial run asks again when no notification came.
SERIAL_POLL_SECONDS = 0.5
#: Notification payload: a serial lock was released.
SERIAL_RELEASED = "serial"


class SerialRuns:
    """The per-job locks of serial runs, in this process and across the cluster."""

    def __init__(
        self,
        store: ExecutionStore,
        owner: str,
        *,
        node_timeout_seconds: float,
        poll_seconds: float = SERIAL_POLL_SECONDS,
    ) -> None:
        self._cluster = store if isinstance(store, ClusterStore) else None
        self._owner = owner
        self._node_timeout = node_timeout_seconds
        self._poll = poll_seconds
        self._local: dict[str, asyncio.Lock] = {}
        self._released = asyncio.Event()

    async def enter(self, job_id: str, execution_id: str) -> None:
        """Wait until ``execution_id`` is the one run of ``job_id`` allowed now. Cancelled
        while waiting, it holds nothing."""
        lock = self._local.setdefault(job_id, asyncio.Lock())
        await lock.acquire()
        if self._cluster is None:
            return
        try:
            await self._enter_cluster(self._cluster, job_id, execution_id)
        except BaseException:
            lock.release()
            raise

    def leave_local(self, job_id: str) -> None:
        """Let this process's next run of ``job_id`` go on (it then waits for the cluster
        lock, which ``leave`` gives back)."""
        lock = self._local.get(job_id)
        if lock is not None and lock.locked():
            lock.release()

    async def leave(self, job_id: str, execution_id: str) -> None:
        """Give back the cluster lock ``execution_id`` holds (if it is still this node's).
        When the database cannot be reached the row stays until the execution's end is
        recorded, which makes it stale."""
        if self._cluster is None:
            return
        try:
            await self._cluster.release_serial(job_id, execution_id, self._owner)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning(
                "serial lock of job %s (execution %s) not released now (%s); it lapses when "
                "the execution's end is recorded",
                job_id,
                execution_id,
                type(exc).__name__,
            )
        self.wake()

    def wake(self) -> None:
        """A lock may have been released (here, or on another node): ask again now."""
        released, self._released = self._released, asyncio.Event()
        released.set()

    async def _enter_cluster(self, store: ClusterStore, job_id: str, execution_id: str) -> None:
        waited = False
        while True:
            released = self._released
            try:
                if await store.acquire_serial(
                    job_id, execution_id, self._owner, self._node_timeout
                ):
                    if waited:
                        log.info(
                            "execution %s of job %s: its turn came (serial runs)",
                            execution_id,
                            job_id,
                        )
                    return
            except Exception as exc:
                if not is_transient(exc):
                    raise
            waited = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(released.wait(), timeout=self._poll)
