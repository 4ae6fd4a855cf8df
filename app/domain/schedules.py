"""Schedule maths: when a ``schedule_config`` fires, in the job's timezone, across DST.

Policy (cronie / Vixie-cron rules, ARCHITECTURE.md "Time semantics"):

* A **fixed-time** cron job (neither its minute nor its hour field starts with ``*``; cronie's
  rule, so ``0 0-23/2`` is fixed-time and ``0 */2`` is not) is matched against
  local wall-clock time. If its local time does not exist (spring-forward gap) it fires once,
  at the instant the gap ends. If its local time happens twice (fall-back) it fires once, at
  the first occurrence.
* A cron job whose **minute or hour field starts with** ``*`` (``* 1-6``, ``0 */2``) follows
  real elapsed time: it fires at every instant whose local time matches, so it skips times
  that do not exist and fires in both occurrences of a repeated hour.
* ``interval`` schedules follow real elapsed time from their anchor (``start_at`` or the
  job's creation); ``once`` fires at one instant; ``calendar`` (SQL Server Agent's model,
  ``calendar_schedule.py``) treats ``at`` as a fixed-time job and ``repeat`` slots as an
  elapsed-time job.
* A schedule whose fires would run past year 9999 simply ends.

Every ``next_fire(after)`` is strictly after ``after``; feeding each result back in never
skips or repeats a fire, including when ``after`` lies in the second occurrence of a repeated
hour (a restart there does not re-run a fixed-time job).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from app.domain.cron import ExactCron, cron_problems
from app.domain.errors import ConfigurationError, FieldError
from app.domain.timeutil import RANGE_TEXT, gap_end, get_zone, instant_problem, parse_iso

# Wide enough for every DST shift in the tz database (at most 2 h; Lord Howe's is 30 min).
_SHIFT_WINDOW = timedelta(hours=3)


#: Which copy of a repeated (fall-back) wall-clock time a fire is at.
FIRST_OF_TWO = "first"
SECOND_OF_TWO = "second"


@dataclass(frozen=True)
class FireTime:
    """One fire: the instant (UTC), the same in local time, and what the schedule asked for.

    ``repeated_hour`` is ``first``/``second`` when its local time happens twice that day;
    ``source`` names the schedule of a job that fired it; ``excluded_by`` names the business
    calendar that excludes it (it does not run); ``moved_by_calendar`` means a calendar
    moved it off an excluded day (``nominal_local`` is then the time it was moved from)."""

    at: datetime
    local: datetime
    nominal_local: datetime
    moved_by_dst_gap: bool = False
    repeated_hour: str | None = None
    source: str | None = None
    excluded_by: str | None = None
    moved_by_calendar: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "at_utc": self.at.isoformat(),
            "at_local": self.local.isoformat(),
            "nominal_local": self.nominal_local.isoformat(),
            "moved_by_dst_gap": self.moved_by_dst_gap,
            "repeated_hour": self.repeated_hour,
            "source": self.source,
            "excluded_by": self.excluded_by,
            "moved_by_calendar": self.moved_by_calendar,
        }


def make_fire(
    at: datetime, zone: ZoneInfo, nominal: datetime | None = None, *, in_gap: bool = False
) -> FireTime:
    """The FireTime of instant ``at`` in ``zone``, flagged when its wall time repeats."""
    local = at.astimezone(zone)
    wall = local.replace(tzinfo=None, fold=0)
    instants, _ = local_instants(wall, zone)
    repeated = None
    if len(instants) == 2:
        repeated = FIRST_OF_TWO if at == instants[0] else SECOND_OF_TWO
    return FireTime(
        at,
        local,
        nominal if nominal is not None else wall,
        moved_by_dst_gap=in_gap,
        repeated_hour=repeated,
    )


class Schedule(Protocol):
    timezone: str

    def next_fire(self, after: datetime) -> FireTime | None:
        """The first fire strictly after the instant ``after``, or None when there is none."""


def safe_next(schedule: Schedule, after: datetime) -> FireTime | None:
    """``schedule.next_fire(after)``, None once the fires would pass year 9999."""
    try:
        return schedule.next_fire(after)
    except (OverflowError, StopIteration):
        return None


def upcoming(schedule: Schedule, after: datetime, count: int) -> list[FireTime]:
    out: list[FireTime] = []
    cursor = after
    while len(out) < count:
        fire = safe_next(schedule, cursor)
        if fire is None:
            break
        out.append(fire)
        cursor = fire.at
    return out


def local_instants(naive: datetime, zone: ZoneInfo) -> tuple[list[datetime], bool]:
    """UTC instants at which wall-clock ``naive`` happens in ``zone`` (0, 1 or 2 of them),
    and whether it falls in a gap."""
    first = naive.replace(tzinfo=zone, fold=0)
    second = naive.replace(tzinfo=zone, fold=1)
    a, b = first.astimezone(UTC), second.astimezone(UTC)
    if a.astimezone(zone).replace(tzinfo=None) != naive:
        return [], True  # does not exist: both folds round-trip to another wall time
    if a == b:
        return [a], False
    return sorted({a, b}), False


def offset_changes_on(day: date, zone: ZoneInfo) -> bool:
    """Whether ``zone``'s UTC offset changes during local day ``day`` (a DST day)."""
    midnight = datetime.combine(day, time(0))
    instants, in_gap = local_instants(midnight, zone)
    if in_gap or len(instants) != 1:
        return True
    following = (midnight + timedelta(days=1)).replace(tzinfo=zone)
    return midnight.replace(tzinfo=zone).utcoffset() != following.utcoffset()


