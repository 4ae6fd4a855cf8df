"""Routing validation (targets exist, no step the job can never leave), run token references,
and attempts rebuilt from stored rows (older rows without attempt summaries included)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from app.domain import JobDefinition, JobStatus, StepExecutionResult, StepStatus
from app.domain.attempts import assemble
from app.domain.errors import ConfigurationError
from app.domain.flow import loop_of
from app.domain.models import JobExecutionResult
from app.steps import ExecutionContext, ParameterReferenceError
from app.steps.context import parse_reference


def step(step_id: str, **config: Any) -> dict[str, Any]:
    return {"step_id": step_id, "type": "shell", "script": "true", **config}


def errors_of(*steps: dict[str, Any], **kw: Any) -> list[tuple[str, str]]:
    job = JobDefinition(job_id="j", job_name="j", steps=list(steps), **kw)
    with pytest.raises(ConfigurationError) as info:
        job.validate()
    return [(e.field, e.message) for e in info.value.errors]


def test_goto_targets_must_exist_and_every_problem_is_reported() -> None:
    assert errors_of(
        step("a", on_success={"goto": "b"}, on_failure={"goto": "x"}),
        step("b", on_success={"goto": "y"}),
    ) == [
        ("steps[0].on_failure.goto", "no step has step_id 'x'"),
        ("steps[1].on_success.goto", "no step has step_id 'y'"),
    ]


def test_a_step_that_only_routes_to_itself_is_refused() -> None:
    assert errors_of(
        step("a"), step("spin", on_success={"goto": "spin"}, on_failure={"goto": "spin"})
    ) == [
        (
            "steps[1].on_failure",
            "step 'spin' routes only to itself (on_success and on_failure): the job could "
            "never end",
        )
    ]


def test_a_loop_without_a_way_out_is_refused_but_a_bounded_poll_is_fine() -> None:
    trapped = errors_of(
        step("a", on_success={"goto": "b"}, on_failure={"goto": "b"}),
        step("b", on_success={"goto": "a"}, on_failure={"goto": "a"}),
    )
    assert [f for f, _ in trapped] == ["steps[0].on_failure", "steps[1].on_failure"]
    assert "loop without a way out (steps 'a', 'b')" in trapped[0][1]
    # Polling: retry itself on failure, leave on success.
    JobDefinition(
        job_id="j", job_name="j", steps=[step("poll", on_failure={"goto": "poll"}), step("b")]
    ).validate()
    # A step nothing routes to may loop on itself: it is never reached.
    JobDefinition(
        job_id="j",
        job_name="j",
        steps=[
            step("a", on_success="quit_success"),
            step("island", on_success={"goto": "island"}, on_failure={"goto": "island"}),
        ],
    ).validate()


def test_continue_on_failure_conflicts_with_another_on_failure_and_max_step_runs_is_bounded() -> (
    None
):
    assert errors_of(
        step("a", continue_on_failure=True, on_failure="quit_failure"), max_step_runs=0
    ) == [
        ("max_step_runs", "must be between 1 and 100000"),
        (
            "steps[0].on_failure",
            'conflicts with continue_on_failure: true (which means on_failure: "next"); '
            "set only one",
        ),
    ]


def test_route_shapes_are_the_step_schema_s_business() -> None:
    fields = [f for f, _ in errors_of(step("a", on_success="jump", on_failure={"goto": ""}))]
    assert fields and all(f.startswith("steps[0].on_") for f in fields)


def test_loop_of_names_the_cycle_at_the_end_of_the_path() -> None:
    assert loop_of(["p", "c", "w", "c", "w"]) == ["w", "c", "w"]
    assert loop_of(["a"]) == ["a"]


def test_run_token_references() -> None:
    assert parse_reference("run.logical_date") == ["run", "logical_date"]
    for bad in ("run.nope", "run.attempt.x", "run"):
        with pytest.raises(ParameterReferenceError):
            parse_reference(bad)
    job = JobDefinition(job_id="j", job_name="j", timezone="America/New_York")
    ctx = ExecutionContext(job, "e1", requested_by="ops")
    ctx.trigger = "schedule"
    ctx.scheduled_for = datetime(2026, 3, 8, 6, 30, tzinfo=UTC)  # 01:30 EST, the DST day
    assert ctx.run_tokens() == {
        "execution_id": "e1",
        "job_id": "j",
        "scheduled_for": "2026-03-08T06:30:00Z",
        "scheduled_for_local": "2026-03-08T01:30:00-05:00",
        "logical_date": "2026-03-08",
        "attempt": 0,
        "trigger": "schedule",
        "requested_by": "ops",
    }
    ctx.scheduled_for = datetime(2026, 3, 9, 3, 0, tzinfo=UTC)  # still the 8th there
    assert ctx.resolve_reference("run.logical_date") == "2026-03-08"
    ctx.logical_date = "2026-01-01"  # a manual run's own
    assert ctx.resolve_parameters(
        {"d": {"$from": "run.logical_date"}}, step_id="s", step_type="sql"
    ) == {"d": "2026-01-01"}


def _step(step_id: str, attempt: int, status: StepStatus) -> StepExecutionResult:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    return StepExecutionResult(
        step_id, step_id, "shell", status, start_time=when, metadata={"attempt": attempt}
    )


def test_rows_written_before_attempt_summaries_are_read_as_attempts() -> None:
    old = JobExecutionResult("e", "j", "j", JobStatus.SUCCESS, "UTC", retry_count=1)
    rows = [
        (0, _step("a", 0, StepStatus.FAILED)),
        (1, _step("a", 1, StepStatus.SUCCESS)),
        (1, _step("b", 1, StepStatus.SUCCESS)),
    ]
    result = assemble(old, rows)
    assert [(a.attempt, a.status, a.path) for a in result.attempts] == [
        (0, JobStatus.FAILED, ["a"]),
        (1, JobStatus.SUCCESS, ["a", "b"]),
    ]
    assert [s.step_id for s in result.steps] == ["a", "b"]
    assert result.to_dict()["attempts"][0]["steps"][0]["status"] == "failed"
