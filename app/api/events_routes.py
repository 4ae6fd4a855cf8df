"""``GET /api/v2/executions/{execution_id}/events``: an execution's live events (SSE)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header
from fastapi.sse import EventSourceResponse, ServerSentEvent

from app.api.dependencies import JobAPIDep
from app.api.errors import PROBLEM_MEDIA_TYPE, problem_responses
from app.api.live import follow_execution, last_event_number
from app.api.openapi import PROBLEM_REF
from app.api.queries import NoQuery
from app.api.responses import operation_id
from app.api.routes import ExecutionId
from app.api.security import ReadKey

events_router = APIRouter(prefix="/api/v2", generate_unique_id_function=operation_id)

# The stream's errors are problem details like everywhere else, not text/event-stream.
_PROBLEMS = {
    status: {
        **{k: v for k, v in entry.items() if k != "model"},
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": PROBLEM_REF}}},
    }
    for status, entry in problem_responses(400, 404, 500, 503).items()
}


async def known_execution(execution_id: ExecutionId, api: JobAPIDep, query: NoQuery) -> str:
    """The path's execution id; 404 (before the stream starts) when it is unknown. (The
    query is checked here, before the lookup, so that an unknown parameter answers 400.)"""
    await api.get_execution(execution_id)
    return execution_id


@events_router.get(
    "/executions/{execution_id}/events",
    tags=["executions"],
    summary="Follow an execution (Server-Sent Events)",
    description="A `text/event-stream` of the execution: `status` (the job's status "
    "changed: running, retrying), `step` (a step started or ended, with its status, times "
    "and error), `output` (one line of a shell or PowerShell step's stdout or stderr, as "
    "it is produced; `{step_id, stream, line}`, at most V2_MAX_OUTPUT_BYTES per stream and "
    "step), and last `end` (the final status), after which the server closes the stream. "
    "A client that connects late first gets everything produced so far; a finished "
    "execution is replayed from its record. Events carry ids: reconnecting with "
    "`Last-Event-ID` skips those already received.",
    response_class=EventSourceResponse,
    responses=_PROBLEMS,
)
async def stream_execution_events(
    _: ReadKey,
    execution_id: Annotated[str, Depends(known_execution)],
    api: JobAPIDep,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> AsyncIterator[ServerSentEvent]:
    async for event in follow_execution(api.engine, execution_id, last_event_number(last_event_id)):
        yield event
