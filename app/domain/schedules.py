"""Schedule maths: when a ``schedule_config`` fires, in the job's timezone, across DST.

Policy (cronie / Vixie-cron rules, ARCHITECTURE.md "Time semantics"):

* A **fixed-time** cron job (its hour field is neither ``*`` nor a step) is matched against
  local wall-clock time. If its local time does not exist (spring-forward gap) it fires once,
  at the instant the gap ends. If its local time happens twice (fall-back) it fires once, at
  the first occurrence.
* A cron job whose **hour field is a wildcard or a step** (``*``, ``*/2``, ``0-23/3``) follows
  real elapsed time: it fires at every instant whose local time matches, so it skips times
  that do not exist and fires in both occurrences of a repeated hour.
* ``interval`` schedules follow real elapsed time from their anchor (``start_at`` or the
  job's creation); ``once`` fires at one instant.

Every ``next_fire(after)`` is strictly after ``after``; feeding each result back in never
skips or repeats a fire, including when ``after`` lies in the second occurrence of a repeated
hour (a restart there does not re-run a fixed-time job).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from croniter import croniter

from app.domain.errors import ConfigurationError, FieldError
from app.domain.timeutil import gap_end, get_zone, parse_iso

# Wide enough for every DST shift in the tz database (at most 2 h; Lord Howe's is 30 min).
_SHIFT_WINDOW = timedelta(hours=3)


@dataclass(frozen=True)
class FireTime:
    """One fire: the instant (UTC), the same in local time, and what the schedule asked for."""

    at: datetime
    local: datetime
    nominal_local: datetime
    moved_by_dst_gap: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "at_utc": self.at.isoformat(),
            "at_local": self.local.isoformat(),
            "nominal_local": self.nominal_local.isoformat(),
            "moved_by_dst_gap": self.moved_by_dst_gap,
        }


class Schedule(Protocol):
    timezone: str

    def next_fire(self, after: datetime) -> FireTime | None:
        """The first fire strictly after the instant ``after``, or None when there is none."""


def upcoming(schedule: Schedule, after: datetime, count: int) -> list[FireTime]:
    out: list[FireTime] = []
    cursor = after
    while len(out) < count:
        fire = schedule.next_fire(cursor)
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


def _window(schedule_start: datetime | None, schedule_end: datetime | None, fire: FireTime) -> bool:
    if schedule_start is not None and fire.at < schedule_start:
        return False
    return schedule_end is None or fire.at <= schedule_end


class CronSchedule:
    """Standard 5-field cron (lists, ranges, steps, month and day names) in a timezone."""

    def __init__(
        self,
        expression: str,
        timezone: str,
        *,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
    ) -> None:
        if not croniter.is_valid(expression) or len(expression.split()) != 5:
            raise ConfigurationError(
                [
                    FieldError(
                        "schedule_config.expression", f"invalid cron expression {expression!r}"
                    )
                ]
            )
        self.expression = expression
        self.timezone = timezone
        self.zone = get_zone(timezone)
        self.start_at = start_at
        self.end_at = end_at
        hour_field = expression.split()[1]
        self.follows_elapsed_time = "*" in hour_field or "/" in hour_field

    def _naive_after(self, naive: datetime) -> Iterator[datetime]:
        it = croniter(self.expression, naive)
        while True:
            yield it.get_next(datetime)

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
                return FireTime(at, at.astimezone(self.zone), naive, moved_by_dst_gap=in_gap)
            if self.end_at is not None and at > self.end_at:
                return None
        return None  # pragma: no cover - the iterator is endless

    def _elapsed_next(self, after: datetime) -> FireTime | None:
        # Wall times map to 0..2 instants, not in order around a repeated hour: look from a
        # little before after's wall time and take the earliest instant that is later.
        local_after = after.astimezone(self.zone).replace(tzinfo=None, fold=0)
        best: FireTime | None = None
        for naive in self._naive_after(local_after - _SHIFT_WINDOW):
            if best is not None and naive > best.nominal_local + _SHIFT_WINDOW:
                break
            instants, _ = local_instants(naive, self.zone)
            for at in instants:
                if at > after and (best is None or at < best.at):
                    best = FireTime(at, at.astimezone(self.zone), naive)
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
        local = at.astimezone(self.zone)
        return FireTime(at, local, local.replace(tzinfo=None))


class OnceSchedule:
    def __init__(self, at: datetime, timezone: str) -> None:
        self.at = at
        self.timezone = timezone
        self.zone = get_zone(timezone)

    def next_fire(self, after: datetime) -> FireTime | None:
        if self.at <= after:
            return None
        local = self.at.astimezone(self.zone)
        return FireTime(self.at, local, local.replace(tzinfo=None))


def to_instant(value: str | datetime, timezone: str, field: str) -> datetime:
    """An ISO string or datetime as an instant; naive means wall time in ``timezone``
    (a time in a DST gap is refused, an ambiguous one is its first occurrence)."""
    from app.domain.errors import SchedulingError
    from app.domain.timeutil import resolve_local

    moment = parse_iso(value) if isinstance(value, str) else value
    try:
        return resolve_local(moment, timezone)
    except SchedulingError as exc:
        raise ConfigurationError([FieldError(field, str(exc))]) from None


def build_schedule(
    config: dict[str, Any], timezone: str, *, created_at: datetime | None = None
) -> Schedule:
    """The Schedule for a validated ``schedule_config``."""
    kind = config["type"]
    start = config.get("start_at")
    end = config.get("end_at")
    start_at = to_instant(start, timezone, "schedule_config.start_at") if start else None
    end_at = to_instant(end, timezone, "schedule_config.end_at") if end else None
    if kind == "cron":
        return CronSchedule(config["expression"], timezone, start_at=start_at, end_at=end_at)
    if kind == "interval":
        anchor = start_at or created_at
        if anchor is None:
            raise ConfigurationError(
                [
                    FieldError(
                        "schedule_config.start_at", "an interval needs start_at or a created_at"
                    )
                ]
            )
        return IntervalSchedule(int(config["every_seconds"]), timezone, anchor, end_at=end_at)
    if kind == "once":
        return OnceSchedule(to_instant(config["at"], timezone, "schedule_config.at"), timezone)
    raise ConfigurationError([FieldError("schedule_config.type", f"unknown type {kind!r}")])
