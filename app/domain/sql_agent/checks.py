"""The checks of an msdb export that span rows: ids that must exist, be unique, or be a
step of the job; and each schedule row's own columns (``schedules.schedule_errors``).

``export_errors`` checks a validated export. ``raw_export_errors`` checks what was sent when
some rows do not validate on their own, so that one 400 lists every problem: the rows that do
validate are checked, and the ids the others carry count as present (a step of a job whose
row has a bad column is not reported as a step of no job). Paths are relative to the export
(``sysjobsteps[4].on_fail_step_id``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from app.domain.errors import FieldError
from app.domain.sql_agent.rows import SysJobRow, SysJobScheduleRow, SysJobStepRow, SysScheduleRow
from app.domain.sql_agent.schedules import schedule_errors

#: subsystem (case-insensitive) -> step type.
SUBSYSTEMS = {"tsql": "sql", "powershell": "powershell", "cmdexec": "shell"}
ACTION_CODES = (1, 2, 3, 4)
R = TypeVar("R", bound=BaseModel)


@dataclass
class ExportRows:
    """Rows with their index in their table, and the ids rows left out still name."""

    jobs: list[tuple[int, SysJobRow]] = field(default_factory=list)
    steps: list[tuple[int, SysJobStepRow]] = field(default_factory=list)
    schedules: list[tuple[int, SysScheduleRow]] = field(default_factory=list)
    links: list[tuple[int, SysJobScheduleRow]] = field(default_factory=list)
    other_job_ids: set[str] = field(default_factory=set)
    other_steps: set[tuple[str, int | None]] = field(default_factory=set)
    other_schedule_ids: set[int | None] = field(default_factory=set)


def export_errors(export: Any) -> list[FieldError]:
    """Every cross-row problem of a validated export (``SqlAgentExport``)."""
    return row_errors(
        ExportRows(
            jobs=list(enumerate(export.sysjobs)),
            steps=list(enumerate(export.sysjobsteps)),
            schedules=list(enumerate(export.sysschedules)),
            links=list(enumerate(export.sysjobschedules)),
        )
    )


def raw_export_errors(data: Any) -> list[FieldError]:
    """The cross-row problems among the rows of ``data`` that validate on their own."""
    if not isinstance(data, Mapping):
        return []
    rows = ExportRows()
    rows.jobs = _valid(data.get("sysjobs"), SysJobRow)
    rows.steps = _valid(data.get("sysjobsteps"), SysJobStepRow)
    rows.schedules = _valid(data.get("sysschedules"), SysScheduleRow)
    rows.links = _valid(data.get("sysjobschedules"), SysJobScheduleRow)
    for raw in _raw(data.get("sysjobs")):
        if isinstance(raw.get("job_id"), str):
            rows.other_job_ids.add(raw["job_id"].lower())
    for raw in _raw(data.get("sysjobsteps")):
        if isinstance(raw.get("job_id"), str):
            rows.other_steps.add((raw["job_id"].lower(), _number(raw.get("step_id"))))
    for raw in _raw(data.get("sysschedules")):
        rows.other_schedule_ids.add(_number(raw.get("schedule_id")))
    # Nothing is checked against a table that is missing (that is the one problem there).
    if not isinstance(data.get("sysjobs"), list):
        rows.steps, rows.links = [], []
    if not isinstance(data.get("sysschedules"), list):
        rows.links = []
    return row_errors(rows)


def _number(value: Any) -> int | None:
    """An id as msdb has it (an int), also when a row writes it as text ("3"); None when
    it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else None


def _raw(rows: Any) -> list[Mapping[str, Any]]:
    return [r for r in rows if isinstance(r, Mapping)] if isinstance(rows, list) else []


def _valid(rows: Any, model: type[R]) -> list[tuple[int, R]]:
    out: list[tuple[int, R]] = []
    if not isinstance(rows, list):
        return out
    for i, raw in enumerate(rows):
        try:
            out.append((i, model.model_validate(raw)))
        except ValidationError:
            continue
    return out


