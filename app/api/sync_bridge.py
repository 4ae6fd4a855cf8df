"""Running the engine's coroutines from plain synchronous code (the spec's synchronous
``ModernJobAPI`` methods).

The engine lives on one event loop: the server's, when started by the FastAPI lifespan, or
else a loop this bridge runs in a daemon thread of its own, started on first use. ``run``
hands a coroutine to that loop and waits for its result.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from app.domain.errors import EngineNotRunningError

T = TypeVar("T")
Starter = Callable[[], Coroutine[Any, Any, None]]


class SyncBridge:
    """The event loop the engine runs on, reachable from other threads."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The engine was started on ``loop`` (the server's)."""
        self._loop = loop

    def ensure_loop(self, start: Starter) -> asyncio.AbstractEventLoop:
        """The loop the engine was started on when it is still running; otherwise a new loop
        in a daemon thread owned by this bridge, with ``start()`` run on it."""
        with self._lock:
            loop = self._loop
            if loop is not None and loop.is_running():
                return loop
            if loop is not None and self._thread is None:
                raise EngineNotRunningError(
                    "the event loop the engine was started on is no longer running"
                )
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(
                target=_serve_loop, args=(loop, ready), name="modern-job-api-loop", daemon=True
            )
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
            asyncio.run_coroutine_threadsafe(start(), loop).result()
        return loop

    def run(self, coro: Coroutine[Any, Any, T], start: Starter) -> T:
        """Run ``coro`` on the engine's loop and wait for it. Calling this on that loop's own
        thread would block the loop it waits for, so that raises ``RuntimeError``."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        try:
            if running is not None and running is self._loop:
                raise RuntimeError(
                    "ModernJobAPI's synchronous methods cannot run on the engine's own event "
                    "loop (it would deadlock); await the async methods (execute, schedule, "
                    "status, ...) instead"
                )
            loop = self.ensure_loop(start)
        except BaseException:
            coro.close()
            raise
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def close(self, stop: Starter) -> None:
        """Run ``stop()`` and end the loop this bridge started, if it started one."""
        with self._lock:
            loop, thread = self._loop, self._thread
            if thread is None or loop is None:
                return
            self._loop = self._thread = None
        try:
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(stop(), loop).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


def _serve_loop(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    loop.run_forever()
