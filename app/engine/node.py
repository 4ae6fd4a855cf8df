"""ClusterNode: this process as a node of the cluster.

It registers in the store, heartbeats every ``heartbeat_seconds`` on the database's clock
(the heartbeat is the lease of everything the node holds, renewed in one statement), and
deregisters on a clean stop. A node whose heartbeat is older than ``node_timeout_seconds``
is dead, and another node settles its work (``app.engine.recovery``).

The lease is also checked here, on this process's own clock: it is valid while the last
heartbeat that succeeded was sent less than ``node_timeout - heartbeat`` ago. A node that
cannot heartbeat (database unreachable) past that stops starting work and says so on
``/ready``; when a heartbeat finds the node deregistered, another node has taken its work
over: the node abandons what it still runs (its late writes are fenced off anyway) and
registers again.

Notifications of the other nodes (PostgreSQL LISTEN/NOTIFY) wake the scheduler, the
recurring loop and the cancel check at once; polling stays the fallback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from app.domain.cluster import NodeInfo
from app.engine.ports import ClusterStore
from app.sqlpool import is_transient

log = logging.getLogger("app.engine.node")

#: How often a node with live executions looks for cancels asked through other replicas
#: (LISTEN/NOTIFY usually tells it at once).
CANCEL_POLL_SECONDS = 0.5


class ClusterNode:
    def __init__(
        self,
        store: ClusterStore,
        node_id: str,
        *,
        version: str,
        heartbeat_seconds: float,
        node_timeout_seconds: float,
        on_lost: Callable[[], Awaitable[None]],
        on_cancel: Callable[[str, str | None], Awaitable[None]],
        on_message: Callable[[str], None],
        recover: Callable[[], Awaitable[Any]],
        has_live_work: Callable[[], bool],
    ) -> None:
        if heartbeat_seconds <= 0 or node_timeout_seconds <= heartbeat_seconds:
            raise ValueError("the node timeout must be longer than the heartbeat interval")
        self.store = store
        self.node_id = node_id
        self.version = version
        self.heartbeat_seconds = heartbeat_seconds
        self.node_timeout_seconds = node_timeout_seconds
        self._on_lost = on_lost
        self._on_cancel = on_cancel
        self._on_message = on_message
        self._recover = recover
        self._has_live_work = has_live_work
        self._stop = asyncio.Event()
        self._cancel_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_ok: float | None = None  # monotonic time a successful heartbeat was sent
        self._exclusive = False  # the store's database has no other node (read at register)
        self._healthy_since: float | None = None
        self.heartbeat_error: str | None = None
        self.takeovers = 0  # times this node found itself declared dead

    # -- lifecycle --------------------------------------------------------------------------
    async def register(self) -> None:
        """Register (``SingleNodeError`` on a SQLite file another process serves)."""
        sent = time.monotonic()
        await self.store.register_node(
            NodeInfo(
                node_id=self.node_id,
                host=socket.gethostname(),
                pid=os.getpid(),
                version=self.version,
            )
        )
        self._exclusive = self.store.exclusive
        self._last_ok = self._healthy_since = sent

    def start(self) -> list[asyncio.Task[None]]:
        """Start the heartbeat, listen and cancel-check loops; their tasks."""
        self._stop.clear()
        self._tasks = [
            asyncio.create_task(self._heartbeat_forever(), name="node-heartbeat"),
            asyncio.create_task(self._listen_forever(), name="node-listen"),
            asyncio.create_task(self._cancels_forever(), name="node-cancels"),
        ]
        return list(self._tasks)

    async def stop(self) -> None:
        """Stop the loops and deregister (best effort: an unreachable database only delays
        the others noticing, by the node timeout)."""
        self._stop.set()
        self._cancel_wake.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
        try:
            await self.store.deregister_node(self.node_id)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("node %s could not deregister (%s)", self.node_id, type(exc).__name__)

    async def mark_stopping(self) -> None:
        try:
            await self.store.set_node_state(self.node_id, "stopping")
        except Exception as exc:
            if not is_transient(exc):
                raise

    # -- the lease --------------------------------------------------------------------------
    @property
    def lease_valid(self) -> bool:
        """The other nodes cannot have declared this one dead yet (on a database only
        this process can serve, there are no others once it registered)."""
        if self._last_ok is None:
            return False
        if self._exclusive:
            return True
        margin = self.node_timeout_seconds - self.heartbeat_seconds
        return time.monotonic() - self._last_ok < margin

    def status(self) -> dict[str, Any]:
        age = None if self._last_ok is None else round(time.monotonic() - self._last_ok, 3)
        return {
            "node_id": self.node_id,
            "lease_valid": self.lease_valid,
            "last_heartbeat_age_seconds": age,
            "heartbeat_seconds": self.heartbeat_seconds,
            "node_timeout_seconds": self.node_timeout_seconds,
            "heartbeat_error": self.heartbeat_error,
        }

    # -- loops ------------------------------------------------------------------------------
    async def _heartbeat_forever(self) -> None:
        while not self._stop.is_set():
            await self._beat()
            if self._stop.is_set():
                return
            if self._may_recover():
                try:
                    await self._recover()
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    log.warning("recovery pass failed (%s); next time", type(exc).__name__)
            await self._sleep(self.heartbeat_seconds)

    async def _beat(self) -> None:
        sent = time.monotonic()
        try:
            registered = await self.store.heartbeat(self.node_id)
        except Exception as exc:
            if not is_transient(exc):
                raise
            if self.heartbeat_error is None:
                log.warning(
                    "node %s cannot heartbeat: the database is unreachable (%s)",
                    self.node_id,
                    type(exc).__name__,
                )
            self.heartbeat_error = f"database unreachable: {type(exc).__name__}"
            self._healthy_since = None
            return
        if self.heartbeat_error is not None:
            log.warning("node %s heartbeats again: the database is back", self.node_id)
            self.heartbeat_error = None
        if not registered:
            self.takeovers += 1
            log.error(
                "node %s was declared dead by another node (no heartbeat for %.0fs): its "
                "work was taken over; abandoning what it still runs (late writes are "
                "discarded) and registering again",
                self.node_id,
                self.node_timeout_seconds,
            )
            self._last_ok = None
            await self._on_lost()
            await self.register()
            return
        self._last_ok = sent
        if self._healthy_since is None:
            self._healthy_since = sent

    def _may_recover(self) -> bool:
        """After an outage every node's heartbeat is old: give the others two heartbeats to
        come back before declaring any of them dead. (The engine's start runs the first
        pass itself.)"""
        if self._healthy_since is None or not self.lease_valid:
            return False
        return time.monotonic() - self._healthy_since >= 2 * self.heartbeat_seconds

    async def _listen_forever(self) -> None:
        await self.store.listen(self._message, self._stop)

    def _message(self, payload: str) -> None:
        if payload in ("cancel", "reconnected"):
            self._cancel_wake.set()
        self._on_message(payload)

    async def _cancels_forever(self) -> None:
        while not self._stop.is_set():
            if self._has_live_work():
                try:
                    for execution_id, by in await self.store.cancel_requests(self.node_id):
                        await self._on_cancel(execution_id, by)
                except Exception as exc:
                    if not is_transient(exc):
                        raise
            self._cancel_wake.clear()
            try:
                async with asyncio.timeout(CANCEL_POLL_SECONDS):
                    await self._cancel_wake.wait()
            except TimeoutError:
                pass

    async def _sleep(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._stop.wait()
        except TimeoutError:
            pass
