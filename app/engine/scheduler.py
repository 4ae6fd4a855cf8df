"""Scheduler: moves runs from the store's scheduled work to their timezone queue when due.

Nothing about pending runs is kept in memory: the store is asked for the earliest due time
and for due runs, so a million pending runs cost no RAM here. A run is claimed in the store
before it is dispatched, so it fires once even with several replicas.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from datetime import datetime

from app.domain.timeutil import utc_now
from app.engine.ports import ExecutionStore, ScheduledRun

log = logging.getLogger("app.engine.scheduler")


class DueLoop(ABC):
    """Handles what is due, then sleeps until the next due time, the poll interval (work
    another replica added) or ``notify()``, whichever comes first."""

    def __init__(
        self,
        *,
        poll_interval_seconds: float,
        batch_size: int,
        clock: Callable[[], datetime],
    ) -> None:
        self._poll = poll_interval_seconds
        self._batch = batch_size
        self._clock = clock
        self._wake = asyncio.Event()
        self._stopping = False

    def notify(self) -> None:
        """Something new may be due: look again now."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the current pass (a store call is never interrupted) and return."""
        self._stopping = True
        self._wake.set()

    @abstractmethod
    async def run_due(self) -> int:
        """Handle up to one batch of due work; return how much was due."""

    @abstractmethod
    async def next_due_time(self) -> datetime | None:
        """When the earliest pending work is due."""

    def reset(self) -> None:
        """Make a stopped loop runnable again (before starting ``run_forever``)."""
        self._stopping = False

    async def run_forever(self) -> None:
        while not self._stopping:
            if await self.run_due() >= self._batch or self._stopping:
                continue  # more may be due right now
            delay = self._poll
            upcoming = await self.next_due_time()
            if upcoming is not None:
                delay = min(delay, max(0.0, (upcoming - self._clock()).total_seconds()))
            self._wake.clear()
            if self._stopping:  # stop() may have come while we asked the store
                break
            if delay > 0:
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass


class Scheduler(DueLoop):
    def __init__(
        self,
        store: ExecutionStore,
        dispatch: Callable[[ScheduledRun], Awaitable[None]],
        *,
        owner: str,
        poll_interval_seconds: float = 1.0,
        batch_size: int = 100,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__(
            poll_interval_seconds=poll_interval_seconds, batch_size=batch_size, clock=clock
        )
        self._store = store
        self._dispatch = dispatch
        self._owner = owner

    async def next_due_time(self) -> datetime | None:
        return await self._store.next_scheduled_time()

    async def run_due(self) -> int:
        """Claim (in one batch) and dispatch the runs due now; return how many."""
        runs = await self._store.claim_due_runs(self._clock(), self._batch, self._owner)
        for run in runs:
            await self._dispatch(run)
        return len(runs)
