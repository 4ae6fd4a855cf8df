"""SQL Server Agent's calendar schedule type: worked cases (dates checked against 2026's
calendar), DST in Europe/London and America/New_York, field-by-field validation, and
hypothesis properties (every fire matches its fields in local time, fires strictly increase,
none falls in a gap, none is doubled unless a repeat slot is in a repeated hour)."""

from __future__ import annotations

import calendar as cal
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.domain.describe import describe_config
from app.domain.job_schedule import build_schedule
from app.domain.schedule_config import validate_schedule_config
from app.domain.schedules import local_instants, upcoming

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def fires(config: dict[str, Any], tz: str, after: datetime, n: int) -> list[str]:
    schedule = build_schedule({"type": "calendar", **config}, tz)
    return [f.local.isoformat() for f in upcoming(schedule, after, n)]


def test_every_other_week_on_monday_and_friday() -> None:
    config = {
        "frequency": "weekly",
        "interval": 2,
        "weekdays": ["monday", "friday"],
        "at": "02:30",
        "start_date": "2026-12-09",  # a Wednesday: weeks count from Monday 7 December
    }
    assert fires(config, "UTC", utc(2026, 12, 1), 5) == [
        "2026-12-11T02:30:00+00:00",
        "2026-12-21T02:30:00+00:00",
        "2026-12-25T02:30:00+00:00",
        "2027-01-04T02:30:00+00:00",
        "2027-01-08T02:30:00+00:00",
    ]


def test_every_three_days_from_start_date() -> None:
    config = {"frequency": "daily", "interval": 3, "at": "06:00", "start_date": "2026-01-30"}
    assert [f[:10] for f in fires(config, "UTC", utc(2026, 1, 1), 4)] == [
        "2026-01-30",
        "2026-02-02",
        "2026-02-05",
        "2026-02-08",
    ]


def test_day_31_runs_on_the_last_day_of_shorter_months() -> None:
    config = {"frequency": "monthly", "day_of_month": 31, "at": "09:00", "start_date": "2026-01-01"}
    assert [f[:10] for f in fires(config, "UTC", utc(2026, 1, 1), 4)] == [
        "2026-01-31",
        "2026-02-28",
        "2026-03-31",
        "2026-04-30",
    ]


def test_every_three_months_on_the_last_weekday() -> None:
    config = {
        "frequency": "monthly_relative",
        "interval": 3,
        "relative": {"week": "last", "day": "weekday"},
        "at": "18:00",
        "start_date": "2026-01-01",
    }
    # 31 Jan 2026 is a Saturday; 31 Oct a Saturday.
    assert [f[:10] for f in fires(config, "UTC", utc(2026, 1, 1), 4)] == [
        "2026-01-30",
        "2026-04-30",
        "2026-07-31",
        "2026-10-30",
    ]


@pytest.mark.parametrize(
    ("relative", "first_day"),
    [
        ({"week": "second", "day": "monday"}, "2026-03-09"),
        ({"week": "first", "day": "weekend_day"}, "2026-03-01"),
        ({"week": "third", "day": "day"}, "2026-03-03"),
        ({"week": "fourth", "day": "weekday"}, "2026-03-05"),
        ({"week": "last", "day": "sunday"}, "2026-03-29"),
    ],
)
def test_relative_days(relative: dict[str, str], first_day: str) -> None:
    config = {
        "frequency": "monthly_relative",
        "relative": relative,
        "at": "12:00",
        "start_date": "2026-03-01",
    }
    assert fires(config, "UTC", utc(2026, 3, 1), 1)[0][:10] == first_day


def test_repeat_until_is_inclusive() -> None:
    config = {
        "frequency": "daily",
        "repeat": {"every": 15, "unit": "minutes", "from": "08:00", "until": "18:00"},
        "start_date": "2026-01-01",
    }
    times = [f[11:16] for f in fires(config, "UTC", utc(2026, 1, 1), 42)]
    assert times[0] == "08:00" and times[40] == "18:00" and times[41] == "08:00"


def test_end_date_is_the_last_day() -> None:
    config = {
        "frequency": "daily",
        "at": "23:00",
        "start_date": "2026-01-01",
        "end_date": "2026-01-03",
    }
    assert len(fires(config, "UTC", utc(2026, 1, 1), 10)) == 3


