"""Cron, exact: cronie's rules and the SQL Agent extensions, as worked cases from the calendar
(dates checked by hand against 2026's calendar) and properties against an independent reading
of crontab(5) (tests/support/cron_reference.py), not against the library itself."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from app.domain.cron import cron_problems, describe_cron
from app.domain.field_paths import SCHEDULE_UNION_TAGS
from app.domain.schedule_config import SCHEDULE_TYPES
from app.domain.schedules import CronSchedule, upcoming
from tests.support.cron_reference import matches


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local_fires(expr: str, tz: str, after: datetime, n: int) -> list[str]:
    return [f.local.isoformat() for f in upcoming(CronSchedule(expr, tz), after, n)]


def test_last_friday_5L() -> None:
    assert local_fires("1 1 * * 5L", "UTC", utc(2026, 1, 1), 4) == [
        "2026-01-30T01:01:00+00:00",
        "2026-02-27T01:01:00+00:00",
        "2026-03-27T01:01:00+00:00",
        "2026-04-24T01:01:00+00:00",
    ]


def test_last_day_and_last_weekday() -> None:
    # 31 Jan 2026 is a Saturday, 28 Feb a Saturday, 31 May a Sunday.
    assert local_fires("0 9 LW * *", "UTC", utc(2026, 1, 1), 5) == [
        "2026-01-30T09:00:00+00:00",
        "2026-02-27T09:00:00+00:00",
        "2026-03-31T09:00:00+00:00",
        "2026-04-30T09:00:00+00:00",
        "2026-05-29T09:00:00+00:00",
    ]
    assert local_fires("0 9 L * *", "UTC", utc(2026, 1, 1), 2) == [
        "2026-01-31T09:00:00+00:00",
        "2026-02-28T09:00:00+00:00",
    ]


@pytest.mark.parametrize("last_sunday", ["0L", "7L"])
def test_last_sunday_across_london_transitions(last_sunday: str) -> None:
    # The last Sundays of March and October 2026 are London's DST days.
    fixed = CronSchedule(f"30 1 * * {last_sunday}", "Europe/London")
    fires = upcoming(fixed, utc(2026, 3, 1), 8)
    march, october = fires[0], fires[7]
    assert march.local.isoformat() == "2026-03-29T02:00:00+01:00"  # 01:30 does not exist
    assert march.moved_by_dst_gap
    assert october.local.isoformat() == "2026-10-25T01:30:00+01:00"  # once, the first 01:30
    assert october.repeated_hour == "first"
    assert fires[8 - 1].at < upcoming(fixed, october.at, 1)[0].at
    assert upcoming(fixed, october.at, 1)[0].local.isoformat() == "2026-11-29T01:30:00+00:00"


def test_second_monday_and_new_york_transitions() -> None:
    assert local_fires("0 6 * * 1#2", "UTC", utc(2026, 1, 1), 3) == [
        "2026-01-12T06:00:00+00:00",
        "2026-02-09T06:00:00+00:00",
        "2026-03-09T06:00:00+00:00",
    ]
    # 8 Mar 2026, the second Sunday, New York springs forward at 02:00.
    assert local_fires("30 2 * * 0#2", "America/New_York", utc(2026, 3, 1), 1) == [
        "2026-03-08T03:00:00-04:00"
    ]
    # 1 Nov 2026, the first Sunday, New York falls back at 02:00: a fixed time runs once...
    assert local_fires("30 1 * * 0#1", "America/New_York", utc(2026, 10, 31), 2) == [
        "2026-11-01T01:30:00-04:00",
        "2026-12-06T01:30:00-05:00",
    ]
    # ...a minute-step job follows elapsed time and runs in both copies of the hour.
    assert local_fires("*/30 1 * * 0#1", "America/New_York", utc(2026, 10, 31), 4) == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T01:30:00-05:00",
    ]


def test_nearest_weekday_W() -> None:
    # 15 Aug 2026 is a Saturday (-> Friday 14), 15 Nov a Sunday (-> Monday 16).
    fires = local_fires("0 9 15W * *", "UTC", utc(2026, 8, 1), 4)
    assert fires == [
        "2026-08-14T09:00:00+00:00",
        "2026-09-15T09:00:00+00:00",
        "2026-10-15T09:00:00+00:00",
        "2026-11-16T09:00:00+00:00",
    ]
    # 1 Aug 2026 is a Saturday: the nearest weekday in August is Monday 3 (not 31 July).
    assert local_fires("0 9 1W * *", "UTC", utc(2026, 7, 2), 1) == ["2026-08-03T09:00:00+00:00"]
    # 31 May 2026 is a Sunday: Friday 29 (not 1 June); 31W does not fire in 30-day months.
    assert local_fires("0 9 31W * *", "UTC", utc(2026, 5, 1), 2) == [
        "2026-05-29T09:00:00+00:00",
        "2026-07-31T09:00:00+00:00",
    ]


def test_star_and_rule() -> None:
    # Day-of-week starts with '*': day-of-month AND day-of-week, the first Sunday of a month.
    assert local_fires("1 1 1-7 * */7", "UTC", utc(2026, 1, 1), 4) == [
        "2026-01-04T01:01:00+00:00",
        "2026-02-01T01:01:00+00:00",
        "2026-03-01T01:01:00+00:00",
        "2026-04-05T01:01:00+00:00",
    ]
    # Both restricted: OR, every one of days 1-7 and every Sunday.
    days = [f[:10] for f in local_fires("1 1 1-7 * 0", "UTC", utc(2026, 1, 1), 10)]
    assert days == [f"2026-01-0{d}" for d in range(1, 8)] + [
        "2026-01-11",
        "2026-01-18",
        "2026-01-25",
    ]


def test_minute_star_runs_in_both_copies_of_a_repeated_hour() -> None:
    fires = upcoming(CronSchedule("* 1-6 * * *", "Europe/London"), utc(2026, 10, 24, 12), 1000)
    on_the_day = [f for f in fires if f.local.date().isoformat() == "2026-10-25"]
    assert len(on_the_day) == 6 * 60 + 60  # 01:00-06:59, and 01:xx twice
    assert sum(f.repeated_hour == "second" for f in on_the_day) == 60
    assert len({f.at for f in on_the_day}) == len(on_the_day)


def test_fixed_hour_range_runs_once_in_a_repeated_hour() -> None:
    # "0 0-23/2" is not a '*' job in cronie's sense: a fixed-time job, once at 00:00... 22:00.
    fires = upcoming(CronSchedule("0 1-3 * * *", "Europe/London"), utc(2026, 10, 24, 12), 3)
    assert [f.local.isoformat() for f in fires] == [
        "2026-10-25T01:00:00+01:00",
        "2026-10-25T02:00:00+00:00",
        "2026-10-25T03:00:00+00:00",
    ]


@pytest.mark.parametrize(
    ("expr", "field", "why"),
    [
        ("* * 5-1 * *", "day-of-month", "reversed"),
        ("* 23-1 * * *", "hour", "reversed"),
        ("* * * DEC-JAN *", "month", "reversed"),
        ("* * * * FRI-MON", "day-of-week", "reversed"),
        ("61 * * * *", "minute", "outside 0-59"),
        ("* * 0 * *", "day-of-month", "outside 1-31"),
        ("* * * * 8", "day-of-week", "outside 0-7"),
        ("*/0 * * * *", "minute", "at least 1"),
        ("* * * * 1#6", "day-of-week", "week 1-5"),
        ("* * 32W * *", "day-of-month", "1 to 31"),
        ("* * * * * *", "", "exactly 5 fields"),
        ("0 0 30 2 *", "", "never matches"),
    ],
)
def test_malformed_fields_are_named(expr: str, field: str, why: str) -> None:
    problems = cron_problems(expr)
    assert len(problems) == 1, problems
    assert field in problems[0] and why in problems[0]


def test_descriptions_follow_the_and_or_rule() -> None:
    assert describe_cron("30 2 * * 1-5") == "At 02:30 on Monday through Friday"
    assert "last Friday" in describe_cron("1 1 * * 5L")
    assert "if it's on" in describe_cron("1 1 1-7 * */7")  # AND
    assert "and on Friday" in describe_cron("0 0 13 * 5")  # OR
    assert "nearest weekday" in describe_cron("0 9 15W * *")


minutes = st.sampled_from(["0", "30", "*/20", "5,45", "*"])
hours = st.sampled_from(["1", "2", "*/6", "0-23/8", "9-17"])
doms = st.sampled_from(["*", "L", "LW", "15W", "1W", "31W", "1-7", "13", "*/10"])
months = st.sampled_from(["*", "2", "MAR,OCT,NOV", "*/4"])
dows = st.sampled_from(["*", "5L", "0L", "1#2", "0#1", "MON-FRI", "*/7", "6"])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    expr=st.tuples(minutes, hours, doms, months, dows).map(" ".join),
    tz=st.sampled_from(["Europe/London", "America/New_York"]),
    start=st.datetimes(datetime(2025, 1, 1), datetime(2028, 12, 31)),
)
def test_extension_properties(expr: str, tz: str, start: datetime) -> None:
    assume(not cron_problems(expr))  # e.g. "LW" AND Sunday never matches: refused
    schedule = CronSchedule(expr, tz)
    after = start.replace(tzinfo=UTC)
    previous = after
    seen: set[datetime] = set()
    for fire in upcoming(schedule, after, 6):
        assert fire.at > previous  # strictly increasing
        previous = fire.at
        assert matches(expr, fire.nominal_local), (expr, fire)
        if not schedule.follows_elapsed_time:
            assert fire.nominal_local not in seen  # a fixed time fires once
            seen.add(fire.nominal_local)


def test_generated_schedule_models_are_not_stale(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "generated"
    subprocess.run(
        [sys.executable, str(root / "scripts/generate_schedule_models.py"), str(out)], check=True
    )
    current = root / "app/domain/generated"
    names = sorted(p.name for p in out.glob("*.py"))
    assert names == sorted(p.name for p in current.glob("*.py"))
    _match, mismatch, errors = filecmp.cmpfiles(out, current, names, shallow=False)
    assert not mismatch and not errors, "app/domain/generated is stale: run `make generate`"


def test_field_paths_know_every_schedule_type() -> None:
    assert SCHEDULE_TYPES == SCHEDULE_UNION_TAGS


def test_an_expression_stored_before_cron_was_exact_is_described_not_raised() -> None:
    # croniter accepted reversed ranges; a job stored then still reads.
    assert describe_cron("* * 5-1 * *").startswith("Never: cron day-of-month field")


@pytest.mark.parametrize(
    ("tz", "expr", "expected"),
    [
        # Last Fridays of March (before both zones' spring change in London, after it in New
        # York), April, October (London back on GMT since the 25th; New York still on EDT)
        # and November (both on standard time).
        (
            "Europe/London",
            "1 1 * * 5L",
            [
                "2026-03-27T01:01:00+00:00",
                "2026-04-24T01:01:00+01:00",
                "2026-10-30T01:01:00+00:00",
                "2026-11-27T01:01:00+00:00",
            ],
        ),
        (
            "America/New_York",
            "1 1 * * 5L",
            [
                "2026-03-27T01:01:00-04:00",
                "2026-04-24T01:01:00-04:00",
                "2026-10-30T01:01:00-04:00",
                "2026-11-27T01:01:00-05:00",
            ],
        ),
        # Last weekdays: 31 March (Tue), 30 April (Thu), 30 October (Fri; the 31st is a
        # Saturday), 30 November (Mon).
        (
            "Europe/London",
            "0 18 LW * *",
            [
                "2026-03-31T18:00:00+01:00",
                "2026-04-30T18:00:00+01:00",
                "2026-10-30T18:00:00+00:00",
                "2026-11-30T18:00:00+00:00",
            ],
        ),
        (
            "America/New_York",
            "0 18 LW * *",
            [
                "2026-03-31T18:00:00-04:00",
                "2026-04-30T18:00:00-04:00",
                "2026-10-30T18:00:00-04:00",
                "2026-11-30T18:00:00-05:00",
            ],
        ),
        # Second Mondays: 9 March (New York already on EDT since the 8th, London not yet),
        # 13 April, 12 October, 9 November.
        (
            "Europe/London",
            "30 2 * * 1#2",
            [
                "2026-03-09T02:30:00+00:00",
                "2026-04-13T02:30:00+01:00",
                "2026-10-12T02:30:00+01:00",
                "2026-11-09T02:30:00+00:00",
            ],
        ),
        (
            "America/New_York",
            "30 2 * * 1#2",
            [
                "2026-03-09T02:30:00-04:00",
                "2026-04-13T02:30:00-04:00",
                "2026-10-12T02:30:00-04:00",
                "2026-11-09T02:30:00-05:00",
            ],
        ),
    ],
)
def test_extensions_across_both_transitions(tz: str, expr: str, expected: list[str]) -> None:
    fires = [f.local.isoformat() for f in upcoming(CronSchedule(expr, tz), utc(2026, 3, 1), 12)]
    march, april, october, november = (
        next(f for f in fires if f[5:7] == month) for month in ("03", "04", "10", "11")
    )
    assert [march, april, october, november] == expected
