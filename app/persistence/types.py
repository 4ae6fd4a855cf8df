"""Column types: timestamps that are timezone-aware UTC on every backend."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that only accepts aware datetimes and always returns
    aware UTC ones.

    PostgreSQL stores ``timestamptz``. SQLite has no timezone support, so values are stored
    as naive UTC text (which also sorts correctly) and get ``tzinfo=UTC`` back on read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} cannot be stored; use aware UTC")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """On SQLite, the text SQLAlchemy's DATETIME stores ("YYYY-MM-DD HH:MM:SS.ffffff"),
        made by ``isoformat`` (half the time: every history row binds four times)."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        to_naive_utc = self.process_bind_param

        def process(value: datetime | None) -> str | None:
            naive = to_naive_utc(value, dialect)
            return None if naive is None else naive.isoformat(" ", "microseconds")

        return process

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
