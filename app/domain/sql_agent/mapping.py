"""An msdb export as job definitions, and a report of everything that was not carried over.

``plan_import`` first checks the export as a whole and raises one ``ConfigurationError``
naming every bad row and column (``export.sysjobsteps[4].on_fail_step_id``); then it maps
each job (see the README, "Moving from SQL Server Agent"):

* steps, ordered by ``step_id``, become ``step_<step_id>``: TSQL -> ``sql`` on the connection
  ``connection_map`` names for ``"server/database"`` or ``database`` (on a SQL Server
  connection with ``"transaction": false``: each batch commits as it runs, as in SQL Server
  Agent, which wraps a step in no transaction), PowerShell ->
  ``powershell``, CmdExec -> ``shell``; ``retry_attempts`` / ``retry_interval`` (minutes)
  -> ``retry_attempts`` / ``retry_interval_seconds``; the step timeout is the job's.
* action codes: 1 ``quit_success``, 2 ``quit_failure``, 3 the next step by ``step_id`` (from
  the last step: quit reporting success, or failure, as SQL Server Agent's editor makes it),
  4 ``{"goto": "step_<n>"}``.
* ``start_step_id``: a stored job starts at its first step, so the start step is put first
  and the others follow in their order; every route keeps its target (``"next"`` where the
  target is the step that follows, a ``goto`` otherwise), so the job runs the same steps in
  the same order as in SQL Server Agent.
* schedules (``app.domain.sql_agent.schedules``) become named schedules with their
  ``enabled`` flag; the job keeps its ``enabled`` flag.

A job with a step that cannot run here (a subsystem without a counterpart, a T-SQL database
``connection_map`` does not name) is not imported; the report says why. Everything else
that is not carried over (proxies, output files, notifications, schedules of freq_type 64
and 128, tokens without a counterpart) is imported without it and reported.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from app.domain.errors import ConfigurationError, FieldError
from app.domain.sql_agent.checks import SUBSYSTEMS, export_errors
from app.domain.sql_agent.export import SqlAgentExport
from app.domain.sql_agent.rows import SysJobRow, SysJobStepRow, SysScheduleRow
from app.domain.sql_agent.schedules import map_schedule
from app.domain.sql_agent.tokens import (
    Translated,
    translate_powershell,
    translate_shell,
    translate_sql,
)

ACTIONS = {1: "quit_success", 2: "quit_failure", 3: "next", 4: "goto"}
MAX_RETRY_ATTEMPTS = 100
MAX_RETRY_INTERVAL_SECONDS = 3600
MAX_JOB_ID = 100
DEFAULT_DATABASE = "master"
_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")
_SCHEDULE_SLUG = re.compile(r"[^A-Za-z0-9_.:-]+")


class Outcome(StrEnum):
    """What happened to the thing a report entry names."""

    JOB_NOT_IMPORTED = "job_not_imported"
    SCHEDULE_NOT_IMPORTED = "schedule_not_imported"
    NOT_CARRIED_OVER = "not_carried_over"
    TRANSLATED = "translated"
    CHECK = "check"


@dataclass(frozen=True)
class ImportOptions:
    """How to map: the zone SQL Server Agent's times are in, connections by database,
    a job id prefix, and the step and job timeout."""

    timezone: str
    connection_map: Mapping[str, str] = field(default_factory=dict)
    job_id_prefix: str = ""
    timeout_seconds: int = 86_400
    #: Connections on which an imported T-SQL step lets each batch commit as it runs
    #: (``"transaction": false``), as SQL Server Agent runs a step: the SQL Server ones
    #: that are not read_only.
    batch_commit: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ReportEntry:
    """One thing not carried over as it was. ``source`` is its row and column in the export
    (``sysjobsteps[4].subsystem``); ``job`` is SQL Server Agent's job name, ``job_id`` the
    id here, ``step`` the msdb step_id, ``schedule`` the msdb schedule name."""

    kind: str
    outcome: Outcome
    message: str
    source: str
    job: str
    job_id: str
    step: int | None = None
    step_name: str | None = None
    schedule: str | None = None


@dataclass
class PlannedJob:
    """A job to store (``definition``: a job creation body) from ``sysjobs[row]``."""

    row: int
    agent_job_id: str
    name: str
    definition: dict[str, Any]


@dataclass
class ImportPlan:
    jobs: list[PlannedJob]
    report: list[ReportEntry]


# -- mapping --------------------------------------------------------------------------------
def plan_import(export: SqlAgentExport, options: ImportOptions) -> ImportPlan:
    """The jobs to store and the report; ``ConfigurationError`` naming every bad row."""
    errors = export_errors(export)
    if errors:
        raise ConfigurationError([FieldError(f"export.{e.field}", e.message) for e in errors])
    steps_of: dict[str, list[tuple[int, SysJobStepRow]]] = {}
    for i, step in enumerate(export.sysjobsteps):
        steps_of.setdefault(step.job_id.lower(), []).append((i, step))
    schedules = {s.schedule_id: (i, s) for i, s in enumerate(export.sysschedules)}
    links: dict[str, list[int]] = {}
    for link in export.sysjobschedules:
        links.setdefault(link.job_id.lower(), []).append(link.schedule_id)
    job_ids = _job_ids(export.sysjobs, options.job_id_prefix)
    plan = ImportPlan([], [])
    for row, job in enumerate(export.sysjobs):
        mapper = _JobMapper(row, job, job_ids[row], options, plan.report)
        steps = sorted(steps_of.get(job.job_id.lower(), []), key=lambda item: item[1].step_id)
        scheduled = [schedules[s] for s in links.get(job.job_id.lower(), [])]
        definition = mapper.map(steps, scheduled)
        if definition is not None:
            plan.jobs.append(PlannedJob(row, job.job_id, job.name, definition))
    return plan


def _job_ids(jobs: list[SysJobRow], prefix: str) -> list[str]:
    """``prefix`` + the job's name made URL-friendly (lower case, runs of other characters
    as ``-``); a name that two jobs share after that gets its msdb job_id appended."""
    slugs = [_SLUG.sub("-", job.name.lower()).strip("-.") or job.job_id.lower() for job in jobs]
    counts = Counter(slugs)
    out = []
    for job, slug in zip(jobs, slugs, strict=True):
        suffix = f"-{job.job_id.lower()}" if counts[slug] > 1 else ""
        out.append(prefix + slug[: MAX_JOB_ID - len(prefix) - len(suffix)] + suffix)
    return out


class _JobMapper:
    def __init__(
        self,
        row: int,
        job: SysJobRow,
        job_id: str,
        options: ImportOptions,
        report: list[ReportEntry],
    ) -> None:
        self.row, self.job, self.job_id, self.options = row, job, job_id, options
        self.report = report
        self.fatal = False

    def note(
        self,
        kind: str,
        outcome: Outcome,
        message: str,
        source: str,
        *,
        step: SysJobStepRow | None = None,
        schedule: str | None = None,
    ) -> None:
        if outcome is Outcome.JOB_NOT_IMPORTED:
            self.fatal = True
        self.report.append(
            ReportEntry(
                kind=kind,
                outcome=outcome,
                message=message,
                source=source,
                job=self.job.name,
                job_id=self.job_id,
                step=step.step_id if step is not None else None,
                step_name=step.step_name if step is not None else None,
                schedule=schedule,
            )
        )

    def map(
        self, steps: list[tuple[int, SysJobStepRow]], schedules: list[tuple[int, SysScheduleRow]]
    ) -> dict[str, Any] | None:
        job, here = self.job, f"sysjobs[{self.row}]"
        if not steps:
            self.note("no_steps", Outcome.JOB_NOT_IMPORTED, "the job has no steps", here)
            return None
        self._job_notes(here)
        start = next(s for _, s in steps if s.step_id == job.start_step_id)
        order = [start] + [s for _, s in steps if s is not start]
        mapped = [self._step(i, step, steps, order) for i, step in steps]
        by_id = {step.step_id: m for (_, step), m in zip(steps, mapped, strict=True)}
        named = self._schedules(schedules)
        if self.fatal:
            return None
        definition: dict[str, Any] = {
            "job_id": self.job_id,
            "job_name": job.name,
            "description": job.description or "",
            "timezone": self.options.timezone,
            "enabled": job.enabled,
            "timeout_seconds": self.options.timeout_seconds,
            "steps": [by_id[s.step_id] for s in order],
            "metadata": {
                "sql_agent": {
                    "job_id": job.job_id,
                    "name": job.name,
                    "start_step_id": job.start_step_id,
                    "schedule_ids": {s["name"]: sid for s, sid in named},
                }
            },
        }
        if named:
            definition["schedules"] = [s for s, _ in named]
        return definition

    def _job_notes(self, here: str) -> None:
        job = self.job
        for column, what in (
            ("notify_level_email", "e-mail"),
            ("notify_level_page", "pager"),
            ("notify_level_netsend", "net send"),
        ):
            if getattr(job, column):
                self.note(
                    "notification",
                    Outcome.NOT_CARRIED_OVER,
                    f"SQL Server Agent notifies an operator by {what}: set the job's "
                    "`notifications` (webhook or e-mail) instead",
                    f"{here}.{column}",
                )
        if job.delete_level:
            self.note(
                "delete_level",
                Outcome.NOT_CARRIED_OVER,
                "SQL Server Agent deletes this job after it runs; here it stays",
                f"{here}.delete_level",
            )

    def _step(
        self,
        i: int,
        step: SysJobStepRow,
        steps: list[tuple[int, SysJobStepRow]],
        order: list[SysJobStepRow],
    ) -> dict[str, Any]:
        here = f"sysjobsteps[{i}]"
        kind = SUBSYSTEMS.get(step.subsystem.lower())
        out: dict[str, Any] = {
            "step_id": f"step_{step.step_id}",
            "step_name": step.step_name,
            "type": kind or "shell",
            "timeout": self.options.timeout_seconds,
            "on_success": self._route(
                step, step.on_success_action, step.on_success_step_id, steps, order, success=True
            ),
            "on_failure": self._route(
                step, step.on_fail_action, step.on_fail_step_id, steps, order, success=False
            ),
        }
        self._retries(here, step, out)
        if step.proxy_id:
            self.note(
                "proxy",
                Outcome.NOT_CARRIED_OVER,
                f"SQL Server Agent runs this step as proxy {step.proxy_id}; here it runs as "
                "the service's own user (or the connection's login)",
                f"{here}.proxy_id",
                step=step,
            )
        if step.output_file_name:
            self.note(
                "output_file",
                Outcome.NOT_CARRIED_OVER,
                f"the output file {step.output_file_name!r} is not written; the step's "
                "output is in the execution history",
                f"{here}.output_file_name",
                step=step,
            )
        command = step.command or ""
        if kind is None:
            self.note(
                "subsystem",
                Outcome.JOB_NOT_IMPORTED,
                f"the {step.subsystem} subsystem has no step type here (TSQL, PowerShell "
                "and CmdExec do)",
                f"{here}.subsystem",
                step=step,
            )
            return out
        if kind == "sql":
            translated = translate_sql(command)
            out["query"] = translated.text
            connection = self._connection(here, step)
            if connection is not None:
                out["connection_name"] = connection
                if connection in self.options.batch_commit:
                    out["transaction"] = False
            if step.database_user_name:
                self.note(
                    "database_user",
                    Outcome.NOT_CARRIED_OVER,
                    f"SQL Server Agent runs this step as database user "
                    f"{step.database_user_name!r}; here it runs as the connection's login",
                    f"{here}.database_user_name",
                    step=step,
                )
        elif kind == "powershell":
            translated = translate_powershell(command)
            out["script"] = translated.text
        else:
            translated = translate_shell(command)
            out["script"] = translated.text
            self.note(
                "cmdexec",
                Outcome.CHECK,
                "SQL Server Agent runs CmdExec commands with cmd.exe on Windows; here the "
                "command runs with /bin/sh: check it",
                f"{here}.command",
                step=step,
            )
        if translated.parameters:
            out["parameters"] = translated.parameters
        self._token_notes(here, step, translated)
        return out

    def _route(
        self,
        step: SysJobStepRow,
        action: int,
        target: int,
        steps: list[tuple[int, SysJobStepRow]],
        order: list[SysJobStepRow],
        *,
        success: bool,
    ) -> str | dict[str, str]:
        if action in (1, 2):
            return ACTIONS[action]
        if action == 3:
            numbers = [s.step_id for _, s in steps]
            position = numbers.index(step.step_id)
            if position + 1 == len(numbers):
                return "quit_success" if success else "quit_failure"
            target = numbers[position + 1]
        here = order.index(step)
        if here + 1 < len(order) and order[here + 1].step_id == target:
            return "next"
        return {"goto": f"step_{target}"}

    def _retries(self, here: str, step: SysJobStepRow, out: dict[str, Any]) -> None:
        if not step.retry_attempts:
            return
        attempts = min(step.retry_attempts, MAX_RETRY_ATTEMPTS)
        out["retry_attempts"] = attempts
        if attempts != step.retry_attempts:
            self.note(
                "retry_attempts",
                Outcome.NOT_CARRIED_OVER,
                f"{step.retry_attempts} retry attempts become {attempts}, the most a step has here",
                f"{here}.retry_attempts",
                step=step,
            )
        seconds = step.retry_interval * 60
        if seconds:
            out["retry_interval_seconds"] = min(seconds, MAX_RETRY_INTERVAL_SECONDS)
            if seconds > MAX_RETRY_INTERVAL_SECONDS:
                self.note(
                    "retry_interval",
                    Outcome.NOT_CARRIED_OVER,
                    f"a retry interval of {step.retry_interval} minutes becomes 60, the "
                    "longest a step has here",
                    f"{here}.retry_interval",
                    step=step,
                )

    def _connection(self, here: str, step: SysJobStepRow) -> str | None:
        database = step.database_name or DEFAULT_DATABASE
        server = step.server or self.job.originating_server
        keys = ([f"{server}/{database}"] if server else []) + [database]
        folded = {k.casefold(): name for k, name in self.options.connection_map.items()}
        for key in keys:  # "server/database" first, each exactly, then in any case
            found = self.options.connection_map.get(key) or folded.get(key.casefold())
            if found is not None:
                return found
        self.note(
            "unmapped_database",
            Outcome.JOB_NOT_IMPORTED,
            f"connection_map names no connection for {' or '.join(repr(k) for k in keys)}",
            f"{here}.database_name",
            step=step,
        )
        return None

    def _token_notes(self, here: str, step: SysJobStepRow, translated: Translated) -> None:
        for note in translated.notes:
            if note.reference is not None:
                self.note(
                    "token",
                    Outcome.TRANSLATED,
                    f'$({note.token}) is bound as {{"$from": "{note.reference}"}}: {note.reason}',
                    f"{here}.command",
                    step=step,
                )
            else:
                self.note(
                    "token",
                    Outcome.NOT_CARRIED_OVER,
                    f"$({note.token}) {note.reason}",
                    f"{here}.command",
                    step=step,
                )

    def _schedules(
        self, rows: list[tuple[int, SysScheduleRow]]
    ) -> list[tuple[dict[str, Any], int]]:
        out: list[tuple[dict[str, Any], int]] = []
        taken: set[str] = set()
        for i, row in rows:
            here = f"sysschedules[{i}]"
            mapped = map_schedule(row, self.options.timezone)
            if mapped.config is None:
                self.note(
                    "schedule",
                    Outcome.SCHEDULE_NOT_IMPORTED,
                    mapped.reason,
                    f"{here}.freq_type" if row.freq_type in (64, 128) else here,
                    schedule=row.name,
                )
                continue
            for warning in mapped.warnings:
                self.note("schedule", Outcome.CHECK, warning, here, schedule=row.name)
            name = _SCHEDULE_SLUG.sub("-", row.name).strip("-.:_")[:90]
            if not name or not name[0].isalnum():
                name = f"schedule-{row.schedule_id}"
            if name in taken:
                name = f"{name}-{row.schedule_id}"
            taken.add(name)
            out.append(
                (
                    {"name": name, "enabled": row.enabled, "schedule_config": mapped.config},
                    row.schedule_id,
                )
            )
        return out
