"""An independent, deliberately naive reading of crontab(5) (cronie), to check the service's
cron fires against: fields, names, ranges, lists, steps, the day-of-month/day-of-week rule
(OR when both are restricted, AND when either starts with ``*``), and the extensions the
service documents: ``L``, ``LW``, ``nW`` in day-of-month, ``nL`` and ``n#k`` in day-of-week.
It matches one wall-clock minute; it does not iterate.
"""

from __future__ import annotations

import calendar
from datetime import date, datetime, timedelta

_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


def _num(text: str, names: list[str], base: int) -> int:
    return names.index(text) + base if text in names else int(text)


def _plain(field: str, value: int, low: int, high: int, names: list[str], base: int) -> bool:
    for term in field.split(","):
        body, _, step_text = term.partition("/")
        step = int(step_text) if step_text else 1
        if body == "*":
            first, last = low, high
        elif "-" in body:
            a, b = body.split("-")
            first, last = _num(a, names, base), _num(b, names, base)
        else:
            first = _num(body, names, base)
            last = high if step_text else first
        if first <= value <= last and (value - first) % step == 0:
            return True
    return False


def _last_day(d: date) -> int:
    return calendar.monthrange(d.year, d.month)[1]


def _is_weekday(d: date) -> bool:
    return d.weekday() < 5


def _dom(field: str, d: date) -> bool:
    for term in field.split(","):
        if term == "L" and d.day == _last_day(d):
            return True
        if term == "LW":
            last = date(d.year, d.month, _last_day(d))
            while not _is_weekday(last):
                last -= timedelta(days=1)
            if d == last:
                return True
        elif term.endswith("W") and term != "LW":
            n = int(term[:-1])
            if n > _last_day(d):
                continue
            # the weekday nearest day n, never leaving the month
            candidates = [
                date(d.year, d.month, k)
                for k in range(1, _last_day(d) + 1)
                if _is_weekday(date(d.year, d.month, k))
            ]
            nearest = min(candidates, key=lambda c: (abs(c.day - n), c.day))
            if d == nearest:
                return True
        elif term not in ("L", "LW") and _plain(term, d.day, 1, 31, [], 1):
            return True
    return False


def _cron_dow(d: date) -> int:
    return (d.weekday() + 1) % 7  # Sunday 0


def _dow(field: str, d: date) -> bool:
    for term in field.split(","):
        if term.endswith("L"):
            wanted = _num(term[:-1], _DAYS, 0) % 7
            if _cron_dow(d) == wanted and d.day + 7 > _last_day(d):
                return True
        elif "#" in term:
            day_text, nth = term.split("#")
            if _cron_dow(d) == _num(day_text, _DAYS, 0) % 7 and (d.day - 1) // 7 + 1 == int(nth):
                return True
        elif _plain(term, _cron_dow(d), 0, 7, _DAYS, 0) or (
            _cron_dow(d) == 0 and _plain(term, 7, 0, 7, _DAYS, 0)
        ):
            return True
    return False


def matches(expression: str, moment: datetime) -> bool:
    """Whether wall-clock ``moment`` (naive, to the minute) matches ``expression``."""
    minute, hour, dom, month, dow = expression.upper().split()
    if moment.second or moment.microsecond:
        return False
    if not _plain(minute, moment.minute, 0, 59, [], 0):
        return False
    if not _plain(hour, moment.hour, 0, 23, [], 0):
        return False
    if not _plain(month, moment.month, 1, 12, _MONTHS, 1):
        return False
    d = moment.date()
    if dom.startswith("*") or dow.startswith("*"):
        return _dom(dom, d) and _dow(dow, d)
    return _dom(dom, d) or _dow(dow, d)
