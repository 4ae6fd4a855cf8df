"""What the console pages show, gathered from the same services as the API
(``ModernJobAPI`` and its ``StoredJobService``) as the API's response models; never from the
database directly."""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from app.api.jobs_schemas import FireTimeRead, JobPageRead, JobRead, SchedulePreviewCreate
from app.api.keys import ApiKey
from app.api.schemas import EngineStatusRead, ExecutionRead
from app.api.service import ModernJobAPI
from app.domain.enums import JobStatus
from app.domain.errors import ConfigurationError, FieldError
from app.domain.jobs import JobQuery
from app.domain.records import ExecutionQuery
from app.domain.timeutil import is_valid_timezone

#: The Overview counts at most this many executions of the last 24 h (then says so).
OVERVIEW_SCAN = 1_000
#: The Upcoming page: at most this many fires per job and in all, this many hours, and
#: this many stored jobs looked at.
UPCOMING_PER_JOB = 200
UPCOMING_TOTAL = 2_000
UPCOMING_MAX_HOURS = 24 * 14
UPCOMING_JOB_SCAN = 5_000
FAILED = (JobStatus.FAILED, JobStatus.TIMEOUT, JobStatus.PARTIAL_SUCCESS)


@dataclass(frozen=True)
class UpcomingFire:
    job_id: str
    job_name: str
    timezone: str
    fire: FireTimeRead


@dataclass
class Overview:
    status: EngineStatusRead
    counts: dict[str, int]
    counted_all: bool
    per_hour: list[tuple[datetime, dict[str, int]]]
    failures: list[ExecutionRead]
    next_fires: list[UpcomingFire]


@dataclass(frozen=True)
class Transition:
    """A UTC offset change of ``timezone`` at ``at``."""

    timezone: str
    at: datetime
    before: timedelta
    after: timedelta

    @property
    def label(self) -> str:
        hours = (self.after - self.before).total_seconds() / 3600
        return f"{self.timezone}: clocks {'forward' if hours > 0 else 'back'} {abs(hours):g} h"


@dataclass
class Upcoming:
    start: datetime
    end: datetime
    timezone: str
    fires: list[UpcomingFire]
    transitions: list[Transition]
    truncated: bool
    jobs: list[str] = field(default_factory=list)


@dataclass
class JobDetail:
    job: JobRead
    next_runs: list[FireTimeRead]
    history: list[ExecutionRead]
    history_cursor: str | None


