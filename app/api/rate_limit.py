"""The per-key execution rate limit (``V2_RATE_LIMIT_PER_MINUTE``): a sliding one-minute
window of started executions per key (per client address in open mode)."""

from __future__ import annotations

import collections
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.api.errors import RateLimitedError

RATE_WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class RateTicket:
    identity: str
    at: float


class RateLimiter:
    """At most ``per_minute`` executions per identity in any sliding 60-second window.

    One deque of start times per identity (at most ``per_minute`` entries each), kept in
    this process: replicas limit separately. ``per_minute == 0`` turns the limit off.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._starts: dict[str, collections.deque[float]] = {}

    def acquire(self, identity: str) -> RateTicket | None:
        """Take one slot for ``identity``; ``RateLimitedError`` (with Retry-After) if none."""
        if self.per_minute <= 0:
            return None
        now = self._clock()
        starts = self._starts.setdefault(identity, collections.deque())
        while starts and starts[0] <= now - RATE_WINDOW_SECONDS:
            starts.popleft()
        if len(starts) >= self.per_minute:
            retry_after = max(1, math.ceil(starts[0] + RATE_WINDOW_SECONDS - now))
            raise RateLimitedError(
                f"at most {self.per_minute} executions per minute for {identity}; "
                f"retry in {retry_after}s",
                retry_after=retry_after,
            )
        starts.append(now)
        self._prune(now)
        return RateTicket(identity, now)

    def refund(self, ticket: RateTicket | None) -> None:
        """Give a slot back (the request started nothing)."""
        if ticket is None:
            return
        starts = self._starts.get(ticket.identity)
        if starts is not None:
            with contextlib.suppress(ValueError):  # already out of the window
                starts.remove(ticket.at)

    def _prune(self, now: float) -> None:
        if len(self._starts) > 10_000:  # many client addresses: forget the idle ones
            for identity, starts in list(self._starts.items()):
                if not starts or starts[-1] <= now - RATE_WINDOW_SECONDS:
                    del self._starts[identity]
