"""Issue 12 item 10: no secret ever appears in a log line, in either format."""

from __future__ import annotations

import logging

import pytest

from app.log_format import formatter, redact


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("connect to postgresql+asyncpg://etl:s3cret@db/warehouse failed", "s3cret"),
        ("Authorization: Bearer jsv2_abcdefghijklmnopqrstuvwxyz0123456789", "jsv2_abc"),
        ("key jsv2_abcdefghijklmnopqrstuvwxyz0123456789 refused", "jsv2_abc"),
        ("DRIVER={ODBC};SERVER=x;UID=sa;PWD=hunter2;", "hunter2"),
    ],
)
def test_no_secret_reaches_a_line(text: str, secret: str) -> None:
    record = logging.makeLogRecord({"msg": "%s", "args": (text,), "levelname": "ERROR"})

    for log_format in ("text", "json"):
        line = formatter(log_format).format(record)
        assert secret not in line and "***" in line
    assert secret not in redact(text)


def test_ordinary_text_is_left_alone() -> None:
    text = "execution finished job_id=a status=success duration=0.1s url=http://host/path"

    assert redact(text) == text
