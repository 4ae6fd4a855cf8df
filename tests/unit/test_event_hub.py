"""ExecutionEventHub: a subscriber gets every event in order, also those published while it
was busy with the previous one, and the stream ends with ``end``."""

from __future__ import annotations

from app.domain.enums import JobStatus, StepStatus
from app.domain.models import JobExecutionResult, StepExecutionResult
from app.engine.events import ExecutionEventHub
from app.steps.live_output import current_splitter


def job(status: JobStatus) -> JobExecutionResult:
    return JobExecutionResult(
        execution_id="e1", job_id="j", job_name="j", status=status, timezone="UTC"
    )


async def test_events_published_while_a_subscriber_is_busy_are_not_lost() -> None:
    hub = ExecutionEventHub()
    step = StepExecutionResult("s", "s", "shell", StepStatus.RUNNING)
    hub.step_changed("e1", step)
    seen: list[tuple[int, str]] = []
    async for event in hub.follow("e1"):
        assert event is not None
        seen.append((event.seq, event.kind))
        if event.seq == 1:  # two lines and the end arrive while we handle the first event
            with hub.capture_output("e1", step):
                splitter = current_splitter(1000)
                assert splitter is not None
                splitter.feed(1, b"one\ntwo\n")
            hub.job_changed(job(JobStatus.SUCCESS))

    assert seen == [(1, "step"), (2, "output"), (3, "output"), (4, "end")]
    assert step.output == "one\ntwo\n"
    assert not hub.is_live("e1")


async def test_nothing_to_follow_for_an_unknown_execution() -> None:
    assert [event async for event in ExecutionEventHub().follow("nope")] == []
