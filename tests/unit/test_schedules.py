"""Schedule maths across DST (cronie rules), with fixed instants instead of waiting."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.domain.job_schedule import build_schedule
from app.domain.schedules import (
    CronSchedule,
    IntervalSchedule,
    OnceSchedule,
    local_instants,
    upcoming,
)
from tests.support.cron_reference import matches


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def fires(expr: str, tz: str, after: datetime, n: int) -> list[tuple[str, bool]]:
    return [
        (f.local.isoformat(), f.moved_by_dst_gap)
        for f in upcoming(CronSchedule(expr, tz), after, n)
    ]


def test_fixed_time_in_gap_runs_once_right_after_the_gap() -> None:
    assert fires("30 2 * * *", "America/New_York", utc(2026, 3, 7, 12), 2) == [
        ("2026-03-08T03:00:00-04:00", True),
        ("2026-03-09T02:30:00-04:00", False),
    ]
    assert fires("0,30 2 * * *", "America/New_York", utc(2026, 3, 7, 12), 2) == [
        ("2026-03-08T03:00:00-04:00", True),
        ("2026-03-09T02:00:00-04:00", False),
    ]
    assert fires("30 1 * * *", "Europe/London", utc(2026, 3, 28, 12), 2) == [
        ("2026-03-29T02:00:00+01:00", True),
        ("2026-03-30T01:30:00+01:00", False),
    ]
    assert fires("15 2 * * *", "Australia/Lord_Howe", utc(2026, 10, 3, 12), 2) == [
        ("2026-10-04T02:30:00+11:00", True),
        ("2026-10-05T02:15:00+11:00", False),
    ]
    assert fires("0 3 * * *", "Pacific/Chatham", utc(2026, 9, 26, 0), 2) == [
        ("2026-09-27T03:45:00+13:45", True),
        ("2026-09-28T03:00:00+13:45", False),
    ]


def test_fixed_time_in_repeated_hour_runs_once() -> None:
    assert fires("30 1 * * *", "America/New_York", utc(2026, 10, 31, 12), 2) == [
        ("2026-11-01T01:30:00-04:00", False),
        ("2026-11-02T01:30:00-05:00", False),
    ]
    assert fires("45 1 * * *", "Australia/Lord_Howe", utc(2026, 4, 4, 0), 2) == [
        ("2026-04-05T01:45:00+11:00", False),
        ("2026-04-06T01:45:00+10:30", False),
    ]


def test_restart_inside_the_repeated_hour_does_not_refire() -> None:
    # Fired at 01:30 EDT; the service restarts at 01:10 EST (fold=1, later in real time).
    schedule = CronSchedule("30 1 * * *", "America/New_York")
    restart = datetime(2026, 11, 1, 1, 10, tzinfo=ZoneInfo("America/New_York"), fold=1)
    nxt = schedule.next_fire(restart.astimezone(UTC))
    assert nxt is not None and nxt.local.isoformat() == "2026-11-02T01:30:00-05:00"


def test_wildcard_hour_follows_elapsed_time() -> None:
    assert [
        f for f, _ in fires("*/30 * * * *", "America/New_York", utc(2026, 11, 1, 4, 50), 5)
    ] == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T01:30:00-05:00",
        "2026-11-01T02:00:00-05:00",
    ]
    assert [f for f, _ in fires("0 * * * *", "America/New_York", utc(2026, 3, 8, 5, 30), 3)] == [
        "2026-03-08T01:00:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "2026-03-08T04:00:00-04:00",
    ]
    assert [f for f, _ in fires("0 */2 * * *", "Europe/London", utc(2026, 10, 24, 22, 30), 3)] == [
        "2026-10-25T00:00:00+01:00",
        "2026-10-25T02:00:00+00:00",
        "2026-10-25T04:00:00+00:00",
    ]


def test_no_dst_zone_and_month_edges() -> None:
    assert fires("0 9 * * *", "Asia/Kolkata", utc(2026, 3, 7, 0), 1) == [
        ("2026-03-07T09:00:00+05:30", False)
    ]
    assert [f for f, _ in fires("0 0 31 * *", "UTC", utc(2026, 1, 31, 1), 3)] == [
        "2026-03-31T00:00:00+00:00",
        "2026-05-31T00:00:00+00:00",
        "2026-07-31T00:00:00+00:00",
    ]
    assert [f for f, _ in fires("0 12 29 2 *", "Europe/London", utc(2026, 1, 1), 2)] == [
        "2028-02-29T12:00:00+00:00",
        "2032-02-29T12:00:00+00:00",
    ]


def test_start_and_end_bounds() -> None:
    schedule = build_schedule(
        {
            "type": "cron",
            "expression": "0 12 * * *",
            "start_at": "2026-05-10T00:00:00",
            "end_at": "2026-05-11T13:00:00",
        },
        "Europe/Paris",
    )
    assert [f.local.isoformat() for f in upcoming(schedule, utc(2026, 1, 1), 5)] == [
        "2026-05-10T12:00:00+02:00",
        "2026-05-11T12:00:00+02:00",
    ]


def test_interval_and_once() -> None:
    interval = IntervalSchedule(900, "America/New_York", utc(2026, 3, 8, 6, 50))
    got = [f.local.isoformat() for f in upcoming(interval, utc(2026, 3, 8, 6, 0), 3)]
    assert got == [
        "2026-03-08T01:50:00-05:00",
        "2026-03-08T03:05:00-04:00",
        "2026-03-08T03:20:00-04:00",
    ]
    once = build_schedule({"type": "once", "at": "2026-12-24T18:00:00"}, "Europe/Berlin")
    assert isinstance(once, OnceSchedule)
    assert [f.at for f in upcoming(once, utc(2026, 1, 1), 3)] == [utc(2026, 12, 24, 17)]


ZONES = [
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "America/Santiago",
    "Europe/Dublin",
    "Africa/Casablanca",
    "Australia/Sydney",
    "America/St_Johns",
    "UTC",
]
field = st.one_of(st.just("*"), st.integers(0, 59).map(str))
expressions = st.tuples(
    st.sampled_from(["0", "30", "*/15", "5,45", "0-10/5", "59"]),
    st.sampled_from(["*", "1", "2", "0,2", "*/2", "1-3", "23", "0-23/6"]),
    st.sampled_from(["*", "1", "15", "28-31", "29"]),
    st.sampled_from(["*", "1-6", "3,10", "FEB", "*/3"]),
    st.sampled_from(["*", "MON-FRI", "0", "SAT,SUN"]),
).map(" ".join)
starts = st.datetimes(datetime(2024, 1, 1), datetime(2030, 12, 31), allow_imaginary=True).flatmap(
    lambda d: st.sampled_from([d.replace(fold=0), d.replace(fold=1)])
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tz=st.sampled_from(ZONES), expr=expressions, start=starts)
def test_properties(tz: str, expr: str, start: datetime) -> None:
    zone = ZoneInfo(tz)
    schedule = CronSchedule(expr, tz)
    after = start.replace(tzinfo=zone).astimezone(UTC)
    fixed = not schedule.follows_elapsed_time
    seen_nominal: set[datetime] = set()
    previous = after
    for fire in upcoming(schedule, after, 8):
        assert fire.at > previous  # strictly increasing: never twice, never backwards
        previous = fire.at
        instants, in_gap = local_instants(fire.local.replace(tzinfo=None), zone)
        assert not in_gap and fire.at in instants  # never inside a gap
        assert matches(expr, fire.nominal_local)  # matches the cron fields locally
        if fire.moved_by_dst_gap:
            assert fixed and local_instants(fire.nominal_local, zone)[1]
        else:
            assert fire.local.replace(tzinfo=None) == fire.nominal_local
        if fixed:
            assert fire.nominal_local not in seen_nominal  # an ambiguous time fires once
            seen_nominal.add(fire.nominal_local)


@pytest.mark.parametrize("tz", ZONES)
def test_fixed_jobs_fire_every_day_through_a_whole_year(tz: str) -> None:
    # A daily job at each half hour of the night fires exactly once per local day.
    for minute, hour in ((0, 1), (30, 1), (0, 2), (30, 2), (0, 3)):
        schedule = CronSchedule(f"{minute} {hour} * * *", tz)
        fired = upcoming(schedule, utc(2026, 1, 1), 365)
        days = [f.nominal_local.date() for f in fired]
        assert len(set(days)) == 365
        assert all(b - a == timedelta(days=1) for a, b in itertools.pairwise(days))
