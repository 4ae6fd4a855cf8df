"""``schedule_description``: one schedule_config in plain English.

Cron expressions are explained by ``cronsim``'s explainer (the same library that matches
them, so the words follow cronie's AND/OR day rule); the other kinds are spelled out here.
"""

from __future__ import annotations

from typing import Any

from app.domain.cron import describe_cron

_ORDINAL_WEEK = {
    "first": "first",
    "second": "second",
    "third": "third",
    "fourth": "fourth",
    "last": "last",
}
_RELATIVE_DAY = {"day": "day", "weekday": "weekday", "weekend_day": "weekend day"}


def _clock(text: str) -> str:
    return text[:5] if text.endswith(":00") and text.count(":") == 2 else text


def _every(count: int, unit: str) -> str:
    singular = unit[:-1] if unit.endswith("s") else unit
    return f"every {singular}" if count == 1 else f"every {count} {singular}s"


def _seconds(seconds: int) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds % size == 0:
            return _every(seconds // size, unit)
    return _every(seconds, "seconds")


def _join(names: list[str]) -> str:
    words = [n.capitalize() for n in names]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _calendar(config: dict[str, Any]) -> str:
    repeat = config.get("repeat")
    if repeat:
        times = (
            f"{_every(int(repeat['every']), repeat['unit']).capitalize()} between "
            f"{_clock(repeat.get('from', '00:00'))} and {_clock(repeat.get('until', '23:59:59'))}"
        )
    else:
        times = f"At {_clock(config.get('at') or '00:00')}"
    interval = int(config.get("interval", 1))
    frequency = config["frequency"]
    if frequency == "daily":
        days = "every day" if interval == 1 else f"every {interval} days"
    elif frequency == "weekly":
        weekdays = config.get("weekdays")
        days = f"on {_join(weekdays)}" if weekdays else "on the weekday of start_date"
        days += "" if interval == 1 else f", every {interval} weeks"
    else:
        if frequency == "monthly":
            day = config.get("day_of_month")
            days = f"on day {day} of the month" if day else "on the day of month of start_date"
        else:
            relative = config["relative"]
            what = _RELATIVE_DAY.get(relative["day"], relative["day"].capitalize())
            days = f"on the {_ORDINAL_WEEK[relative['week']]} {what} of the month"
        days += "" if interval == 1 else f", every {interval} months"
    text = f"{times}, {days}"
    if config.get("start_date"):
        text += f", from {config['start_date']}"
    if config.get("end_date"):
        text += f" until {config['end_date']}"
    return text


def _exclusion(exclude: dict[str, Any]) -> str:
    mode = exclude.get("on_excluded", "skip")
    how = {
        "skip": "skipped",
        "next_business_day": "moved to the next business day",
        "previous_business_day": "moved to the previous business day",
    }[mode]
    return f"; on days that are not business days of calendar {exclude['calendar']}: {how}"


def describe_config(config: dict[str, Any], timezone: str) -> str:
    """E.g. "At 02:30 on Monday through Friday, Europe/London"."""
    kind = config.get("type")
    if kind == "cron":
        text = describe_cron(config["expression"])
    elif kind == "interval":
        text = _seconds(int(config["every_seconds"])).capitalize()
    elif kind == "once":
        text = f"Once, at {config['at']}"
    else:
        text = _calendar(config)
    if kind in ("cron", "interval"):
        if config.get("start_at"):
            text += f", from {config['start_at']}"
        if config.get("end_at"):
            text += f" until {config['end_at']}"
    text += f", {timezone}"
    if config.get("exclude"):
        text += _exclusion(config["exclude"])
    return text