def row_errors(rows: ExportRows) -> list[FieldError]:
    """Every cross-row problem of ``rows``, each naming its row and column."""
    errors: list[FieldError] = []

    def bad(path: str, message: str) -> None:
        errors.append(FieldError(path, message))

    jobs: set[str] = set()
    names = Counter(job.name for _, job in rows.jobs)
    for i, job in rows.jobs:
        key = job.job_id.lower()
        if key in jobs:
            bad(f"sysjobs[{i}].job_id", f"job_id {job.job_id} is listed twice")
        jobs.add(key)
        if names[job.name] > 1:
            bad(f"sysjobs[{i}].name", f"the name {job.name!r} is used by {names[job.name]} jobs")
    known_jobs = jobs | rows.other_job_ids
    steps: dict[str, set[Any]] = {}
    for job_id, step_id in rows.other_steps:
        steps.setdefault(job_id, set()).add(step_id)
    seen: set[tuple[str, int]] = set()
    for i, step in rows.steps:
        where = f"sysjobsteps[{i}]"
        key = step.job_id.lower()
        if key not in known_jobs:
            bad(f"{where}.job_id", f"no row of sysjobs has job_id {step.job_id}")
            continue
        if (key, step.step_id) in seen:
            bad(f"{where}.step_id", f"the job already has a step {step.step_id}")
        seen.add((key, step.step_id))
        steps.setdefault(key, set()).add(step.step_id)
        if step.subsystem.lower() in SUBSYSTEMS and not (step.command or "").strip():
            bad(f"{where}.command", f"a {step.subsystem} step needs a command")
    for i, step in rows.steps:
        found = steps.get(step.job_id.lower())
        if found is None:
            continue
        numbers = sorted(n for n in found if isinstance(n, int))
        for action_column, target_column in (
            ("on_success_action", "on_success_step_id"),
            ("on_fail_action", "on_fail_step_id"),
        ):
            action, target = getattr(step, action_column), getattr(step, target_column)
            if action not in ACTION_CODES:
                bad(
                    f"sysjobsteps[{i}].{action_column}",
                    f"unknown action {action} (1 quit with success, 2 quit with failure, "
                    "3 go to the next step, 4 go to a step)",
                )
            elif action == 4 and target not in found:
                bad(
                    f"sysjobsteps[{i}].{target_column}",
                    f"goes to step {target}, which the job does not have "
                    f"(it has {', '.join(map(str, numbers))})",
                )
    for i, job in rows.jobs:
        of_job = steps.get(job.job_id.lower())
        if of_job and job.start_step_id not in of_job:
            bad(
                f"sysjobs[{i}].start_step_id",
                f"step {job.start_step_id} is not a step of the job "
                f"(it has {', '.join(map(str, sorted(n for n in of_job if isinstance(n, int))))})",
            )
    schedule_ids: set[int] = set()
    for i, schedule in rows.schedules:
        if schedule.schedule_id in schedule_ids:
            bad(
                f"sysschedules[{i}].schedule_id",
                f"schedule_id {schedule.schedule_id} is listed twice",
            )
        schedule_ids.add(schedule.schedule_id)
        errors.extend(schedule_errors(schedule, f"sysschedules[{i}]"))
    known_schedules = schedule_ids | rows.other_schedule_ids
    pairs: set[tuple[str, int]] = set()
    for i, link in rows.links:
        where = f"sysjobschedules[{i}]"
        if link.job_id.lower() not in known_jobs:
            bad(f"{where}.job_id", f"no row of sysjobs has job_id {link.job_id}")
        if link.schedule_id not in known_schedules:
            bad(
                f"{where}.schedule_id", f"no row of sysschedules has schedule_id {link.schedule_id}"
            )
        pair = (link.job_id.lower(), link.schedule_id)
        if pair in pairs:
            bad(where, "this job and schedule are listed twice")
        pairs.add(pair)
    return errors
