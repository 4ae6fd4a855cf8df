"""Live events of the executions this process runs, for ``GET .../executions/{id}/events``.

The runner reports through two small hooks:

* its store is wrapped in :class:`EventPublishingStore`: every job and step row it writes
  (running, retrying, each step's start and end, the final status) is also published;
* ``capture_output(execution_id, step)`` is entered around each step, so the stdout/stderr
  lines of shell and PowerShell steps are published as they are produced (see
  ``app.steps.live_output``). The same lines are kept on the running step's record, so a
  step that is cancelled or times out still has the output it produced.

Each execution has one in-memory channel, from its first event to its final status: a
subscriber gets every event published so far, then the new ones, and the stream ends with
``end``. The channel is dropped at the end (the stored record then has everything), so the
hub holds only running executions. Events of one channel are numbered (``seq``), so a
client that reconnects with ``Last-Event-ID`` skips what it already has.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from app.domain.enums import JobStatus
from app.domain.models import JobExecutionResult, StepExecutionResult
from app.engine.ports import ExecutionStore
from app.steps.live_output import bind_sink

#: Kept of stderr on a step's record while it runs (as ``metadata["stderr"]``).
STDERR_TAIL_CHARS = 4_000


@dataclass(frozen=True)
class ExecutionEvent:
    """``kind``: ``status`` (the job's status changed), ``step`` (a step's status changed),
    ``output`` (a line of a step's stdout or stderr) or ``end`` (the final status)."""

    seq: int
    kind: str
    data: dict[str, Any]


def step_data(step: StepExecutionResult) -> dict[str, Any]:
    """A step event's payload: the step without its output (which comes as lines) and its
    metadata (a SQL step's columns can be large), with its attempt."""
    data = step.state_dict()
    data["attempt"] = step.metadata.get("attempt")
    return data


def job_data(result: JobExecutionResult) -> dict[str, Any]:
    return {
        "execution_id": result.execution_id,
        "job_id": result.job_id,
        "status": result.status.value,
        "success": result.status is JobStatus.SUCCESS,
        "retry_count": result.retry_count,
        "error_message": result.error_message,
    }


@dataclass
class _Channel:
    events: list[ExecutionEvent] = field(default_factory=list)
    ended: bool = False
    #: What the followers of this channel wait on; made when the first one waits (most
    #: executions have none).
    _changed: asyncio.Event | None = None

    def add(self, kind: str, data: dict[str, Any]) -> None:
        if self.ended:
            return
        self.events.append(ExecutionEvent(len(self.events) + 1, kind, data))
        self.ended = kind == "end"
        # Wake the current waiters; later ones wait on a fresh event.
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    def changed(self) -> asyncio.Event:
        """The event set by the next ``add``."""
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed


class ExecutionEventHub:
    """The channels of the executions running in this process."""

    def __init__(self) -> None:
        self._channels: dict[str, _Channel] = {}

    def is_live(self, execution_id: str) -> bool:
        return execution_id in self._channels

    def _channel(self, execution_id: str) -> _Channel:
        channel = self._channels.get(execution_id)
        if channel is None:
            channel = self._channels[execution_id] = _Channel()
        return channel

    def job_changed(self, result: JobExecutionResult) -> None:
        channel = self._channel(result.execution_id)
        if result.status.is_terminal:
            channel.add("end", job_data(result))
            del self._channels[result.execution_id]
        else:
            channel.add("status", job_data(result))

    def step_changed(self, execution_id: str, step: StepExecutionResult) -> None:
        self._channel(execution_id).add("step", step_data(step))

    def capture_output(
        self, execution_id: str, step: StepExecutionResult
    ) -> contextlib.AbstractContextManager[None]:
        """Publish the lines of the programs ``step`` starts, and keep them on ``step``
        (stdout as its output, the tail of stderr in its metadata)."""

        def sink(stream: str, line: str) -> None:
            if stream == "stdout":
                step.output = f"{step.output}{line}\n" if step.output else f"{line}\n"
            else:
                tail = f"{step.metadata.get('stderr', '')}{line}\n"
                step.metadata["stderr"] = tail[-STDERR_TAIL_CHARS:]
            self._channel(execution_id).add(
                "output", {"step_id": step.step_id, "stream": stream, "line": line}
            )

        return bind_sink(sink)

    async def follow(
        self, execution_id: str, after: int = 0, *, idle_seconds: float = 5.0
    ) -> AsyncIterator[ExecutionEvent | None]:
        """The channel's events after ``after``, then new ones until ``end``; ``None`` after
        every ``idle_seconds`` without one (so the caller can check on the execution).
        Yields nothing when the execution has no channel (not started in this process, or
        already finished)."""
        channel = self._channels.get(execution_id)
        if channel is None:
            return
        seen = after
        while True:
            waiter = channel.changed()
            while seen < len(channel.events):  # also those added while we yielded
                seen += 1
                yield channel.events[seen - 1]
            if channel.ended:
                return
            try:
                async with asyncio.timeout(idle_seconds):
                    await waiter.wait()
            except TimeoutError:
                yield None


#: The hub of this process (one engine per process serves the API).
EXECUTION_EVENTS = ExecutionEventHub()


class EventPublishingStore:
    """The runner's store: writes go to ``inner``, then are published on ``hub``."""

    def __init__(self, inner: ExecutionStore, hub: ExecutionEventHub = EXECUTION_EVENTS) -> None:
        self.inner = inner
        self.hub = hub

    async def record_job(self, result: JobExecutionResult, *, durable: bool = True) -> None:
        await self.inner.record_job(result, durable=durable)
        self.hub.job_changed(result)

    async def record_step(
        self,
        execution_id: str,
        step: StepExecutionResult,
        attempt: int,
        *,
        durable: bool = True,
    ) -> None:
        await self.inner.record_step(execution_id, step, attempt, durable=durable)
        self.hub.step_changed(execution_id, step)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
