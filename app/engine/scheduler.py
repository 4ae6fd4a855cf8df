"""Scheduler: moves runs from the store's scheduled work to their timezone queue when due.

Nothing about pending runs is kept in memory: the store is asked for the earliest due time
and for due runs, so a million pending runs cost no RAM here. A run is claimed in the store
before it is dispatched, so it fires once even with several replicas.

Runs are claimed a little ahead of time (``lookahead_seconds``, at most ``max_held`` of them)
and handed to ``dispatch`` by an event-loop timer ``prepare_seconds`` before their time (the
engine records the hand-over durably, then starts the run at its exact time), so neither
claiming nor that write makes a run late. A run held that way can still be cancelled
(:meth:`Scheduler.withdraw`); when the engine stops, held runs go back to pending
(:meth:`Scheduler.drop_held`), and after a crash the next start puts them back (claimed runs
that never started).
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

from app.domain.timeutil import utc_now
from app.engine.ports import ExecutionStore, ScheduledRun
from app.sqlpool import is_transient

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
        lead_seconds: float = 0.0,
    ) -> None:
        self._poll = poll_interval_seconds
        self._batch = batch_size
        self._clock = clock
        self._lead = lead_seconds
        self._wake = asyncio.Event()
        self._stopping = False
        self._idle = asyncio.Event()

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

    async def wait_idle(self) -> None:
        """Return once the loop has finished a pass and waits for the next (a caller that
        moves an injected clock must not race a pass that read the clock before)."""
        await self._idle.wait()

    async def run_forever(self) -> None:
        """Loop until ``stop()``. A database that cannot be reached is waited out with
        back-off (logged once per outage); any other error ends the loop (a bug)."""
        outage = 0.0
        while not self._stopping:
            self._idle.clear()
            try:
                delay = await self._pass()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if not outage:
                    log.warning(
                        "%s: the database is unreachable (%s); retrying with back-off",
                        type(self).__name__,
                        type(exc).__name__,
                    )
                outage = min(max(outage * 2, 0.1), 5.0)
                delay = outage
            else:
                if outage:
                    log.warning("%s: the database is back", type(self).__name__)
                outage = 0.0
            if delay is None:
                continue
            self._wake.clear()
            if self._stopping:  # stop() may have come while we asked the store
                break
            if delay > 0:
                self._idle.set()
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    async def _pass(self) -> float | None:
        """Handle what is due; how long to sleep before the next pass (None: go on now)."""
        if await self.run_due() >= self._batch or self._stopping:
            return None  # more may be due right now
        delay = self._poll
        upcoming = await self.next_due_time()
        if upcoming is not None:
            until = (upcoming - self._clock()).total_seconds() - self._lead
            delay = min(delay, max(0.0, until))
        return delay


class Scheduler(DueLoop):
    def __init__(
        self,
        store: ExecutionStore,
        dispatch: Callable[[ScheduledRun], Coroutine[Any, Any, None]],
        *,
        owner: str,
        poll_interval_seconds: float = 1.0,
        batch_size: int = 100,
        clock: Callable[[], datetime] = utc_now,
        lookahead_seconds: float = 0.25,
        prepare_seconds: float = 0.02,
        max_held: int = 2000,
    ) -> None:
        super().__init__(
            poll_interval_seconds=poll_interval_seconds,
            batch_size=batch_size,
            clock=clock,
            lead_seconds=lookahead_seconds,
        )
        self._store = store
        self._dispatch = dispatch
        self._owner = owner
        self._lookahead = timedelta(seconds=lookahead_seconds)
        self._prepare = prepare_seconds
        self._max_held = max_held
        self._held: dict[str, asyncio.TimerHandle] = {}
        self._firing: set[asyncio.Task[None]] = set()

    async def next_due_time(self) -> datetime | None:
        if len(self._held) >= self._max_held:
            return None  # full: wait for a held run to fire (it notifies) or the poll
        return await self._store.next_scheduled_time()

    async def run_due(self) -> int:
        """Claim (in one batch) the runs due within the look-ahead; dispatch those due now
        and arm a timer for the others. Returns how many were claimed."""
        room = self._max_held - len(self._held)
        if room <= 0:
            return 0
        horizon = self._clock() + self._lookahead
        runs = await self._store.claim_due_runs(horizon, min(self._batch, room), self._owner)
        loop = asyncio.get_running_loop()
        for run in runs:
            delay = (run.scheduled_for - self._clock()).total_seconds() - self._prepare
            if delay <= 0:
                self._start_dispatch(run)
            else:
                self._held[run.execution_id] = loop.call_later(delay, self._fire, run)
        return len(runs)

    def _fire(self, run: ScheduledRun) -> None:
        if run.execution_id not in self._held:
            return
        remaining = (run.scheduled_for - self._clock()).total_seconds() - self._prepare
        if remaining > 0:  # timers round to the millisecond and may fire a little early
            loop = asyncio.get_running_loop()
            self._held[run.execution_id] = loop.call_later(remaining, self._fire, run)
            return
        del self._held[run.execution_id]
        self._start_dispatch(run)
        if len(self._held) == self._max_held - 1:
            self.notify()  # there is room to claim again

    def _start_dispatch(self, run: ScheduledRun) -> None:
        """Dispatch in a task of its own: runs firing together share one durable write."""
        task = asyncio.get_running_loop().create_task(
            self._dispatch(run), name=f"dispatch:{run.execution_id}"
        )
        self._firing.add(task)
        task.add_done_callback(self._fired)

    async def wait_dispatching(self) -> None:
        """Wait for the dispatches under way (before the queues stop)."""
        while self._firing:
            await asyncio.gather(*self._firing, return_exceptions=True)

    def _fired(self, task: asyncio.Task[None]) -> None:
        self._firing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("dispatching a scheduled run failed", exc_info=task.exception())

    @property
    def held(self) -> int:
        """Runs claimed ahead of their time, waiting for their timer."""
        return len(self._held)

    def withdraw(self, execution_id: str) -> bool:
        """Stop a held run from firing; True if it was held (it stays claimed in the
        store: the caller puts it back or settles it)."""
        timer = self._held.pop(execution_id, None)
        if timer is None:
            return False
        timer.cancel()
        return True

    def drop_held(self) -> list[str]:
        """Stop every held run from firing (the engine is stopping); their ids."""
        ids = list(self._held)
        for execution_id in ids:
            self.withdraw(execution_id)
        return ids
