"""JobDefinition validation and serialisation, results, errors, time helpers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

import app
from app.domain import (
    ConfigurationError,
    JobDefinition,
    JobExecutionResult,
    JobStatus,
    SchedulingError,
    StepExecutionError,
    StepExecutionResult,
    StepStatus,
)
from app.domain.timeutil import resolve_local

SHELL = {"step_id": "s1", "type": "shell", "script": "echo hi"}


def make(**kw: object) -> JobDefinition:
    data: dict[str, object] = {"job_id": "j", "job_name": "Job", "steps": [SHELL]}
    data.update(kw)
    return JobDefinition.from_dict(data)


def fields_of(job: JobDefinition) -> list[str]:
    with pytest.raises(ConfigurationError) as info:
        job.validate()
    return [e.field for e in info.value.errors]


def test_valid_job_returns_true() -> None:
    assert make().validate() is True


def test_every_problem_is_listed_at_once() -> None:
    job = make(
        job_id="",
        job_name=" ",
        timezone="Mars/Olympus",
        max_retries=-1,
        timeout_seconds=0,
        retry_delay_seconds=-2,
        metadata=[],
        schedule_config={"type": "cron", "expression": "61 * * * *"},
        steps=[
            {"step_id": "a", "type": "sql", "query": "select 1"},
            {"step_id": "a", "type": "shell"},
            {"step_id": "c", "type": "teleport"},
            {"step_id": "d", "type": "powershell", "script": "x", "bogus": 1},
        ],
    )
    assert fields_of(job) == [
        "job_id",
        "job_name",
        "timezone",
        "steps[0].connection_name",
        "steps[1]",
        "steps[1].step_id",
        "steps[2].type",
        "steps[3].bogus",
        "max_retries",
        "timeout_seconds",
        "retry_delay_seconds",
        "schedule_config.expression",
        "metadata",
    ]


def test_no_steps_and_messages() -> None:
    with pytest.raises(ConfigurationError) as info:
        make(steps=[]).validate()
    assert str(info.value) == "steps: must contain at least one step"


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"type": "weekly"}, "schedule_config.type"),
        ({"type": "cron"}, "schedule_config.expression"),
        ({"type": "cron", "expression": "* * * *"}, "schedule_config.expression"),
        ({"type": "interval", "every_seconds": 0}, "schedule_config.every_seconds"),
        ({"type": "interval", "every_seconds": True}, "schedule_config.every_seconds"),
        ({"type": "once"}, "schedule_config.at"),
        ({"type": "once", "at": "tomorrow"}, "schedule_config.at"),
        ({"type": "cron", "expression": "* * * * *", "every": 1}, "schedule_config.every"),
        (
            {
                "type": "cron",
                "expression": "0 2 * * *",
                "start_at": "2026-02-01T00:00:00",
                "end_at": "2026-01-01T00:00:00",
            },
            "schedule_config.end_at",
        ),
    ],
)
def test_schedule_config_shape(config: dict[str, object], field: str) -> None:
    assert fields_of(make(schedule_config=config)) == [field]


@pytest.mark.parametrize(
    "config",
    [
        {"type": "cron", "expression": "30 2 * * 1-5"},
        {"type": "cron", "expression": "0 9 1 JAN,JUL MON-FRI"},
        {"type": "interval", "every_seconds": 900, "start_at": "2026-01-01T00:00:00+01:00"},
        {"type": "once", "at": "2026-12-24T18:00:00"},
    ],
)
def test_valid_schedule_configs(config: dict[str, object]) -> None:
    assert make(schedule_config=config).validate()


def test_round_trip_is_exact() -> None:
    created = datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=1)))
    job = make(
        description="d",
        timezone="Europe/London",
        metadata={"owner": "ops", "tags": ["a"]},
        schedule_config={"type": "cron", "expression": "0 2 * * *"},
        created_at=created.isoformat(),
        retry_delay_seconds=1.5,
        retry_exponential_backoff=True,
    )
    data = job.to_dict()
    assert data["created_at"] == "2026-03-29T01:30:00+01:00"
    again = JobDefinition.from_dict(data)
    assert again == job
    assert again.to_dict() == data
    assert again.created_at == created


def test_from_json_reads_what_to_dict_wrote_and_refuses_like_from_dict() -> None:
    job = make(
        timezone="Europe/London",
        metadata={"owner": "ops"},
        created_at="2026-03-29T01:30:00+01:00",
        notifications=[{"on": ["failure"], "webhook": {"url": "http://127.0.0.1:9/x"}}],
    )
    text = json.dumps(job.to_dict())
    assert JobDefinition.from_json(text) == JobDefinition.from_dict(json.loads(text)) == job
    with pytest.raises(ConfigurationError) as info:
        JobDefinition.from_json('{"job_name": "x", "stepz": []}')
    assert [(e.field, e.message) for e in info.value.errors] == [
        ("stepz", "unknown field"),
        ("job_id", "is required"),
    ]
    with pytest.raises(ConfigurationError, match="JSON object"):
        JobDefinition.from_json("[]")


def test_shared_dict_is_to_dict_without_the_copies() -> None:
    job = make(created_at="2026-03-29T01:30:00+01:00", metadata={"owner": "ops"})
    shared = job.shared_dict()
    assert shared == job.to_dict()
    assert shared["steps"] is job.steps and job.to_dict()["steps"] is not job.steps


def test_unknown_and_missing_keys_are_clear() -> None:
    with pytest.raises(ConfigurationError) as info:
        JobDefinition.from_dict({"job_name": "x", "stepz": []})
    assert [(e.field, e.message) for e in info.value.errors] == [
        ("stepz", "unknown field"),
        ("job_id", "is required"),
    ]
    with pytest.raises(ConfigurationError):
        JobDefinition.from_dict([])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="created_at"):
        JobDefinition.from_dict({"job_id": "a", "job_name": "b", "created_at": "soon"})


def test_from_dict_does_not_alias_input() -> None:
    data = {"job_id": "a", "job_name": "b", "steps": [dict(SHELL)]}
    job = JobDefinition.from_dict(data)
    data["steps"][0]["script"] = "changed"  # type: ignore[index]
    assert job.steps[0]["script"] == "echo hi"


def test_results_success_and_failed_steps() -> None:
    result = JobExecutionResult("e", "j", "J", JobStatus.PARTIAL_SUCCESS, "UTC")
    assert result.success is False
    for status in (StepStatus.SUCCESS, StepStatus.FAILED, StepStatus.TIMEOUT, StepStatus.SKIPPED):
        result.add_step_result(StepExecutionResult(status.value, "n", "shell", status))
    assert [s.step_id for s in result.get_failed_steps()] == ["failed", "timeout"]
    assert JobExecutionResult("e", "j", "J", JobStatus.SUCCESS, "UTC").success
    assert StepExecutionResult("a", "a", "sql", StepStatus.SUCCESS).success
    assert not StepExecutionResult("a", "a", "sql", StepStatus.SKIPPED).success
    again = JobExecutionResult.from_dict(result.to_dict())
    assert again.to_dict() == result.to_dict()


def test_error_classes_carry_data() -> None:
    err = StepExecutionError("s1", "sql", "boom")
    assert (err.step_id, err.step_type, str(err)) == ("s1", "sql", "boom")
    for cls in (
        app.SchedulingError,
        app.StepExecutionError,
        app.ConfigurationError,
        app.TimeoutError,
        app.CancellationError,
    ):
        assert issubclass(cls, app.ExecutionEngineError)
    assert issubclass(app.TimeoutError, TimeoutError)


def test_enum_values_are_the_wire_format() -> None:
    assert [s.value for s in JobStatus] == [
        "pending",
        "running",
        "success",
        "failed",
        "partial_success",
        "cancelled",
        "timeout",
        "retrying",
    ]
    assert [s.value for s in StepStatus] == [
        "pending",
        "running",
        "success",
        "failed",
        "skipped",
        "cancelled",
        "timeout",
    ]


@pytest.mark.parametrize(
    ("naive", "tz", "gap"),
    [
        (datetime(2026, 3, 8, 2, 30), "America/New_York", "02:00 to 03:00"),
        (datetime(2026, 3, 29, 1, 15), "Europe/London", "01:00 to 02:00"),
        (datetime(2026, 10, 4, 2, 15), "Australia/Lord_Howe", "02:00 to 02:30"),
        (datetime(2026, 9, 27, 2, 50), "Pacific/Chatham", "02:45 to 03:45"),
    ],
)
def test_gap_times_are_refused_naming_the_gap(naive: datetime, tz: str, gap: str) -> None:
    with pytest.raises(SchedulingError, match=gap) as info:
        resolve_local(naive, tz)
    assert info.value.field == "scheduled_time"


@pytest.mark.parametrize(
    ("naive", "tz", "expected_utc"),
    [
        (datetime(2026, 11, 1, 1, 30), "America/New_York", "2026-11-01T05:30:00+00:00"),
        (datetime(2026, 10, 25, 1, 30), "Europe/London", "2026-10-25T00:30:00+00:00"),
        (datetime(2026, 4, 5, 1, 45), "Australia/Lord_Howe", "2026-04-04T14:45:00+00:00"),
        (datetime(2026, 7, 1, 12, 0), "Asia/Kolkata", "2026-07-01T06:30:00+00:00"),
    ],
)
def test_ambiguous_means_first_and_plain_times(naive: datetime, tz: str, expected_utc: str) -> None:
    assert resolve_local(naive, tz).isoformat() == expected_utc


def test_aware_times_are_instants() -> None:
    aware = datetime(2026, 3, 8, 2, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert resolve_local(aware, "America/New_York") == aware.astimezone(UTC)
