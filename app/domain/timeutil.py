"""Time helpers: everything aware, stored in UTC, local only for maths and display."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from app.domain.errors import SchedulingError


def utc_now() -> datetime:
    return datetime.now(UTC)


def get_zone(name: str) -> ZoneInfo:
    """Return the IANA zone ``name``; raise ``KeyError`` if it does not exist."""
    if not name or name != name.strip() or "\x00" in name:
        raise KeyError(name)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise KeyError(name) from exc


def is_valid_timezone(name: str) -> bool:
    try:
        get_zone(name)
    except KeyError:
        return False
    return True


def all_timezones() -> set[str]:
    return available_timezones()


def resolve_local(naive: datetime, tz_name: str) -> datetime:
    """Interpret a naive wall-clock time in ``tz_name`` and return an aware UTC instant.

    A time inside a DST gap does not exist and raises ``SchedulingError`` naming the gap.
    An ambiguous time (repeated hour) means its first occurrence (``fold=0``).
    """
    if naive.tzinfo is not None:
        return naive.astimezone(UTC)
    zone = get_zone(tz_name)
    first = naive.replace(tzinfo=zone, fold=0)
    # Round-trip through UTC: a non-existent local time does not come back unchanged.
    back = first.astimezone(UTC).astimezone(zone)
    if back.replace(tzinfo=None) != naive:
        gap_start, gap_end = _gap_bounds(naive, zone)
        raise SchedulingError(
            f"{naive.isoformat()} does not exist in {tz_name}: clocks jump from "
            f"{gap_start.strftime('%H:%M')} to {gap_end.strftime('%H:%M')} on "
            f"{gap_start.date().isoformat()} (DST gap)",
            field="scheduled_time",
        )
    return first.astimezone(UTC)


def gap_end(naive: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant at which the DST gap containing wall-clock ``naive`` ends (the
    transition instant): the one DST-gap function of the code base."""
    off_before = naive.replace(tzinfo=zone, fold=0).utcoffset() or timedelta(0)
    off_after = naive.replace(tzinfo=zone, fold=1).utcoffset() or timedelta(0)
    as_utc = naive.replace(tzinfo=UTC)
    lo, hi = as_utc - max(off_before, off_after), as_utc - min(off_before, off_after)
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(zone).utcoffset() == off_before:
            lo = mid
        else:
            hi = mid
    return hi.replace(microsecond=0)


def _gap_bounds(naive: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """Local wall-clock start and end of the DST gap that contains ``naive``."""
    transition = gap_end(naive, zone)
    before = naive.replace(tzinfo=zone, fold=0).utcoffset() or timedelta(0)
    after = naive.replace(tzinfo=zone, fold=1).utcoffset() or timedelta(0)
    return (transition + before).replace(tzinfo=None), (transition + after).replace(tzinfo=None)


def to_local(instant: datetime, tz_name: str) -> datetime:
    return instant.astimezone(get_zone(tz_name))


def parse_iso(value: str) -> datetime:
    """Parse ISO 8601 (accepting a trailing ``Z``)."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


#: Offsets the API accepts on a date-time (the real world's span: UTC-12 to UTC+14).
MAX_OFFSET = timedelta(hours=14)
#: The instants the API accepts: each one exists, in years 1-9999, at every offset up to
#: ±14 h, so it can be stored, compared and shown in any timezone.
EARLIEST_INSTANT = datetime(1, 1, 1, tzinfo=UTC) + MAX_OFFSET
LATEST_INSTANT = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - MAX_OFFSET
RANGE_TEXT = "years 1-9999 with offsets up to ±14:00"


def instant_problem(moment: datetime) -> str | None:
    """Why the aware ``moment`` is not an instant the API accepts (None when it is)."""
    offset = moment.utcoffset()
    if offset is not None and abs(offset) > MAX_OFFSET:
        return "must have a UTC offset between -14:00 and +14:00"
    try:
        instant = moment.astimezone(UTC)
    except OverflowError:
        return f"is outside the supported range of dates ({RANGE_TEXT})"
    if not EARLIEST_INSTANT <= instant <= LATEST_INSTANT:
        return f"is outside the supported range of dates ({RANGE_TEXT})"
    return None


def parse_instant(text: str) -> datetime:
    """An ISO 8601 date-time with an offset as an aware UTC instant within the supported
    range; ``ValueError`` saying why not (the caller names the field)."""
    try:
        moment = parse_iso(text)
    except ValueError:
        raise ValueError("is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        raise ValueError("must carry a UTC offset (e.g. Z or +01:00)")
    problem = instant_problem(moment)
    if problem is not None:
        raise ValueError(problem)
    return moment.astimezone(UTC)
