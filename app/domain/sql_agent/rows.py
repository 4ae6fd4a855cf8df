"""The rows of an msdb export, with msdb's own column names and value encodings.

Each model lists the columns the importer reads; every other column of msdb (a real export
carries many: ``owner_sid``, ``category_id``, ``date_created``, ``flags``, ...) is accepted
and ignored (``extra="ignore"``), so ``SELECT *`` exports work. Values are checked as msdb
types them (``tinyint``/``int`` as integers, ``uniqueidentifier`` as text), not coerced: a
``"3"`` where msdb has an int is a mistake in the export and is reported.

Column meanings follow Microsoft's documentation of ``dbo.sysjobs``, ``dbo.sysjobsteps``,
``dbo.sysschedules`` and ``dbo.sysjobschedules``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

_ROW = ConfigDict(extra="ignore", strict=True)


def _bit(value: object) -> object:
    # FOR JSON writes a bit column as true/false; a hand-made export may write 0/1.
    if value in (0, 1) and not isinstance(value, bool):
        return bool(value)
    return value


Bit = Annotated[bool, BeforeValidator(_bit)]
JobGuid = Annotated[str, Field(min_length=1, max_length=64)]


class SysJobRow(BaseModel):
    """A row of ``msdb.dbo.sysjobs``: one job."""

    model_config = _ROW

    job_id: JobGuid = Field(description="The job's uniqueidentifier.")
    name: str = Field(min_length=1, max_length=128, description="The job's name (unique).")
    enabled: Bit = Field(description="1: the job's schedules fire.")
    description: str | None = Field(None, max_length=10_000)
    start_step_id: int = Field(1, ge=1, description="The step the job starts at.")
    originating_server: str | None = Field(
        None,
        max_length=128,
        description="The server the job runs on (``SERVERPROPERTY('ServerName')`` in the "
        "README's export query, as ``sysjobs_view.originating_server`` has it): the server "
        'half of a ``"server/database"`` key of `connection_map`.',
    )
    notify_level_email: int = Field(0, ge=0, le=3)
    notify_level_page: int = Field(0, ge=0, le=3)
    notify_level_netsend: int = Field(0, ge=0, le=3)
    notify_level_eventlog: int = Field(0, ge=0, le=3)
    delete_level: int = Field(0, ge=0, le=3)


class SysJobStepRow(BaseModel):
    """A row of ``msdb.dbo.sysjobsteps``: one step of a job."""

    model_config = _ROW

    job_id: JobGuid
    step_id: int = Field(ge=1, description="The step's number within its job (1, 2, ...).")
    step_name: str = Field(min_length=1, max_length=128)
    subsystem: str = Field(
        min_length=1,
        max_length=40,
        description="TSQL, PowerShell, CmdExec, SSIS, ANALYSISQUERY, ANALYSISCOMMAND, "
        "Distribution, Snapshot, LogReader, Merge, QueueReader, ActiveScripting.",
    )
    command: str | None = Field(None, description="The step's command text.")
    database_name: str | None = Field(None, max_length=128, description="TSQL steps only.")
    database_user_name: str | None = Field(None, max_length=128)
    server: str | None = Field(None, max_length=128)
    on_success_action: int = Field(
        1,
        description="1 quit reporting success, 2 quit reporting failure, 3 go to the next "
        "step, 4 go to step on_success_step_id.",
    )
    on_success_step_id: int = 0
    on_fail_action: int = Field(2, description="As on_success_action.")
    on_fail_step_id: int = 0
    retry_attempts: int = Field(0, ge=0)
    retry_interval: int = Field(0, ge=0, description="Minutes between retry attempts.")
    output_file_name: str | None = Field(None, max_length=200)
    proxy_id: int | None = None


class SysScheduleRow(BaseModel):
    """A row of ``msdb.dbo.sysschedules``: one schedule (several jobs may share it)."""

    model_config = _ROW

    schedule_id: int
    name: str = Field(min_length=1, max_length=128)
    enabled: Bit
    freq_type: int = Field(
        description="1 once, 4 daily, 8 weekly, 16 monthly, 32 monthly relative, 64 when "
        "SQL Server Agent starts, 128 when the computer is idle."
    )
    freq_interval: int = Field(
        0,
        description="daily: every N days; weekly: days as a bitmask (1 Sunday, 2 Monday, 4 "
        "Tuesday, 8 Wednesday, 16 Thursday, 32 Friday, 64 Saturday); monthly: the day of the "
        "month; monthly relative: 1-7 Sunday-Saturday, 8 day, 9 weekday, 10 weekend day.",
    )
    freq_subday_type: int = Field(
        0, description="1 at active_start_time, 2 seconds, 4 minutes, 8 hours."
    )
    freq_subday_interval: int = Field(0, description="Every how many seconds/minutes/hours.")
    freq_relative_interval: int = Field(
        0, description="monthly relative: 1 first, 2 second, 4 third, 8 fourth, 16 last."
    )
    freq_recurrence_factor: int = Field(
        0, description="weekly / monthly: every N weeks or months (0 counts as 1)."
    )
    active_start_date: int = Field(description="yyyymmdd: the first day it may fire.")
    active_end_date: int = Field(99991231, description="yyyymmdd: the last day (inclusive).")
    active_start_time: int = Field(0, description="hhmmss: the time, or the window's start.")
    active_end_time: int = Field(235959, description="hhmmss: the window's end (inclusive).")


class SysJobScheduleRow(BaseModel):
    """A row of ``msdb.dbo.sysjobschedules``: a schedule attached to a job."""

    model_config = _ROW

    job_id: JobGuid
    schedule_id: int
    next_run_date: int | None = Field(None, description="yyyymmdd (informational).")
    next_run_time: int | None = Field(None, description="hhmmss (informational).")
