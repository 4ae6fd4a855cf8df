"""Backfill: run a stored job for each fire of its schedule in a past (or any) range.

Each run is a scheduled run of trigger ``backfill`` due at its fire's instant, so it goes
through the job's timezone queue like any other (at most ``V2_QUEUE_MAX_CONCURRENT`` of the
zone at a time, in fire order) and its run tokens carry that fire's ``scheduled_for`` and
``logical_date``. Runs are keyed by (job_id, scheduled_for) as recurring fires are: a fire
that has a run (one that ran or is still to run) is not run again with ``only_missing``; a
fire recorded missed or skipped gets a run of its own.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING

from app.domain.errors import ConfigurationError, FieldError
from app.domain.job_schedule import fired_by
from app.domain.jobs import StoredJob
from app.domain.records import TRIGGER_BACKFILL, DuplicateScheduledRunError, ScheduledRun
from app.domain.schedules import FireTime, Schedule
from app.domain.timeutil import get_zone, parse_iso, resolve_local

if TYPE_CHECKING:
    from app.engine.engine import NewExecutionEngine

#: A range with more fires than this is refused (400).
MAX_BACKFILL_FIRES = 10_000
_TICK = timedelta(microseconds=1)


@dataclass
class BackfillRequest:
    start: str  # "from": an instant with an offset, or a date in the job's timezone
    end: str  # "to": the same; a date covers that whole day
    max_runs: int = 100
    only_missing: bool = True
    dry_run: bool = False


@dataclass
class BackfillRun:
    fire: FireTime
    logical_date: str
    execution_id: str | None = None  # None in a dry run


@dataclass
class BackfillPlan:
    job_id: str
    timezone: str
    start: datetime
    end: datetime  # exclusive
    dry_run: bool
    runs: list[BackfillRun] = field(default_factory=list)
    already_ran: list[BackfillRun] = field(default_factory=list)


def _bound(value: str, timezone: str, name: str, *, end: bool) -> datetime:
    """``value`` as an instant: an ISO instant with its offset (``to`` inclusive), or a date
    meaning its local midnight (``to``: the next midnight, so the whole day is in)."""
    if len(value) == 10:
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise ConfigurationError([FieldError(name, "is not a valid date")]) from None
        if end:
            day += timedelta(days=1)
        return resolve_local(datetime.combine(day, time()), timezone)
    try:
        instant = parse_iso(value)
    except ValueError:
        raise ConfigurationError(
            [FieldError(name, "must be an ISO 8601 instant with an offset, or a date YYYY-MM-DD")]
        ) from None
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ConfigurationError(
            [FieldError(name, "an instant needs its offset (or give a date YYYY-MM-DD)")]
        )
    return instant + _TICK if end else instant


def fires_in(schedule: Schedule, start: datetime, end: datetime) -> list[FireTime]:
    """The fires of ``schedule`` in [start, end) that run (a fire a business calendar
    excludes does not); more than ``MAX_BACKFILL_FIRES`` is a 400."""
    out: list[FireTime] = []
    cursor = start - _TICK
    while (fire := schedule.next_fire(cursor)) is not None and fire.at < end:
        if fire.excluded_by is None:
            out.append(fire)
        if len(out) > MAX_BACKFILL_FIRES:
            raise ConfigurationError(
                [FieldError("to", f"the range has more than {MAX_BACKFILL_FIRES} fires")]
            )
        cursor = fire.at
    return out


async def backfill(
    engine: NewExecutionEngine,
    stored: StoredJob,
    request: BackfillRequest,
    *,
    requested_by: str | None,
) -> BackfillPlan:
    """Plan (``dry_run``) or create the runs of a backfill; every problem is one 400."""
    job = stored.job
    errors: list[FieldError] = []
    if not (job.schedule_config or job.schedules):
        errors.append(FieldError("job_id", f"job {job.job_id!r} has no schedule to backfill"))
    bounds: dict[str, datetime] = {}
    for name, value, is_end in (("from", request.start, False), ("to", request.end, True)):
        try:
            bounds[name] = _bound(value, job.timezone, name, end=is_end)
        except ConfigurationError as exc:
            errors.extend(exc.errors)
    if len(bounds) == 2 and bounds["to"] <= bounds["from"]:
        errors.append(FieldError("to", "is before from"))
    if not 1 <= request.max_runs <= MAX_BACKFILL_FIRES:
        errors.append(FieldError("max_runs", f"must be between 1 and {MAX_BACKFILL_FIRES}"))
    if errors:
        raise ConfigurationError(errors)
    start, end = bounds["from"], bounds["to"]
    zone = get_zone(job.timezone)
    plan = BackfillPlan(job.job_id, job.timezone, start, end, request.dry_run)
    assert engine.jobs is not None  # a stored job: the store keeps job definitions
    schedule = await engine.jobs.schedule_of(job)
    ran = await engine.store.fires_with_runs(job.job_id, start, end)
    # Up to 10,000 schedule steps of pure computation: off the event loop.
    for fire in await asyncio.to_thread(fires_in, schedule, start, end):
        planned = BackfillRun(fire, fire.at.astimezone(zone).date().isoformat())
        (plan.already_ran if request.only_missing and fire.at in ran else plan.runs).append(planned)
    if len(plan.runs) > request.max_runs:
        raise ConfigurationError(
            [
                FieldError(
                    "max_runs",
                    f"the range has {len(plan.runs)} runs to make, more than max_runs "
                    f"{request.max_runs}",
                )
            ]
        )
    if request.dry_run:
        return plan
    for planned in plan.runs:
        planned.execution_id = await _add_run(engine, stored, planned.fire, requested_by)
    engine.wake_scheduler()
    return plan


async def _add_run(
    engine: NewExecutionEngine, stored: StoredJob, fire: FireTime, requested_by: str | None
) -> str:
    """A run of ``fire``, keyed by it unless the key is taken (a fire recorded missed or
    skipped keeps its record; a re-run of it is a run of its own)."""
    for keyed in (True, False):
        execution_id = uuid.uuid4().hex
        try:
            await engine.store.add_scheduled_run(
                ScheduledRun(
                    execution_id=execution_id,
                    job=fired_by(stored, fire.source).job,
                    scheduled_for=fire.at,
                    trigger=TRIGGER_BACKFILL,
                    requested_by=requested_by,
                    keyed=keyed,
                )
            )
        except DuplicateScheduledRunError:
            continue
        return execution_id
    raise AssertionError("an unkeyed run cannot collide")  # pragma: no cover