def test_london_fixed_at_across_both_transitions() -> None:
    config = {"frequency": "daily", "at": "01:30", "start_date": "2026-01-01"}
    spring = fires(config, "Europe/London", utc(2026, 3, 28, 12), 2)
    assert spring == ["2026-03-29T02:00:00+01:00", "2026-03-30T01:30:00+01:00"]
    autumn = build_schedule({"type": "calendar", **config}, "Europe/London")
    got = upcoming(autumn, utc(2026, 10, 24, 12), 2)
    assert [f.local.isoformat() for f in got] == [
        "2026-10-25T01:30:00+01:00",  # once, the first 01:30
        "2026-10-26T01:30:00+00:00",
    ]
    assert got[0].repeated_hour == "first"
    # A restart in the second 01:30 does not run it again.
    assert upcoming(autumn, utc(2026, 10, 25, 1, 10), 1)[0].local.isoformat() == (
        "2026-10-26T01:30:00+00:00"
    )


def test_new_york_repeat_across_both_transitions() -> None:
    config = {
        "frequency": "weekly",
        "weekdays": ["sunday"],
        "repeat": {"every": 30, "unit": "minutes", "from": "01:00", "until": "03:00"},
        "start_date": "2026-03-01",
    }
    # 8 March: 02:00-02:59 does not exist, so 02:00 and 02:30 do not fire.
    spring = fires(config, "America/New_York", utc(2026, 3, 8, 5), 3)
    assert spring == [
        "2026-03-08T01:00:00-05:00",
        "2026-03-08T01:30:00-05:00",
        "2026-03-08T03:00:00-04:00",
    ]
    # 1 November: 01:00 and 01:30 happen twice and fire twice.
    schedule = build_schedule({"type": "calendar", **config}, "America/New_York")
    autumn = upcoming(schedule, utc(2026, 11, 1, 4), 6)
    assert [(f.local.isoformat(), f.repeated_hour) for f in autumn] == [
        ("2026-11-01T01:00:00-04:00", "first"),
        ("2026-11-01T01:30:00-04:00", "first"),
        ("2026-11-01T01:00:00-05:00", "second"),
        ("2026-11-01T01:30:00-05:00", "second"),
        ("2026-11-01T02:00:00-05:00", None),
        ("2026-11-01T02:30:00-05:00", None),
    ]


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"frequency": "hourly"}, "frequency"),
        ({"frequency": "daily", "interval": 0}, "interval"),
        ({"frequency": "daily", "weekdays": ["monday"]}, "weekdays"),
        ({"frequency": "weekly", "weekdays": ["monday", "monday"]}, "weekdays"),
        ({"frequency": "weekly", "weekdays": ["mon"]}, "weekdays[0]"),
        ({"frequency": "monthly", "day_of_month": 32}, "day_of_month"),
        ({"frequency": "monthly_relative"}, "relative"),
        (
            {"frequency": "monthly_relative", "relative": {"week": "fifth", "day": "monday"}},
            "relative.week",
        ),
        ({"frequency": "daily", "at": "25:00"}, "at"),
        ({"frequency": "daily", "at": "02:00", "repeat": {"every": 1, "unit": "hours"}}, "repeat"),
        ({"frequency": "daily", "repeat": {"every": 1, "unit": "days"}}, "repeat.unit"),
        ({"frequency": "daily", "repeat": {"every": 25, "unit": "hours"}}, "repeat.every"),
        (
            {
                "frequency": "daily",
                "repeat": {"every": 1, "unit": "hours", "from": "18:00", "until": "08:00"},
            },
            "repeat.until",
        ),
        ({"frequency": "daily", "start_date": "2026-02-30"}, "start_date"),
        ({"frequency": "daily", "start_date": "2026-02-10", "end_date": "2026-02-01"}, "end_date"),
        ({"frequency": "daily", "every": 3}, "every"),
    ],
)
def test_each_field_is_validated(config: dict[str, Any], field: str) -> None:
    errors = validate_schedule_config({"type": "calendar", **config})
    assert f"schedule_config.{field}" in [e.field for e in errors], errors


def test_description() -> None:
    config = {
        "type": "calendar",
        "frequency": "monthly_relative",
        "relative": {"week": "last", "day": "weekday"},
        "repeat": {"every": 15, "unit": "minutes", "from": "08:00", "until": "18:00"},
    }
    assert describe_config(config, "Europe/London") == (
        "Every 15 minutes between 08:00 and 18:00, on the last weekday of the month, Europe/London"
    )


