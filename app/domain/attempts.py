"""An execution's attempts rebuilt from what a store keeps: the attempt summaries of the job
row and the step rows keyed by (attempt, step_id, run). Shared by every store adapter, so
they give the same answer; rows written before attempts were recorded are read too."""

from __future__ import annotations

from collections.abc import Iterable

from app.domain.enums import JobStatus
from app.domain.models import AttemptRecord, JobExecutionResult, StepExecutionResult


def assemble(
    result: JobExecutionResult, steps: Iterable[tuple[int, StepExecutionResult]]
) -> JobExecutionResult:
    """Give ``result`` its attempts (summaries already on it, steps from ``steps``: pairs of
    attempt and step, in run order within each attempt) and the steps of its last attempt
    as ``result.steps``. Attempts with steps but no summary (older rows) get one: the last
    has the execution's status, an earlier one ``failed`` (it was retried)."""
    by_attempt: dict[int, list[StepExecutionResult]] = {}
    for attempt, step in steps:
        by_attempt.setdefault(attempt, []).append(step)
    records = {a.attempt: a for a in result.attempts}
    last = max([*by_attempt, *records], default=None)
    for attempt in sorted(by_attempt):
        if attempt not in records:
            status = result.status if attempt == last else JobStatus.FAILED
            records[attempt] = AttemptRecord(
                attempt,
                status,
                start_time=result.start_time if attempt == 0 else None,
                end_time=result.end_time if attempt == last else None,
                error_message=result.error_message if attempt == last else None,
                path=[s.step_id for s in by_attempt[attempt] if s.start_time is not None],
            )
    for attempt, record in records.items():
        record.steps = by_attempt.get(attempt, [])
    if last is not None and result.status.is_terminal and not records[last].status.is_terminal:
        # Settled by the store after the fact (interrupted by a restart, missed, cancelled).
        records[last].status = result.status
        records[last].error_message = result.error_message
        records[last].end_time = result.end_time
    result.attempts = [records[a] for a in sorted(records)]
    result.steps = list(records[last].steps) if last is not None else []
    return result


def step_attempt(step: StepExecutionResult, default: int = 0) -> int:
    """The job attempt a step result belongs to (its ``metadata['attempt']``)."""
    value = step.metadata.get("attempt", default)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def step_run(step: StepExecutionResult) -> int:
    """Which run of its step within its attempt a step result is (0 for the first; a step
    retry or a ``goto`` loop makes more)."""
    value = step.metadata.get("run", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
