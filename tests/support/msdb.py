"""A realistic msdb export (the README's FOR JSON PATH query's output), written from
Microsoft's documented meanings of sysjobs, sysjobsteps, sysschedules and sysjobschedules.

Rows carry extra msdb columns (owner_sid, category_id, flags, ...) as a real export does;
times and dates keep msdb's encodings (hhmmss and yyyymmdd ints).

| job | what it exercises |
|---|---|
| Nightly ETL | three T-SQL steps, goto, retries, tokens; Mon/Wed/Fri 01:30 every 2 weeks |
| Intraday feed | every 15 minutes 08:00-18:00 on weekdays (weekly, Mon-Fri, sub-day minutes) |
| Month end close | the last Friday of every month at 23:00; a PowerShell step; start at step 2 |
| Archive logs | a disabled CmdExec job, an output file, a proxy, a schedule of freq_type 64 |
| SSIS package | an SSIS step: not imported, reported |
"""

from __future__ import annotations

import copy
from typing import Any

ETL = "6F9619FF-8B86-D011-B42D-00C04FC96401"
FEED = "6F9619FF-8B86-D011-B42D-00C04FC96402"
CLOSE = "6F9619FF-8B86-D011-B42D-00C04FC96403"
ARCHIVE = "6F9619FF-8B86-D011-B42D-00C04FC96404"
SSIS = "6F9619FF-8B86-D011-B42D-00C04FC96405"

_JOB_EXTRA = {
    "originating_server_id": 0,
    "owner_sid": "AQUAAAAAAAUVAAAA",
    "category_id": 3,
    "notify_level_eventlog": 2,
    "notify_email_operator_id": 0,
    "date_created": "2024-03-01T10:00:00",
    "date_modified": "2025-11-20T09:30:00",
    "version_number": 4,
}
_STEP_EXTRA = {
    "step_uid": "0C5F3B2A-1111-2222-3333-444455556666",
    "additional_parameters": None,
    "cmdexec_success_code": 0,
    "os_run_priority": 0,
    "flags": 0,
    "last_run_outcome": 1,
    "last_run_duration": 42,
    "last_run_retries": 0,
    "last_run_date": 20251201,
    "last_run_time": 13000,
}
_SCHEDULE_EXTRA = {
    "schedule_uid": "9A7B6C5D-0000-4000-8000-000000000001",
    "originating_server_id": 0,
    "owner_sid": "AQUAAAAAAAUVAAAA",
    "date_created": "2024-03-01T10:00:00",
    "version_number": 1,
}


def _job(job_id: str, name: str, *, enabled: int = 1, start: int = 1, **extra: Any) -> dict:
    return {
        **_JOB_EXTRA,
        "job_id": job_id,
        "name": name,
        "enabled": enabled,
        "description": f"{name} (imported from msdb)",
        "start_step_id": start,
        "originating_server": "SQLPROD01",
        **extra,
    }


def _step(job_id: str, step_id: int, name: str, command: str, **columns: Any) -> dict:
    return {
        **_STEP_EXTRA,
        "job_id": job_id,
        "step_id": step_id,
        "step_name": name,
        "subsystem": "TSQL",
        "command": command,
        "database_name": "DW",
        "on_success_action": 3,
        "on_success_step_id": 0,
        "on_fail_action": 2,
        "on_fail_step_id": 0,
        "retry_attempts": 0,
        "retry_interval": 0,
        **columns,
    }


