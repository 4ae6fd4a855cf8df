"""Exact five-field cron: cronie's (Debian cron's) matching rules, through ``cronsim``.

``cronsim`` implements cronie's field rules exactly (names, ranges, lists, steps, and the
rule that a day-of-month or day-of-week field starting with ``*`` makes the two combine with
AND instead of OR) and the extensions SQL Server Agent's relative schedules need: ``L`` and
``LW`` in day-of-month, ``nL`` and ``n#k`` in day-of-week. ``ExactCron`` adds Quartz's ``nW``
(the weekday nearest day n, within the same month). It is used on naive wall-clock times
only; the DST rules are applied by ``CronSchedule`` in ``schedules.py``.

``cron_problems`` explains a malformed expression field by field (a reversed range such as
``5-1``, an out-of-range value, an unknown name), so the API can answer a 400 that says which
field is wrong and why.
"""

from __future__ import annotations

import calendar
import re
from datetime import date, datetime

from cronsim import CronSim, CronSimError
from cronsim.explain import explain

FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_NAMES: tuple[dict[str, int], ...] = (
    {},
    {},
    {},
    {
        m: i + 1
        for i, m in enumerate(
            ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
        )
    },
    {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])},
)
_NEAREST = re.compile(r"^([0-9]{1,2})W$")


def nearest_weekday(year: int, month: int, day: int) -> int | None:
    """Quartz's ``nW``: day ``day`` if it is Monday-Friday, else the nearest weekday in the
    same month (Saturday -> Friday, or Monday when the 1st is a Saturday; Sunday -> Monday,
    or Friday when the Sunday is the month's last day). None when the month lacks the day."""
    last = calendar.monthrange(year, month)[1]
    if day > last:
        return None
    weekday = date(year, month, day).weekday()
    if weekday == 5:
        return day - 1 if day > 1 else day + 2
    if weekday == 6:
        return day + 1 if day < last else day - 2
    return day


class ExactCron(CronSim):
    """``CronSim`` plus ``nW`` terms in the day-of-month field."""

    def __init__(self, expression: str, dt: datetime) -> None:
        parts = expression.upper().split()
        self.nearest: set[int] = set()
        if len(parts) == 5:
            terms = parts[2].split(",")
            plain = {t for t in terms if not _NEAREST.match(t)}
            for term in terms:
                found = _NEAREST.match(term)
                if found:
                    self.nearest.add(int(found.group(1)))
            parts[2] = ",".join(t[:-1] if _NEAREST.match(t) else t for t in terms)
        super().__init__(" ".join(parts), dt)
        if self.nearest:
            kept = {int(t) for t in plain if t.isdigit()}
            self.days = {d for d in self.days if d < 0 or d in kept or d not in self.nearest}

    def match_dom(self, d: date) -> bool:
        if super().match_dom(d):
            return True
        return any(nearest_weekday(d.year, d.month, n) == d.day for n in self.nearest)


def _term_problem(index: int, term: str) -> str | None:
    low, high = _BOUNDS[index]
    names = _NAMES[index]

    def value(text: str) -> int | None:
        if text in names:
            return names[text]
        return int(text) if text.isdigit() else None

    base, _, step = term.partition("/")
    if step and (not step.isdigit() or int(step) == 0):
        return f"step {step!r} must be a whole number of at least 1"
    if base == "*":
        return None
    if index == 2 and base in ("L", "LW"):
        return None
    if index == 2 and _NEAREST.match(base):
        day = int(base[:-1])
        return None if 1 <= day <= 31 else f"{base!r}: nW needs a day from 1 to 31"
    if index == 4 and base.endswith("L") and base[:-1].isdigit():
        return None if int(base[:-1]) <= 7 else f"{base!r}: nL needs a weekday 0-7"
    if index == 4 and "#" in base:
        day_text, _, nth = base.partition("#")
        if value(day_text) is None or not nth.isdigit() or not 1 <= int(nth) <= 5:
            return f"{base!r}: n#k needs a weekday 0-7 and a week 1-5"
        return None
    start_text, dash, end_text = base.partition("-")
    start, end = value(start_text), value(end_text) if dash else None
    if start is None or (dash and end is None):
        return f"{base!r} is not a number, range or name"
    for bound in (start, end):
        if bound is not None and not low <= bound <= high:
            return f"{bound} is outside {low}-{high}"
    if end is not None and end < start:
        return f"range {base!r} is reversed: cron ranges go upward ({start_text}-{end_text})"
    return None


def cron_problems(expression: str) -> list[str]:
    """What is wrong with a 5-field cron expression, one message per bad field (empty: it is
    valid and fires on some real date)."""
    parts = expression.upper().split()
    if len(parts) != 5:
        return [
            f"must have exactly 5 fields: minute hour day-of-month month day-of-week "
            f"(got {len(parts)})"
        ]
    problems = []
    for index, field in enumerate(parts):
        for term in field.split(","):
            problem = _term_problem(index, term)
            if problem is not None:
                problems.append(f"cron {FIELDS[index]} field {field!r}: {problem}")
                break
    if problems:
        return problems
    try:
        next(ExactCron(expression, datetime(2000, 1, 1)))
    except (CronSimError, StopIteration):
        return [f"{expression!r} never matches a real date"]
    return []


def describe_cron(expression: str) -> str:
    """Plain English for an expression (cronsim's explainer, so the words follow the same
    AND/OR rule as the matching), with ``nW`` terms spelled out."""
    problems = cron_problems(expression)
    if problems:  # a definition stored before cron was exact (croniter accepted "5-1")
        return f"Never: {'; '.join(problems)}"
    parts = expression.upper().split()
    nearest = [t for t in parts[2].split(",") if _NEAREST.match(t)]
    if not nearest:
        return explain(expression)
    parts[2] = ",".join(t[:-1] if _NEAREST.match(t) else t for t in parts[2].split(","))
    text = explain(" ".join(parts))
    days = ", ".join(t[:-1] for t in nearest)
    return f"{text} (day {days} moved to the nearest weekday of the same month)"
