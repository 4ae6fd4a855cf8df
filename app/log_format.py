"""Log line formats of the service: ``text`` (default) or ``json`` (``V2_LOG_FORMAT=json``,
one JSON object per line, for a log shipper).

A JSON line has ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` and every field a
call passed with ``extra=`` (``job_id``, ``execution_id``, ``status``, ...); a traceback goes
into ``exc_info`` as text.

Either way secrets are masked before a line is written (``redact``): passwords in URLs,
bearer tokens, API keys, ``PWD=`` values. ``python -m app`` starts uvicorn with
``log_config=None``, so uvicorn's lines go through the same handler and format.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

_SECRETS = (
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@"), r"\1***@"),  # URL password
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
    (re.compile(r"\bjsv2_[A-Za-z0-9_-]+"), "jsv2_***"),  # an API key (app.api.keys)
    (re.compile(r"(?i)\b(password|pwd)=[^;&\s]+"), r"\1=***"),  # ODBC-style strings
)


def redact(text: str) -> str:
    """``text`` with every secret it appears to contain masked."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFormatter(logging.Formatter):
    """The text format, secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


#: Attributes every LogRecord has: the rest were passed with ``extra=``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        return redact(json.dumps(data, default=str, ensure_ascii=False))


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    return RedactingFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
