"""The msdb -> job mapping (app.domain.sql_agent): schedules for every freq_type and sub-day
type, step routing and retries, token translation, and the report of what is not carried
over; bad exports name every row and column at once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from app.domain.errors import ConfigurationError
from app.domain.job_schedule import build_job_schedule
from app.domain.schedules import upcoming
from app.domain.sql_agent.export import SqlAgentExport
from app.domain.sql_agent.mapping import ImportOptions, Outcome, plan_import
from app.domain.sql_agent.rows import SysScheduleRow
from app.domain.sql_agent.schedules import map_schedule, schedule_errors
from app.domain.sql_agent.tokens import translate_powershell, translate_shell, translate_sql
from app.steps.sql import query_parameter_names
from tests.support import msdb

OPTIONS = ImportOptions(
    timezone="Europe/London",
    connection_map={"SQLPROD01/DW": "warehouse", "ops": "ops"},
    timeout_seconds=7200,
    batch_commit=frozenset({"warehouse"}),
)


def plan(data: dict[str, Any] | None = None, options: ImportOptions = OPTIONS) -> Any:
    return plan_import(SqlAgentExport.model_validate(data or msdb.export()), options)


def jobs_by_id(data: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    return {j.definition["job_id"]: j.definition for j in plan(data).jobs}


def schedule(**columns: Any) -> SysScheduleRow:
    row = {
        "schedule_id": 1,
        "name": "s",
        "enabled": 1,
        "freq_type": 4,
        "freq_interval": 1,
        "freq_subday_type": 1,
        "freq_subday_interval": 0,
        "freq_relative_interval": 0,
        "freq_recurrence_factor": 0,
        "active_start_date": 20260101,
        "active_end_date": 99991231,
        "active_start_time": 0,
        "active_end_time": 235959,
        **columns,
    }
    return SysScheduleRow.model_validate(row)


POLICIES = {"misfire_policy": "skip", "overlap_policy": "skip"}


# -- schedules -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (
            {"freq_type": 1, "active_start_date": 20261224, "active_start_time": 180000},
            {"type": "once", "at": "2026-12-24T18:00:00"},
        ),
        (
            {"freq_type": 4, "freq_interval": 3, "active_start_time": 23000},
            {"frequency": "daily", "interval": 3, "at": "02:30:00"},
        ),
        (
            {"freq_type": 8, "freq_interval": 1 + 64, "freq_recurrence_factor": 1},
            {
                "frequency": "weekly",
                "interval": 1,
                "weekdays": ["saturday", "sunday"],
                "at": "00:00:00",
            },
        ),
        (
            {"freq_type": 8, "freq_interval": 127, "freq_recurrence_factor": 0},
            {
                "frequency": "weekly",
                "interval": 1,
                "weekdays": [
                    "monday",
                    "tuesday",
                    "wednesday",
                    "thursday",
                    "friday",
                    "saturday",
                    "sunday",
                ],
                "at": "00:00:00",
            },
        ),
        (
            {
                "freq_type": 16,
                "freq_interval": 31,
                "freq_recurrence_factor": 3,
                "active_start_time": 235959,
            },
            {"frequency": "monthly", "interval": 3, "day_of_month": 31, "at": "23:59:59"},
        ),
        (
            {
                "freq_type": 32,
                "freq_interval": 1,
                "freq_relative_interval": 1,
                "freq_recurrence_factor": 1,
            },
            {
                "frequency": "monthly_relative",
                "interval": 1,
                "relative": {"week": "first", "day": "sunday"},
                "at": "00:00:00",
            },
        ),
        (
            {
                "freq_type": 32,
                "freq_interval": 8,
                "freq_relative_interval": 2,
                "freq_recurrence_factor": 2,
            },
            {
                "frequency": "monthly_relative",
                "interval": 2,
                "relative": {"week": "second", "day": "day"},
                "at": "00:00:00",
            },
        ),
        (
            {
                "freq_type": 32,
                "freq_interval": 9,
                "freq_relative_interval": 4,
                "freq_recurrence_factor": 1,
            },
            {
                "frequency": "monthly_relative",
                "interval": 1,
                "relative": {"week": "third", "day": "weekday"},
                "at": "00:00:00",
            },
        ),
        (
            {
                "freq_type": 32,
                "freq_interval": 10,
                "freq_relative_interval": 8,
                "freq_recurrence_factor": 1,
            },
            {
                "frequency": "monthly_relative",
                "interval": 1,
                "relative": {"week": "fourth", "day": "weekend_day"},
                "at": "00:00:00",
            },
        ),
        (
            {
                "freq_type": 4,
                "freq_interval": 1,
                "freq_subday_type": 2,
                "freq_subday_interval": 30,
                "active_start_time": 10000,
                "active_end_time": 15959,
            },
            {
                "frequency": "daily",
                "interval": 1,
                "repeat": {"every": 30, "unit": "seconds", "from": "01:00:00", "until": "01:59:59"},
            },
        ),
        (
            {
                "freq_type": 8,
                "freq_interval": 62,
                "freq_recurrence_factor": 1,
                "freq_subday_type": 4,
                "freq_subday_interval": 15,
                "active_start_time": 80000,
                "active_end_time": 180000,
            },
            {
                "frequency": "weekly",
                "interval": 1,
                "weekdays": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                "repeat": {"every": 15, "unit": "minutes", "from": "08:00:00", "until": "18:00:00"},
            },
        ),
        (
            {
                "freq_type": 16,
                "freq_interval": 1,
                "freq_recurrence_factor": 1,
                "freq_subday_type": 8,
                "freq_subday_interval": 6,
                "active_end_date": 20270630,
            },
            {
                "frequency": "monthly",
                "interval": 1,
                "day_of_month": 1,
                "end_date": "2027-06-30",
                "repeat": {"every": 6, "unit": "hours", "from": "00:00:00", "until": "23:59:59"},
            },
        ),
    ],
)
def test_every_freq_type_and_subday_type_maps(columns: dict[str, Any], expected: Any) -> None:
    row = schedule(**columns)
    assert schedule_errors(row, "s") == []
    mapped = map_schedule(row, "Europe/London")
    if expected["type" if "type" in expected else "frequency"] == "once":
        assert mapped.config == {**expected, **POLICIES}
        return
    start = str(columns["active_start_date"]) if "active_start_date" in columns else "20260101"
    assert mapped.config == {
        "type": "calendar",
        "start_date": f"{start[:4]}-{start[4:6]}-{start[6:]}",
        **expected,
        **POLICIES,
    }


@pytest.mark.parametrize("freq_type", [64, 128])
def test_agent_start_and_idle_schedules_are_not_mapped(freq_type: int) -> None:
    mapped = map_schedule(schedule(freq_type=freq_type, freq_interval=0), "UTC")
    assert mapped.config is None
    assert f"freq_type {freq_type}" in mapped.reason


def test_a_window_across_midnight_is_not_mapped() -> None:
    mapped = map_schedule(
        schedule(
            freq_subday_type=8,
            freq_subday_interval=1,
            active_start_time=220000,
            active_end_time=20000,
        ),
        "UTC",
    )
    assert mapped.config is None and "crosses midnight" in mapped.reason


FREQUENCIES = {
    4: ({"freq_interval": 2}, "daily"),
    8: ({"freq_interval": 42, "freq_recurrence_factor": 2}, "weekly"),
    16: ({"freq_interval": 15, "freq_recurrence_factor": 1}, "monthly"),
    32: (
        {"freq_interval": 9, "freq_relative_interval": 16, "freq_recurrence_factor": 1},
        "monthly_relative",
    ),
}
SUBDAYS = {
    1: ({}, {"at": "06:45:10"}),
    2: (
        {"freq_subday_interval": 20},
        {"repeat": {"every": 20, "unit": "seconds", "from": "06:45:10", "until": "17:00:00"}},
    ),
    4: (
        {"freq_subday_interval": 30},
        {"repeat": {"every": 30, "unit": "minutes", "from": "06:45:10", "until": "17:00:00"}},
    ),
    8: (
        {"freq_subday_interval": 2},
        {"repeat": {"every": 2, "unit": "hours", "from": "06:45:10", "until": "17:00:00"}},
    ),
}


@pytest.mark.parametrize("freq_type", sorted(FREQUENCIES))
@pytest.mark.parametrize("subday_type", sorted(SUBDAYS))
def test_every_frequency_with_every_subday_type(freq_type: int, subday_type: int) -> None:
    columns, frequency = FREQUENCIES[freq_type]
    subday_columns, times = SUBDAYS[subday_type]
    row = schedule(
        freq_type=freq_type,
        freq_subday_type=subday_type,
        active_start_time=64510,
        active_end_time=170000,
        **columns,
        **subday_columns,
    )
    assert schedule_errors(row, "s") == []
    config = map_schedule(row, "UTC").config
    assert config is not None
    assert config["frequency"] == frequency
    assert {k: config[k] for k in ("at", "repeat") if k in config} == times
    assert (
        build_job_schedule(
            "UTC",
            None,
            [{"name": "s", "schedule_config": config}],
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        ).next_fire(datetime(2026, 1, 1, tzinfo=UTC))
        is not None
    )


def test_a_one_time_schedule_in_a_dst_gap_fires_when_the_gap_ends() -> None:
    mapped = map_schedule(
        schedule(freq_type=1, active_start_date=20270328, active_start_time=13000),
        "Europe/London",
    )
    assert mapped.config == {"type": "once", "at": "2027-03-28T02:00:00", **POLICIES}
    assert "does not exist in Europe/London" in mapped.warnings[0]


def test_fortnightly_with_sunday_carries_a_warning() -> None:
    mapped = map_schedule(
        schedule(freq_type=8, freq_interval=1 + 2, freq_recurrence_factor=2), "UTC"
    )
    assert mapped.config is not None and mapped.config["weekdays"] == ["monday", "sunday"]
    assert "weeks here start on Monday" in mapped.warnings[0]


@pytest.mark.parametrize(
    ("columns", "field", "words"),
    [
        ({"freq_type": 2}, "freq_type", "unknown freq_type 2"),
        ({"active_start_date": 20260230}, "active_start_date", "not a date"),
        ({"active_start_date": 2026}, "active_start_date", "not a date"),
        ({"active_end_date": 20251231}, "active_end_date", "before active_start_date"),
        ({"active_start_time": 126000}, "active_start_time", "not a time"),
        ({"active_end_time": 240000}, "active_end_time", "not a time"),
        ({"freq_interval": 0}, "freq_interval", "every N days"),
        ({"freq_type": 8, "freq_interval": 0}, "freq_interval", "bitmask"),
        ({"freq_type": 16, "freq_interval": 32}, "freq_interval", "day of the month"),
        (
            {"freq_type": 32, "freq_interval": 11, "freq_relative_interval": 1},
            "freq_interval",
            "weekend day",
        ),
        (
            {"freq_type": 32, "freq_interval": 6, "freq_relative_interval": 3},
            "freq_relative_interval",
            "16 last",
        ),
        ({"freq_subday_type": 16}, "freq_subday_type", "8 (hours)"),
        (
            {"freq_subday_type": 4, "freq_subday_interval": 0},
            "freq_subday_interval",
            "N from 1 to 1440",
        ),
    ],
)
def test_bad_schedule_rows_name_the_column(columns: dict[str, Any], field: str, words: str) -> None:
    errors = schedule_errors(schedule(**columns), "export.sysschedules[0]")
    assert [e.field for e in errors] == [f"export.sysschedules[0].{field}"]
    assert words in errors[0].message


# -- next fires as SQL Server Agent's --------------------------------------------------------------
def fires(definition: dict[str, Any], after: str, count: int) -> list[str]:
    schedule_ = build_job_schedule(
        definition["timezone"],
        None,
        definition["schedules"],
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    start = datetime.fromisoformat(after)
    return [f.at.astimezone(UTC).isoformat() for f in upcoming(schedule_, start, count)]


def test_next_fires_are_sql_agents() -> None:
    jobs = jobs_by_id()
    # Every other week from the week of Monday 5 January 2026: Mon, Wed, Fri at 01:30 GMT.
    assert fires(jobs["nightly-etl"], "2026-01-06T00:00:00+00:00", 5) == [
        "2026-01-07T01:30:00+00:00",  # msdb next_run_date 20260107, next_run_time 13000
        "2026-01-09T01:30:00+00:00",
        "2026-01-19T01:30:00+00:00",
        "2026-01-21T01:30:00+00:00",
        "2026-01-23T01:30:00+00:00",
    ]
    # Every 15 minutes 08:00-18:00 (18:00 included) Monday to Friday.
    assert fires(jobs["intraday-feed"], "2026-01-09T17:50:00+00:00", 3) == [
        "2026-01-09T18:00:00+00:00",
        "2026-01-12T08:00:00+00:00",  # msdb next_run_date 20260112, next_run_time 80000
        "2026-01-12T08:15:00+00:00",
    ]
    # The last Friday of each month at 23:00 London (BST from 29 March).
    assert fires(jobs["month-end-close"], "2026-01-01T00:00:00+00:00", 4) == [
        "2026-01-30T23:00:00+00:00",  # msdb next_run_date 20260130, next_run_time 230000
        "2026-02-27T23:00:00+00:00",
        "2026-03-27T23:00:00+00:00",
        "2026-04-24T22:00:00+00:00",
    ]


# -- jobs, steps, routing --------------------------------------------------------------------------
def test_three_step_job_keeps_routing_retries_and_tokens() -> None:
    etl = jobs_by_id()["nightly-etl"]
    assert etl["enabled"] is True and etl["timezone"] == "Europe/London"
    assert etl["timeout_seconds"] == 7200
    extract, load, report = etl["steps"]
    assert [s["step_id"] for s in etl["steps"]] == ["step_1", "step_2", "step_3"]
    assert extract["on_success"] == "next" and extract["on_failure"] == "quit_failure"
    assert load["on_success"] == "quit_success"
    assert load["on_failure"] == "next"  # goto step 3, which follows it
    assert load["retry_attempts"] == 2 and load["retry_interval_seconds"] == 300
    assert report["on_success"] == "quit_failure" and report["on_failure"] == "quit_failure"
    assert extract["connection_name"] == "warehouse"  # "SQLPROD01/DW"
    assert report["connection_name"] == "ops"  # "Ops" matched case-insensitively
    assert extract["transaction"] is False and "transaction" not in report
    assert extract["query"] == (
        "INSERT INTO etl.runs (job, started) VALUES (:agent_job_name, :agent_start_date);\n"
        "SELECT CONVERT(char(8), GETDATE(), 108) AS at_hms;"
    )
    assert extract["parameters"] == {
        "agent_job_name": {"$from": "job.job_name"},
        "agent_start_date": {"$from": "run.logical_date"},
    }
    assert load["query"] == "EXEC etl.load_day @job_id = :agent_job_id;"
    assert query_parameter_names(extract["query"]) == {"agent_job_name", "agent_start_date"}
    assert all(s["timeout"] == 7200 for s in etl["steps"])
    assert etl["metadata"]["sql_agent"]["job_id"] == msdb.ETL
    assert etl["schedules"][0]["name"] == "MWF-01:30-fortnightly"


def test_start_step_goes_first_and_routes_keep_their_targets() -> None:
    close = jobs_by_id()["month-end-close"]
    assert [s["step_id"] for s in close["steps"]] == ["step_2", "step_1", "step_3"]
    books, notify, totals = close["steps"]
    assert books["type"] == "powershell"
    assert books["on_success"] == {"goto": "step_3"}  # "next" in msdb: step 3
    assert notify["on_success"] == "quit_success"
    assert totals["on_failure"] == {"goto": "step_1"}
    assert books["script"] == (
        'param($SqlAgentJobName)\nWrite-Output "closing for ${SqlAgentJobName}"'
    )
    assert books["parameters"] == {"SqlAgentJobName": {"$from": "job.job_name"}}


@pytest.mark.parametrize(
    ("success", "fail", "expected"),
    [
        ((1, 0), (2, 0), ("quit_success", "quit_failure")),
        ((2, 0), (1, 0), ("quit_failure", "quit_success")),
        ((3, 0), (3, 0), ("next", "next")),
        ((4, 3), (4, 1), ({"goto": "step_3"}, {"goto": "step_1"})),
        ((4, 2), (3, 0), ("next", "next")),
    ],
)
def test_action_codes(success: tuple[int, int], fail: tuple[int, int], expected: Any) -> None:
    data = msdb.export()
    step = data["sysjobsteps"][0]  # Nightly ETL step 1 of 3
    step.update(
        on_success_action=success[0],
        on_success_step_id=success[1],
        on_fail_action=fail[0],
        on_fail_step_id=fail[1],
    )
    first = jobs_by_id(data)["nightly-etl"]["steps"][0]
    assert (first["on_success"], first["on_failure"]) == expected


def test_go_to_the_next_step_from_the_last_step_quits() -> None:
    data = msdb.export()
    data["sysjobsteps"][2].update(on_success_action=3, on_fail_action=3)
    last = jobs_by_id(data)["nightly-etl"]["steps"][2]
    assert (last["on_success"], last["on_failure"]) == ("quit_success", "quit_failure")


def test_retries_beyond_the_limits_are_cut_and_reported() -> None:
    data = msdb.export()
    data["sysjobsteps"][1].update(retry_attempts=500, retry_interval=90)
    result = plan(data)
    load = next(j for j in result.jobs if j.name == "Nightly ETL").definition["steps"][1]
    assert load["retry_attempts"] == 100 and load["retry_interval_seconds"] == 3600
    kinds = {(e.kind, e.source) for e in result.report if e.step == 2 and e.job == "Nightly ETL"}
    assert ("retry_attempts", "sysjobsteps[1].retry_attempts") in kinds
    assert ("retry_interval", "sysjobsteps[1].retry_interval") in kinds


def test_disabled_jobs_and_schedules_keep_their_flags() -> None:
    data = msdb.export()
    data["sysschedules"][3]["enabled"] = 0
    archive = jobs_by_id(data)["archive-logs"]
    assert archive["enabled"] is False
    assert archive["steps"][0]["type"] == "shell"
    assert [(s["name"], s["enabled"]) for s in archive["schedules"]] == [("Daily-03:00", False)]


def test_job_id_prefix_and_names_made_unique() -> None:
    data = msdb.export()
    data["sysjobs"][1]["name"] = "nightly etl"  # "Nightly ETL" too, once made a job_id
    result = plan(data, ImportOptions("UTC", OPTIONS.connection_map, job_id_prefix="agent-"))
    ids = [j.definition["job_id"] for j in result.jobs]
    assert ids[:2] == [
        f"agent-nightly-etl-{msdb.ETL.lower()}",
        f"agent-nightly-etl-{msdb.FEED.lower()}",
    ]
    assert ids[2:] == ["agent-month-end-close", "agent-archive-logs"]


# -- the report ------------------------------------------------------------------------------------
def test_everything_not_carried_over_is_reported() -> None:
    result = plan()
    assert sorted(j.name for j in result.jobs) == [
        "Archive logs",
        "Intraday feed",
        "Month end close",
        "Nightly ETL",
    ]
    entries = {(e.job, e.step, e.schedule, e.kind, e.outcome, e.source) for e in result.report}
    assert entries == {
        ("Nightly ETL", 1, None, "token", Outcome.TRANSLATED, "sysjobsteps[0].command"),
        ("Nightly ETL", 2, None, "token", Outcome.TRANSLATED, "sysjobsteps[1].command"),
        ("Nightly ETL", 3, None, "token", Outcome.NOT_CARRIED_OVER, "sysjobsteps[2].command"),
        (
            "Month end close",
            None,
            None,
            "notification",
            Outcome.NOT_CARRIED_OVER,
            "sysjobs[2].notify_level_email",
        ),
        ("Month end close", 2, None, "token", Outcome.TRANSLATED, "sysjobsteps[5].command"),
        ("Archive logs", 1, None, "proxy", Outcome.NOT_CARRIED_OVER, "sysjobsteps[7].proxy_id"),
        (
            "Archive logs",
            1,
            None,
            "output_file",
            Outcome.NOT_CARRIED_OVER,
            "sysjobsteps[7].output_file_name",
        ),
        ("Archive logs", 1, None, "cmdexec", Outcome.CHECK, "sysjobsteps[7].command"),
        ("Archive logs", 1, None, "token", Outcome.TRANSLATED, "sysjobsteps[7].command"),
        (
            "Archive logs",
            None,
            "When the agent starts",
            "schedule",
            Outcome.SCHEDULE_NOT_IMPORTED,
            "sysschedules[4].freq_type",
        ),
        (
            "SSIS package",
            1,
            None,
            "subsystem",
            Outcome.JOB_NOT_IMPORTED,
            "sysjobsteps[8].subsystem",
        ),
    }
    srvr = next(e for e in result.report if e.step == 3 and e.job == "Nightly ETL")
    assert srvr.message == "$(SRVR) has no counterpart here; left in the text as it is"
    strtdt = [e.message for e in result.report if e.step == 1 and e.job == "Nightly ETL"]
    assert any("$(STRTDT)" in m and "YYYY-MM-DD" in m for m in strtdt)


@pytest.mark.parametrize(
    "subsystem",
    [
        "SSIS",
        "Distribution",
        "Snapshot",
        "LogReader",
        "Merge",
        "QueueReader",
        "ANALYSISQUERY",
        "ANALYSISCOMMAND",
        "ActiveScripting",
    ],
)
def test_unsupported_subsystems_leave_the_job_out(subsystem: str) -> None:
    data = msdb.export()
    data["sysjobsteps"][3]["subsystem"] = subsystem  # Intraday feed's only step
    result = plan(data)
    assert "intraday-feed" not in {j.definition["job_id"] for j in result.jobs}
    [entry] = [e for e in result.report if e.job == "Intraday feed"]
    assert entry.outcome is Outcome.JOB_NOT_IMPORTED and subsystem in entry.message


def test_an_unmapped_database_leaves_the_job_out() -> None:
    result = plan(options=ImportOptions("UTC", {"DW": "warehouse"}))
    assert "nightly-etl" not in {j.definition["job_id"] for j in result.jobs}
    [entry] = [e for e in result.report if e.kind == "unmapped_database"]
    assert (entry.job, entry.step, entry.source) == (
        "Nightly ETL",
        3,
        "sysjobsteps[2].database_name",
    )
    assert "'SQLPROD01/Ops' or 'Ops'" in entry.message


def test_a_job_without_steps_is_reported() -> None:
    data = msdb.export()
    data["sysjobsteps"] = [s for s in data["sysjobsteps"] if s["job_id"] != msdb.FEED]
    [entry] = [e for e in plan(data).report if e.job == "Intraday feed"]
    assert (entry.kind, entry.outcome, entry.source) == (
        "no_steps",
        Outcome.JOB_NOT_IMPORTED,
        "sysjobs[1]",
    )


# -- bad exports: every problem, each naming row and column ----------------------------------------
def test_bad_export_names_every_row_and_column() -> None:
    data = msdb.export()
    data["sysjobs"][0]["start_step_id"] = 9
    data["sysjobsteps"][1]["on_fail_step_id"] = 7
    data["sysjobsteps"][2]["on_success_action"] = 5
    data["sysjobsteps"][3]["job_id"] = "00000000-0000-0000-0000-000000000000"
    data["sysschedules"][0]["freq_type"] = 2
    data["sysschedules"][1]["active_start_date"] = 20261301
    data["sysjobschedules"][0]["schedule_id"] = 99
    with pytest.raises(ConfigurationError) as info:
        plan(data)
    assert {e.field for e in info.value.errors} == {
        "export.sysjobs[0].start_step_id",
        "export.sysjobsteps[1].on_fail_step_id",
        "export.sysjobsteps[2].on_success_action",
        "export.sysjobsteps[3].job_id",
        "export.sysschedules[0].freq_type",
        "export.sysschedules[1].active_start_date",
        "export.sysjobschedules[0].schedule_id",
    }


# -- tokens ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("command", "query", "names", "left"),
    [
        ("SELECT '$(ESCAPE_SQUOTE(JOBNAME))'", "SELECT :agent_job_name", {"agent_job_name"}, []),
        ("SELECT N'$(JOBNAME)'", "SELECT :agent_job_name", {"agent_job_name"}, []),
        ("EXEC p $(ESCAPE_NONE(JOBID))", "EXEC p :agent_job_id", {"agent_job_id"}, []),
        (
            "SELECT '$(STRTDT) $(STRTTM)'",
            "SELECT '$(STRTDT) $(STRTTM)'",
            set(),
            ["STRTDT", "STRTTM"],
        ),
        (
            "SELECT [$(ESCAPE_RBRACKET(JOBNAME))]",
            "SELECT [$(ESCAPE_RBRACKET(JOBNAME))]",
            set(),
            ["JOBNAME"],
        ),
        ("-- $(JOBNAME)\nSELECT 1", "-- $(JOBNAME)\nSELECT 1", set(), []),
        ("SELECT '$(DATE)'", "SELECT '$(DATE)'", set(), ["DATE"]),
        (
            "SELECT 'a :b', x::int FROM t WHERE c = ':d'",
            "SELECT 'a \\:b', x::int FROM t WHERE c = '\\:d'",
            set(),
            [],
        ),
        (
            "SELECT '10:30:00', '$(WMI(State))'",
            "SELECT '10:30:00', '$(WMI(State))'",
            set(),
            ["WMI(State)"],
        ),
        ("SELECT '$(NOTATOKEN)'", "SELECT '$(NOTATOKEN)'", set(), []),
    ],
)
def test_sql_tokens(command: str, query: str, names: set[str], left: list[str]) -> None:
    out = translate_sql(command)
    assert out.text == query
    assert set(out.parameters) == names
    assert query_parameter_names(out.text) == names
    assert [n.token for n in out.notes if n.reference is None] == left


@pytest.mark.parametrize(
    ("command", "script"),
    [
        ("echo $(JOBID)", 'echo "${SQLAGENT_JOBID}"'),
        ('echo "job $(JOBNAME)"', 'echo "job ${SQLAGENT_JOBNAME}"'),
        ("echo 'job $(JOBNAME)'", "echo 'job '\"${SQLAGENT_JOBNAME}\"''"),
        ("echo $(SRVR) # $(JOBID)", "echo $(SRVR) # $(JOBID)"),
    ],
)
def test_cmdexec_tokens_become_environment_variables(command: str, script: str) -> None:
    assert translate_shell(command).text == script


@pytest.mark.parametrize(
    ("command", "script", "left"),
    [
        (
            '"$(JOBNAME)"; $(STRTTM)',
            "param($SqlAgentJobName, $SqlAgentStartTime)\n"
            '"${SqlAgentJobName}"; ${SqlAgentStartTime}',
            [],
        ),
        ("'$(JOBNAME)'", "'$(JOBNAME)'", ["JOBNAME"]),
        ('param($x)\n"$(JOBNAME)"', 'param($x)\n"$(JOBNAME)"', ["JOBNAME"]),
        ("$(Get-Date); $($x.Name)", "$(Get-Date); $($x.Name)", []),
        (
            'using namespace System.IO\n"$(JOBID)"',
            'using namespace System.IO\n"$(JOBID)"',
            ["JOBID"],
        ),
    ],
)
def test_powershell_tokens_become_script_parameters(
    command: str, script: str, left: list[str]
) -> None:
    out = translate_powershell(command)
    assert out.text == script
    assert [n.token for n in out.notes if n.reference is None] == left


def test_a_steps_server_column_picks_the_server_database_key() -> None:
    data = msdb.export()
    data["sysjobsteps"][3]["server"] = "SQLREPORT02"  # Intraday feed's step, database DW
    options = ImportOptions(
        "UTC",
        {"sqlreport02/dw": "reports", "SQLPROD01/DW": "warehouse", "DW": "fallback", "Ops": "o"},
    )
    jobs = {j.definition["job_id"]: j.definition for j in plan(data, options).jobs}
    assert jobs["intraday-feed"]["steps"][0]["connection_name"] == "reports"
    assert jobs["nightly-etl"]["steps"][0]["connection_name"] == "warehouse"