def _steady(instant: datetime, zone: ZoneInfo) -> bool:
    """Whether ``zone``'s UTC offset is the same within the widest DST shift of ``instant``."""
    before = (instant - _SHIFT_WINDOW).astimezone(zone).utcoffset()
    return before == (instant + _SHIFT_WINDOW).astimezone(zone).utcoffset()


def _window(schedule_start: datetime | None, schedule_end: datetime | None, fire: FireTime) -> bool:
    if schedule_start is not None and fire.at < schedule_start:
        return False
    return schedule_end is None or fire.at <= schedule_end


class CronSchedule:
    """5-field cron with cronie's rules and extensions (``cron.py``) in a timezone."""

    def __init__(
        self,
        expression: str,
        timezone: str,
        *,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
    ) -> None:
        problems = cron_problems(expression)
        if problems:
            raise ConfigurationError(
                [FieldError("schedule_config.expression", problem) for problem in problems]
            )
        self.expression = expression
        self.timezone = timezone
        self.zone = get_zone(timezone)
        self.start_at = start_at
        self.end_at = end_at
        minute_field, hour_field = expression.split()[:2]
        self.follows_elapsed_time = minute_field.startswith("*") or hour_field.startswith("*")

    def _naive_after(self, naive: datetime) -> Iterator[datetime]:
        # cronsim on naive datetimes matches pure wall-clock times; the DST rules are ours.
        yield from ExactCron(self.expression, naive.replace(second=0, microsecond=0))

    def next_fire(self, after: datetime) -> FireTime | None:
        if self.start_at is not None and after < self.start_at:
            after = self.start_at - timedelta(microseconds=1)
        fire = self._elapsed_next(after) if self.follows_elapsed_time else self._fixed_next(after)
        if fire is None or not _window(self.start_at, self.end_at, fire):
            return None
        return fire

    def _fixed_next(self, after: datetime) -> FireTime | None:
        # Mapping each wall time to its first occurrence (gap -> gap end) is monotonic, so
        # walking wall times upward from after's wall time finds the next fire in order.
        start = after.astimezone(self.zone).replace(tzinfo=None, fold=0) - timedelta(minutes=1)
        for naive in self._naive_after(start):
            instants, in_gap = local_instants(naive, self.zone)
            at = gap_end(naive, self.zone) if in_gap else instants[0]
            if at > after:
                return make_fire(at, self.zone, naive, in_gap=in_gap)
            if self.end_at is not None and at > self.end_at:
                return None
        return None  # pragma: no cover - the iterator is endless

    def _elapsed_next(self, after: datetime) -> FireTime | None:
        # Wall times map to 0..2 instants, not in order around a repeated hour: look from a
        # little before after's wall time and take the earliest instant that is later.
        local_after = after.astimezone(self.zone).replace(tzinfo=None, fold=0)
        if _steady(after, self.zone):
            # No offset change near ``after``: the first later wall time's first instant is
            # the next fire (wall times are in order again until the next change).
            for naive in self._naive_after(local_after - timedelta(minutes=1)):
                later = [at for at in local_instants(naive, self.zone)[0] if at > after]
                if later:
                    return make_fire(later[0], self.zone, naive)
                if (
                    self.end_at is not None
                    and naive
                    > self.end_at.astimezone(self.zone).replace(tzinfo=None) + _SHIFT_WINDOW
                ):
                    return None
        best: FireTime | None = None
        for naive in self._naive_after(local_after - _SHIFT_WINDOW):
            if best is not None and naive > best.nominal_local + _SHIFT_WINDOW:
                break
            instants, _ = local_instants(naive, self.zone)
            for at in instants:
                if at > after and (best is None or at < best.at):
                    best = make_fire(at, self.zone, naive)
            if (
                best is None
                and self.end_at is not None
                and naive > (self.end_at.astimezone(self.zone).replace(tzinfo=None) + _SHIFT_WINDOW)
            ):
                return None
        return best


class IntervalSchedule:
    """Every ``every_seconds`` of real elapsed time from ``anchor``."""

    def __init__(
        self, every_seconds: int, timezone: str, anchor: datetime, *, end_at: datetime | None = None
    ) -> None:
        self.every = timedelta(seconds=every_seconds)
        self.timezone = timezone
        self.zone = get_zone(timezone)
        self.anchor = anchor
        self.end_at = end_at

    def next_fire(self, after: datetime) -> FireTime | None:
        if after < self.anchor:
            at = self.anchor
        else:
            periods = (after - self.anchor) // self.every + 1
            at = self.anchor + periods * self.every
        if self.end_at is not None and at > self.end_at:
            return None
        return make_fire(at, self.zone)


class OnceSchedule:
    def __init__(self, at: datetime, timezone: str) -> None:
        self.at = at
        self.timezone = timezone
        self.zone = get_zone(timezone)

    def next_fire(self, after: datetime) -> FireTime | None:
        if self.at <= after:
            return None
        return make_fire(self.at, self.zone)


def to_instant(value: str | datetime, timezone: str, field: str) -> datetime:
    """An ISO string or datetime as an instant; naive means wall time in ``timezone``
    (a time in a DST gap is refused, an ambiguous one is its first occurrence)."""
    from app.domain.errors import SchedulingError
    from app.domain.timeutil import resolve_local

    moment = parse_iso(value) if isinstance(value, str) else value
    try:
        instant = resolve_local(moment, timezone)
    except SchedulingError as exc:
        raise ConfigurationError([FieldError(field, str(exc))]) from None
    except OverflowError:
        instant = None
    problem = (
        f"is outside the supported range of dates ({RANGE_TEXT})"
        if instant is None
        else instant_problem(moment if moment.tzinfo is not None else instant)
    )
    if instant is None or problem is not None:
        raise ConfigurationError([FieldError(field, problem or "is out of range")])
    return instant