class ConsoleService:
    def __init__(self, api: ModernJobAPI, clock: Callable[[], datetime] | None = None) -> None:
        self.api = api
        self.jobs = api.stored_jobs
        self._clock = clock or (lambda: datetime.now(UTC))

    def now(self) -> datetime:
        return self._clock()

    # -- pages ------------------------------------------------------------------------------
    async def overview(self) -> Overview:
        now = self.now()
        since = now - timedelta(hours=24)
        counts: collections.Counter[str] = collections.Counter()
        first_hour = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        hours: dict[datetime, collections.Counter[str]] = {
            first_hour + timedelta(hours=i): collections.Counter() for i in range(25)
        }
        failures: list[ExecutionRead] = []
        yesterday = (now - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        cursor: str | None = None
        seen = 0
        while True:
            page = await self.api.list_executions(
                ExecutionQuery(started_after=min(since, yesterday), limit=200, cursor=cursor)
            )
            for record in page.items:
                seen += 1
                start = record.start_time
                if start is not None and start >= since:
                    counts[record.status.value] += 1
                    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
                    if hour in hours:
                        hours[hour][record.status.value] += 1
                if record.status in FAILED and len(failures) < 20:
                    failures.append(record)
            cursor = page.next_cursor
            if cursor is None or seen >= OVERVIEW_SCAN:
                break
        upcoming = await self.upcoming(now, 24, "UTC", limit=10)
        return Overview(
            status=await self.api.status(),
            counts=dict(counts),
            counted_all=cursor is None,
            per_hour=[(hour, dict(c)) for hour, c in sorted(hours.items())],
            failures=failures,
            next_fires=upcoming.fires,
        )

    async def job_page(
        self, enabled: bool | None, timezone: str | None, limit: int, cursor: str | None
    ) -> JobPageRead:
        return await self.jobs.list_jobs(
            JobQuery(enabled=enabled, timezone=timezone or None, limit=limit, cursor=cursor)
        )

    async def job_detail(self, job_id: str, cursor: str | None = None) -> JobDetail:
        job = await self.jobs.get(job_id)
        history = await self.api.list_executions(
            ExecutionQuery(job_id=job_id, limit=50, cursor=cursor)
        )
        return JobDetail(
            job=job,
            next_runs=(await self.jobs.next_runs(job_id, 10)).runs,
            history=history.items,
            history_cursor=history.next_cursor,
        )

    async def run_now(self, job_id: str, key: ApiKey | None) -> str:
        """Run a stored job now (as ``POST .../run?wait=false``); its execution id."""
        started = await self.jobs.run(
            job_id, None, key=key, wait=False, status_url=console_execution_url
        )
        return started.execution_id

    def oldest_waiting(self) -> dict[str, float]:
        """Seconds the first run in line has waited, per timezone queue."""
        return {q.timezone: q.oldest_waiting_seconds() for q in self.api.engine.timezone_queues()}

    async def upcoming(
        self, start: datetime, hours: int, timezone: str, *, limit: int = UPCOMING_TOTAL
    ) -> Upcoming:
        """Every enabled job's fires in [start, start + hours), soonest first, and the DST
        transitions of the zones involved."""
        end = start + timedelta(hours=hours)
        fires: list[UpcomingFire] = []
        zones = {timezone}
        cursor: str | None = None
        scanned = 0
        names: list[str] = []
        while True:
            page = await self.jobs.list_jobs(JobQuery(enabled=True, limit=500, cursor=cursor))
            for job in page.items:
                scanned += 1
                found = await self._fires(job, start, end)
                if found:
                    zones.add(job.timezone)
                    names.append(job.job_id)
                fires.extend(UpcomingFire(job.job_id, job.job_name, job.timezone, f) for f in found)
            cursor = page.next_cursor
            if cursor is None or scanned >= UPCOMING_JOB_SCAN:
                break
        truncated = cursor is not None
        fires.sort(key=lambda f: (f.fire.at_utc, f.job_id))
        if len(fires) > limit:
            fires, truncated = fires[:limit], True
        return Upcoming(
            start=start,
            end=end,
            timezone=timezone,
            fires=fires,
            transitions=sorted(
                (t for zone in zones for t in transitions(zone, start, end)), key=lambda t: t.at
            ),
            truncated=truncated,
            jobs=names,
        )

    async def _fires(self, job: JobRead, start: datetime, end: datetime) -> list[FireTimeRead]:
        if not (job.schedule_config or job.schedules):
            return []
        body = job.model_dump(mode="json", include={"schedule_config", "schedules", "timezone"})
        body.update(after=(start - timedelta(microseconds=1)).isoformat(), count=UPCOMING_PER_JOB)
        try:
            preview = SchedulePreviewCreate.model_validate_json(json.dumps(body))
            found = (await self.jobs.preview(preview)).runs
        except (ConfigurationError, ValidationError):
            return []
        return [f for f in found if start <= f.at_utc < end and not f.excluded_by]


def console_execution_url(execution_id: str) -> str:
    return f"/ui/executions/{execution_id}"


def parse_window(
    start: str | None, hours: str | None, timezone: str | None, now: datetime
) -> tuple[datetime, int, str]:
    """The Upcoming page's ``?from=&hours=&tz=``; ``ConfigurationError`` naming each bad
    one. ``from`` is a date or a date-time, read in ``tz`` when it has no offset."""
    errors: list[FieldError] = []
    zone = timezone or "UTC"
    if not is_valid_timezone(zone):
        errors.append(FieldError("tz", f"unknown IANA timezone {zone!r}"))
        zone = "UTC"
    count = 24
    if hours:
        if not hours.isdigit() or not 1 <= int(hours) <= UPCOMING_MAX_HOURS:
            errors.append(FieldError("hours", f"must be a whole number 1-{UPCOMING_MAX_HOURS}"))
        else:
            count = int(hours)
    when = now
    if start:
        try:
            when = datetime.fromisoformat(start)
        except ValueError:
            errors.append(FieldError("from", "must be a date (2026-03-08) or an ISO date-time"))
        else:
            if when.tzinfo is None:
                when = when.replace(tzinfo=ZoneInfo(zone))
            when = when.astimezone(UTC)
    if errors:
        raise ConfigurationError(errors)
    return when, count, zone


def transitions(timezone: str, start: datetime, end: datetime) -> list[Transition]:
    """The UTC offset changes of ``timezone`` in [start, end), to the minute."""
    zone = ZoneInfo(timezone)
    out: list[Transition] = []

    def offset(at: datetime) -> timedelta:
        value = at.astimezone(zone).utcoffset()
        return value if value is not None else timedelta(0)

    step = timedelta(hours=1)
    at = start
    while at < end:
        nxt = min(at + step, end)
        before, after = offset(at), offset(nxt)
        if before != after:
            low, high = at, nxt
            while high - low > timedelta(minutes=1):
                mid = low + (high - low) / 2
                if offset(mid) == before:
                    low = mid
                else:
                    high = mid
            exact = high.replace(second=0, microsecond=0)
            out.append(Transition(timezone, exact, before, after))
        at = nxt
    return out
