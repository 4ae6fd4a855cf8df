"""Business calendars: bank-holiday skips and moves (worked cases on England's 2026 bank
holidays, from the offline ``holidays`` package), calendar definitions checked field by
field, and properties of excluded and moved fires."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.domain.business_calendars import BusinessCalendar, calendar_problems
from app.domain.job_schedule import build_schedule
from app.domain.schedules import local_instants, upcoming
from app.domain.timeutil import get_zone

UK = BusinessCalendar("uk", country="GB", subdivision="ENG")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def run(config: dict[str, Any], after: datetime, n: int, tz: str = "Europe/London") -> list[Any]:
    schedule = build_schedule(config, tz, calendars={"uk": UK})
    return upcoming(schedule, after, n)


def test_england_bank_holidays_come_from_the_holidays_package() -> None:
    assert UK.holidays_between(date(2026, 12, 1), date(2026, 12, 31)) == [
        date(2026, 12, 25),
        date(2026, 12, 26),
        date(2026, 12, 28),  # Boxing Day (observed)
    ]
    assert not UK.is_business_day(date(2026, 4, 3))  # Good Friday
    assert UK.is_business_day(date(2026, 4, 7))


def test_skip_flags_every_fire_on_a_non_business_day() -> None:
    config = {"type": "cron", "expression": "0 9 * * *", "exclude": {"calendar": "uk"}}
    fires = run(config, utc(2026, 12, 24), 6)
    assert [(f.local.date().isoformat(), f.excluded_by) for f in fires] == [
        ("2026-12-24", None),
        ("2026-12-25", "uk"),  # Christmas Day
        ("2026-12-26", "uk"),  # Saturday (and Boxing Day)
        ("2026-12-27", "uk"),  # Sunday
        ("2026-12-28", "uk"),  # Boxing Day observed
        ("2026-12-29", None),
    ]


def test_next_business_day_moves_christmas_to_tuesday_29th() -> None:
    config = {
        "type": "cron",
        "expression": "0 9 25 12 *",
        "exclude": {"calendar": "uk", "on_excluded": "next_business_day"},
    }
    [fire] = run(config, utc(2026, 12, 1), 1)
    assert fire.local.isoformat() == "2026-12-29T09:00:00+00:00"
    assert fire.moved_by_calendar and fire.nominal_local == datetime(2026, 12, 25, 9)


def test_previous_business_day_moves_good_friday_to_thursday() -> None:
    config = {
        "type": "calendar",
        "frequency": "weekly",
        "weekdays": ["friday"],
        "at": "17:30",
        "start_date": "2026-03-01",
        "exclude": {"calendar": "uk", "on_excluded": "previous_business_day"},
    }
    fires = run(config, utc(2026, 3, 26), 3)
    assert [(f.local.isoformat(), f.moved_by_calendar) for f in fires] == [
        ("2026-03-27T17:30:00+00:00", False),
        ("2026-04-02T17:30:00+01:00", True),  # Good Friday 3 April -> Thursday 2 April
        ("2026-04-10T17:30:00+01:00", False),
    ]


def test_moved_fires_that_coincide_with_the_days_own_fire_run_once() -> None:
    config = {
        "type": "cron",
        "expression": "0 9 * * 1-5",
        "exclude": {"calendar": "uk", "on_excluded": "next_business_day"},
    }
    fires = run(config, utc(2026, 12, 24, 12), 3)
    # Friday 25 and Monday 28 move to Tuesday 29 09:00, which fires anyway: once, unmoved.
    assert [(f.local.date().isoformat(), f.moved_by_calendar) for f in fires] == [
        ("2026-12-29", False),
        ("2026-12-30", False),
        ("2026-12-31", False),
    ]


def test_a_moved_fire_keeps_its_wall_clock_time_across_dst() -> None:
    # Sunday 29 March 2026 (London springs forward): 01:30 does not exist that day, but the
    # fire moves to Monday 30 March, where 01:30 exists (BST).
    config = {
        "type": "cron",
        "expression": "30 1 * * 0",
        "exclude": {"calendar": "uk", "on_excluded": "next_business_day"},
    }
    [fire] = run(config, utc(2026, 3, 28), 1)
    assert fire.local.isoformat() == "2026-03-30T01:30:00+01:00"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "", "dates": ["2026-12-25"]}, "name"),
        ({"name": "x y", "dates": ["2026-12-25"]}, "name"),
        ({"name": "a", "dates": ["2026-02-30"]}, "dates[0]"),
        ({"name": "a", "country": "XX"}, "country"),
        ({"name": "a", "country": "GB", "subdivision": "NOPE"}, "subdivision"),
        ({"name": "a", "subdivision": "ENG"}, "subdivision"),
        ({"name": "a"}, "dates"),
    ],
)
def test_calendar_definitions_are_checked(data: dict[str, Any], field: str) -> None:
    assert field in [e.field for e in calendar_problems(data)]


modes = st.sampled_from(["skip", "next_business_day", "previous_business_day"])
expressions = st.sampled_from(
    ["0 9 * * *", "30 1 * * 0", "0 */6 * * *", "15 17 * * 1-5", "0 9 25 12 *"]
)
holiday_sets = st.sets(st.dates(date(2026, 12, 1), date(2027, 1, 31)), max_size=20)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    expr=expressions,
    mode=modes,
    dates=holiday_sets,
    tz=st.sampled_from(["Europe/London", "America/New_York"]),
    start=st.datetimes(datetime(2026, 11, 25), datetime(2027, 1, 31)),
)
def test_properties(expr: str, mode: str, dates: set[date], tz: str, start: datetime) -> None:
    calendar = BusinessCalendar("c", dates=frozenset(dates))
    config = {"type": "cron", "expression": expr, "exclude": {"calendar": "c", "on_excluded": mode}}
    schedule = build_schedule(config, tz, calendars={"c": calendar})
    zone = get_zone(tz)
    after = start.replace(tzinfo=UTC)
    previous = after
    for fire in upcoming(schedule, after, 10):
        assert fire.at > previous  # strictly increasing: nothing doubled, nothing backwards
        previous = fire.at
        wall = fire.local.replace(tzinfo=None)
        instants, in_gap = local_instants(wall, zone)
        assert not in_gap and fire.at in instants  # never in a gap
        business = calendar.is_business_day(fire.local.date())
        if fire.excluded_by:
            assert mode == "skip" and not business
        else:
            assert business
        if fire.moved_by_calendar:
            assert not calendar.is_business_day(fire.nominal_local.date())
            assert fire.nominal_local.time() == wall.time()
