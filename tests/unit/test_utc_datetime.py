"""``UTCDateTime`` on SQLite binds the very text SQLAlchemy's own DATETIME stores (naive UTC,
always six digits of microseconds), only faster; naive datetimes are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import sqlite
from sqlalchemy.types import TypeDecorator

from app.persistence.types import UTCDateTime

VALUES = [
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(999, 2, 3, 4, 5, 6, tzinfo=UTC),
    datetime(2026, 1, 1, tzinfo=UTC),
    datetime(2026, 5, 6, 7, 8, 9, 123, tzinfo=timezone(timedelta(hours=5))),
    datetime(2026, 5, 6, 1, 8, 9, 999_999, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),
    None,
]


@pytest.mark.parametrize("value", VALUES)
def test_sqlite_text_is_sqlalchemys(value: datetime | None) -> None:
    dialect = sqlite.dialect()
    type_ = UTCDateTime().dialect_impl(dialect)
    ours = type_.bind_processor(dialect)
    sqlalchemys = TypeDecorator.bind_processor(type_, dialect)  # DATETIME's storage format
    assert ours is not None and sqlalchemys is not None
    assert ours(value) == sqlalchemys(value)


def test_a_naive_datetime_is_refused() -> None:
    dialect = sqlite.dialect()
    process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    with pytest.raises(ValueError, match="naive datetime"):
        process(datetime(2026, 1, 1))
