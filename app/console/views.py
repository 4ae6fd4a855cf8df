"""Template filters: times in UTC and in a zone, durations, schedules, masked parameters."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

#: Parameter names whose values the console never shows.
SECRET_NAME = re.compile(r"pass|secret|token|key|pwd|credential|auth", re.IGNORECASE)


def utc(value: datetime | None) -> str:
    if value is None:
        return "-"
    return f"{value.astimezone(ZoneInfo('UTC')):%Y-%m-%d %H:%M:%S} UTC"


def local(value: datetime | None, timezone: str) -> str:
    if value is None:
        return "-"
    moment = value.astimezone(ZoneInfo(timezone))
    return f"{moment:%Y-%m-%d %H:%M:%S} {moment:%Z} ({moment:%z})"


def clock(value: datetime | None, timezone: str = "UTC") -> str:
    if value is None:
        return "-"
    return f"{value.astimezone(ZoneInfo(timezone)):%H:%M:%S}"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.2f} s"
    minutes, rest = divmod(int(value), 60)
    return f"{minutes} min {rest} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def schedule_text(config: Any) -> str:
    """The schedule as written: a cron expression, an interval, a single time."""
    if hasattr(config, "model_dump"):  # the API's typed schedule_config
        config = config.model_dump(mode="json", exclude_none=True)
    if not isinstance(config, dict) or not config:
        return "no schedule"
    kind = config.get("type")
    if kind == "cron":
        return str(config.get("expression"))
    if kind == "interval":
        return f"every {seconds(float(config.get('every_seconds') or 0))}"
    if kind == "once":
        return f"once at {config.get('at')}"
    return str(kind)


def masked(parameters: dict[str, Any] | None) -> dict[str, Any]:
    """Parameters with the values of secret-looking names replaced."""
    return {
        name: "••••••" if SECRET_NAME.search(name) else value
        for name, value in (parameters or {}).items()
    }


FILTERS = {
    "utc": utc,
    "local": local,
    "clock": clock,
    "seconds": seconds,
    "schedule_text": schedule_text,
    "masked": masked,
}
