"""Following an execution as Server-Sent Events (the API's ``.../events`` route and the
console's execution page both use ``follow_execution``).

While the execution runs in this process the events come from the in-process hub
(``app.engine.events``): everything produced so far, then each step change and output line
as it happens. An execution that already ended is replayed from its stored record (its
steps, their output as lines, the final status), so a late client sees the same shape. One
that waits in a queue, or runs on another node, is checked every ``POLL_SECONDS`` until it
starts here or ends. Every stream ends with ``end``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi.sse import ServerSentEvent

from app.domain.models import JobExecutionResult
from app.engine.engine import NewExecutionEngine
from app.engine.events import EXECUTION_EVENTS, ExecutionEvent, job_data, step_data

POLL_SECONDS = 0.25
#: Without any event for this long, the store is asked whether the execution ended.
IDLE_SECONDS = 5.0


def _sse(event: ExecutionEvent) -> ServerSentEvent:
    return ServerSentEvent(data=event.data, event=event.kind, id=str(event.seq))


def replay(record: JobExecutionResult) -> list[ServerSentEvent]:
    """A finished execution's events, rebuilt from its record."""
    out: list[ServerSentEvent] = []
    for step in record.steps:
        out.append(ServerSentEvent(data=step_data(step), event="step"))
        for stream, text in (("stdout", step.output), ("stderr", step.metadata.get("stderr"))):
            if isinstance(text, str) and text:
                for line in text.removesuffix("\n").split("\n"):
                    data = {"step_id": step.step_id, "stream": stream, "line": line}
                    out.append(ServerSentEvent(data=data, event="output"))
    out.append(ServerSentEvent(data=job_data(record), event="end"))
    return out


async def follow_execution(
    engine: NewExecutionEngine, execution_id: str, after: int = 0
) -> AsyncIterator[ServerSentEvent]:
    """The events of a known execution after event number ``after`` (``Last-Event-ID``)."""
    streamed = after > 0  # the client has live events already: a replay sends only the end
    announced = False
    while True:
        if EXECUTION_EVENTS.is_live(execution_id):
            async for event in EXECUTION_EVENTS.follow(
                execution_id, after, idle_seconds=IDLE_SECONDS
            ):
                if event is None:  # quiet for a while: did it end without a word here?
                    stored = await engine.store.get_execution(execution_id)
                    if stored is not None and stored.status.is_terminal:
                        break
                    continue
                yield _sse(event)
                streamed, after = True, event.seq
                if event.kind == "end":
                    return
        current = await engine.store.get_execution(execution_id)
        if current is not None and current.status.is_terminal:
            events = replay(current)
            for item in events[-1:] if streamed else events:
                yield item
            return
        if not announced and current is not None:  # queued, or running on another node
            yield ServerSentEvent(data=job_data(current), event="status")
            announced = True
        await asyncio.sleep(POLL_SECONDS)


def last_event_number(header: str | None) -> int:
    """``Last-Event-ID`` as an event number (0 when absent or not a number)."""
    return int(header) if header is not None and header.isdigit() else 0