def _schedule(schedule_id: int, name: str, **columns: Any) -> dict:
    return {
        **_SCHEDULE_EXTRA,
        "schedule_id": schedule_id,
        "name": name,
        "enabled": 1,
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


EXPORT: dict[str, Any] = {
    "sysjobs": [
        _job(ETL, "Nightly ETL"),
        _job(FEED, "Intraday feed"),
        _job(CLOSE, "Month end close", start=2, notify_level_email=2),
        _job(ARCHIVE, "Archive logs", enabled=0),
        _job(SSIS, "SSIS package"),
    ],
    "sysjobsteps": [
        # Nightly ETL: extract -> load (2 retries, 5 minutes apart; on failure go to 3),
        # 3 reports the failure and quits failed.
        _step(
            ETL,
            1,
            "Extract",
            "INSERT INTO etl.runs (job, started) VALUES (N'$(ESCAPE_SQUOTE(JOBNAME))', "
            "'$(ESCAPE_SQUOTE(STRTDT))');\nSELECT CONVERT(char(8), GETDATE(), 108) AS at_hms;",
        ),
        _step(
            ETL,
            2,
            "Load",
            "EXEC etl.load_day @job_id = $(ESCAPE_NONE(JOBID));",
            on_success_action=1,
            on_fail_action=4,
            on_fail_step_id=3,
            retry_attempts=2,
            retry_interval=5,
        ),
        _step(
            ETL,
            3,
            "Report failure",
            "EXEC etl.report_failure N'on $(ESCAPE_SQUOTE(SRVR))';",
            database_name="Ops",
            on_success_action=2,
        ),
        _step(FEED, 1, "Pull feed", "EXEC feed.pull;", on_success_action=1),
        # Month end close: SQL Agent starts at step 2; step 2 goes on to 3, 3 goes to 1 on
        # failure, 1 quits with success.
        _step(CLOSE, 1, "Notify", "EXEC close.notify;", on_success_action=1),
        _step(
            CLOSE,
            2,
            "Close books",
            'Write-Output "closing for $(ESCAPE_DQUOTE(JOBNAME))"',
            subsystem="PowerShell",
            database_name=None,
        ),
        _step(
            CLOSE,
            3,
            "Post totals",
            "EXEC close.post_totals;",
            on_success_action=1,
            on_fail_action=4,
            on_fail_step_id=1,
        ),
        _step(
            ARCHIVE,
            1,
            "Zip logs",
            "echo archiving $(ESCAPE_NONE(JOBNAME))",
            subsystem="CmdExec",
            database_name=None,
            on_success_action=1,
            output_file_name="D:\\logs\\archive.txt",
            proxy_id=3,
        ),
        _step(
            SSIS,
            1,
            "Run package",
            '/ISSERVER "\\SSISDB\\Sales\\Load\\Load.dtsx" /SERVER SQLPROD01',
            subsystem="SSIS",
            database_name=None,
            on_success_action=1,
        ),
    ],
    "sysschedules": [
        # Mon (2) + Wed (8) + Fri (32) = 42, every 2 weeks, at 01:30:00.
        _schedule(
            11,
            "MWF 01:30 fortnightly",
            freq_type=8,
            freq_interval=42,
            freq_recurrence_factor=2,
            active_start_date=20260105,
            active_start_time=13000,
        ),
        # Mon-Fri (2+4+8+16+32 = 62), every 15 minutes from 08:00:00 to 18:00:00.
        _schedule(
            12,
            "Weekdays every 15 minutes",
            freq_type=8,
            freq_interval=62,
            freq_recurrence_factor=1,
            freq_subday_type=4,
            freq_subday_interval=15,
            active_start_time=80000,
            active_end_time=180000,
        ),
        # The last (16) Friday (6) of every month at 23:00:00.
        _schedule(
            13,
            "Last Friday 23:00",
            freq_type=32,
            freq_interval=6,
            freq_relative_interval=16,
            freq_recurrence_factor=1,
            active_start_time=230000,
        ),
        _schedule(14, "Daily 03:00", freq_type=4, freq_interval=1, active_start_time=30000),
        _schedule(15, "When the agent starts", freq_type=64, freq_interval=0),
    ],
    "sysjobschedules": [
        {"job_id": ETL, "schedule_id": 11, "next_run_date": 20260107, "next_run_time": 13000},
        {"job_id": FEED, "schedule_id": 12, "next_run_date": 20260112, "next_run_time": 80000},
        {"job_id": CLOSE, "schedule_id": 13, "next_run_date": 20260130, "next_run_time": 230000},
        {"job_id": ARCHIVE, "schedule_id": 14, "next_run_date": 0, "next_run_time": 0},
        {"job_id": ARCHIVE, "schedule_id": 15, "next_run_date": 0, "next_run_time": 0},
        {"job_id": SSIS, "schedule_id": 14, "next_run_date": 20260103, "next_run_time": 30000},
    ],
}


def export() -> dict[str, Any]:
    """A fresh copy of ``EXPORT`` (tests change it)."""
    return copy.deepcopy(EXPORT)