def _matches_day(config: dict[str, Any], d: date) -> bool:
    start = date.fromisoformat(config["start_date"])
    interval = config.get("interval", 1)
    if d < start:
        return False
    frequency = config["frequency"]
    months = (d.year - start.year) * 12 + d.month - start.month
    if frequency == "daily":
        return (d - start).days % interval == 0
    if frequency == "weekly":
        weeks = (
            (d - timedelta(days=d.weekday())) - (start - timedelta(days=start.weekday()))
        ).days // 7
        return WEEKDAYS[d.weekday()] in config["weekdays"] and weeks % interval == 0
    if months % interval:
        return False
    last = cal.monthrange(d.year, d.month)[1]
    if frequency == "monthly":
        return d.day == min(config["day_of_month"], last)
    relative = config["relative"]
    same = [
        k
        for k in range(1, last + 1)
        if date(d.year, d.month, k).weekday() == WEEKDAYS.index(relative["day"])
    ]
    return d.day == (
        same[-1]
        if relative["week"] == "last"
        else same[["first", "second"].index(relative["week"])]
    )


configs = st.one_of(
    st.fixed_dictionaries({"frequency": st.just("daily"), "interval": st.integers(1, 5)}),
    st.fixed_dictionaries(
        {
            "frequency": st.just("weekly"),
            "interval": st.integers(1, 3),
            "weekdays": st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=3, unique=True),
        }
    ),
    st.fixed_dictionaries(
        {
            "frequency": st.just("monthly"),
            "interval": st.integers(1, 4),
            "day_of_month": st.integers(1, 31),
        }
    ),
    st.fixed_dictionaries(
        {
            "frequency": st.just("monthly_relative"),
            "interval": st.integers(1, 2),
            "relative": st.fixed_dictionaries(
                {
                    "week": st.sampled_from(["first", "second", "last"]),
                    "day": st.sampled_from(WEEKDAYS),
                }
            ),
        }
    ),
)
times = st.one_of(
    st.sampled_from(["00:30", "01:00", "01:30", "02:00", "02:30", "03:00", "23:59:59"]).map(
        lambda t: {"at": t}
    ),
    st.tuples(
        st.integers(1, 24),
        st.sampled_from(["minutes", "hours"]),
        st.sampled_from(["00:00", "00:45", "01:00"]),
        st.sampled_from(["02:00", "03:30", "23:59"]),
    ).map(lambda r: {"repeat": {"every": r[0], "unit": r[1], "from": r[2], "until": r[3]}}),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    days=configs,
    clock=times,
    tz=st.sampled_from(["Europe/London", "America/New_York", "Australia/Lord_Howe"]),
    start=st.dates(date(2025, 1, 1), date(2028, 12, 31)),
    offset_hours=st.integers(0, 24 * 60),
)
def test_properties(
    days: dict[str, Any], clock: dict[str, Any], tz: str, start: date, offset_hours: int
) -> None:
    config = {"type": "calendar", **days, **clock, "start_date": start.isoformat()}
    assert validate_schedule_config(config) == []
    zone = ZoneInfo(tz)
    after = datetime.combine(start, time(0), UTC) + timedelta(hours=offset_hours)
    previous = after
    seen: set[datetime] = set()
    for fire in upcoming(build_schedule(config, tz), after, 8):
        assert fire.at > previous  # strictly increasing
        previous = fire.at
        wall = fire.local.replace(tzinfo=None)
        instants, in_gap = local_instants(wall, zone)
        assert not in_gap and fire.at in instants  # never in a gap
        assert _matches_day(config, fire.nominal_local.date())  # its day matches the fields
        if "at" in clock:
            wanted = time.fromisoformat(
                clock["at"] if clock["at"].count(":") == 2 else clock["at"] + ":00"
            )
            assert fire.nominal_local.time() == wanted
            assert fire.nominal_local not in seen  # a fixed time fires once a day
            seen.add(fire.nominal_local)
            assert fire.moved_by_dst_gap == bool(local_instants(fire.nominal_local, zone)[1])
        else:
            repeat = clock["repeat"]
            first = datetime.combine(
                fire.nominal_local.date(), time.fromisoformat(repeat["from"] + ":00")
            )
            step = repeat["every"] * (60 if repeat["unit"] == "minutes" else 3600)
            assert (fire.nominal_local - first).total_seconds() % step == 0
            assert fire.nominal_local.time() <= time.fromisoformat(repeat["until"] + ":00")
            assert not fire.moved_by_dst_gap
            # twice only when its wall time repeats
            key = fire.nominal_local
            if key in seen:
                assert len(local_instants(key, zone)[0]) == 2
            seen.add(key)
