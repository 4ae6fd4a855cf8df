"""JSON-safe conversion of database values and capping of result rows (no I/O)."""

from __future__ import annotations

import base64
import enum
import ipaddress
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from app.steps.sql_values import cap_rows, dumps, to_json_safe, unique_column_names


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        ("", ""),
        ("ünï ☃ \x00", "ünï ☃ \x00"),
        (2**70, 2**70),
        (-5, -5),
        (1.5, 1.5),
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        (float("-inf"), "-Infinity"),
        # Decimal: every digit, the scale kept, never a float.
        (Decimal("12345678901234567890.123456789"), "12345678901234567890.123456789"),
        (Decimal("0.10"), "0.10"),
        (Decimal("-0.000001"), "-0.000001"),
        (Decimal("0E-10"), "0.0000000000"),
        (Decimal("1E+3"), "1000"),
        (Decimal("NaN"), "NaN"),
        (Decimal("-Infinity"), "-Infinity"),
        (date(2024, 2, 29), "2024-02-29"),
        (datetime(2024, 1, 1, 12, 0, 0, 250000), "2024-01-01T12:00:00.250000"),
        (
            datetime(2024, 3, 10, 2, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            "2024-03-10T02:30:00+05:30",
        ),
        (datetime(2024, 1, 1, tzinfo=UTC), "2024-01-01T00:00:00+00:00"),
        (time(13, 14, 15, 500000), "13:14:15.500000"),
        (timedelta(days=1, seconds=2, microseconds=500000), 86402.5),
        (timedelta(hours=-1), -3600.0),
        (b"\x00\xff\x10", "AP8Q"),
        (bytearray(b"hi"), "aGk="),
        (memoryview(b"\x01\x02"), "AQI="),
        (uuid.UUID("9b3e4c2a-1f0e-4c7b-8a59-2d0c8f6e1a11"), "9b3e4c2a-1f0e-4c7b-8a59-2d0c8f6e1a11"),
        (ipaddress.ip_address("10.0.0.1"), "10.0.0.1"),
        (ipaddress.ip_network("10.0.0.0/8"), "10.0.0.0/8"),
        (Color.RED, "red"),
        (Level.HIGH, 3),
        ([1, Decimal("2.0"), None], [1, "2.0", None]),
        ((b"a", date(2020, 1, 1)), ["YQ==", "2020-01-01"]),
        ({"a": Decimal("1.1"), 2: [b"x"]}, {"a": "1.1", "2": ["eA=="]}),
        ({"b", "a", "c"}, ["a", "b", "c"]),
        (frozenset({3, 1}), [1, 3]),
    ],
)
def test_to_json_safe(value: Any, expected: Any) -> None:
    converted = to_json_safe(value)

    assert converted == expected
    assert type(converted) is type(expected)
    json.dumps(converted, allow_nan=False)  # always encodable


def test_bytes_round_trip_through_base64() -> None:
    raw = bytes(range(256))
    assert base64.b64decode(str(to_json_safe(raw))) == raw


def test_decimal_survives_json_exactly() -> None:
    value = Decimal("99999999999999999999999999.000000000000000001")
    assert Decimal(json.loads(dumps(to_json_safe(value)))) == value


def test_unknown_types_fall_back_to_str() -> None:
    class Range:
        def __str__(self) -> str:
            return "[1,5)"

    assert to_json_safe(Range()) == "[1,5)"


def test_dumps_is_compact_and_keeps_unicode() -> None:
    assert dumps([{"a": "☃", "b": None}]) == '[{"a":"☃","b":null}]'
    with pytest.raises(ValueError):
        dumps(float("nan"))


def test_unique_column_names() -> None:
    assert unique_column_names(["n", "n", "m", "n", "n_2"]) == ["n", "n_2", "m", "n_3", "n_2_2"]
    assert unique_column_names([]) == []


def _rows(count: int) -> list[tuple[int, str]]:
    return [(i, "x") for i in range(1, count + 1)]


def test_cap_rows_by_count() -> None:
    capped = cap_rows(["n", "s"], _rows(5), max_rows=3, max_bytes=10_000)

    assert [r["n"] for r in capped.rows] == [1, 2, 3]
    assert capped.truncated is True
    assert json.loads(capped.json_text) == capped.rows


def test_cap_rows_exactly_at_the_limit_is_not_truncated() -> None:
    capped = cap_rows(["n", "s"], _rows(3), max_rows=3, max_bytes=10_000)

    assert len(capped.rows) == 3
    assert capped.truncated is False


def test_cap_rows_by_bytes_counts_utf8_and_commas() -> None:
    row = '{"s":"☃☃"}'  # 13 bytes in UTF-8
    size_two = 2 + 2 * len(row.encode()) + 1

    exact = cap_rows(["s"], [("☃☃",)] * 5, max_rows=100, max_bytes=size_two)
    one_short = cap_rows(["s"], [("☃☃",)] * 5, max_rows=100, max_bytes=size_two - 1)

    assert len(exact.rows) == 2
    assert len(exact.json_text.encode()) == size_two
    assert exact.truncated is True
    assert len(one_short.rows) == 1
    assert one_short.truncated is True


def test_cap_rows_first_row_too_big() -> None:
    capped = cap_rows(["s"], [("x" * 100,)], max_rows=10, max_bytes=50)

    assert capped.rows == []
    assert capped.json_text == "[]"
    assert capped.truncated is True


def test_cap_rows_reads_at_most_one_row_past_the_limit() -> None:
    consumed = 0

    def rows() -> Iterator[tuple[int]]:
        nonlocal consumed
        for i in range(1_000_000):
            consumed += 1
            yield (i,)

    capped = cap_rows(["n"], rows(), max_rows=10, max_bytes=10_000)

    assert len(capped.rows) == 10
    assert consumed == 11


def test_cap_rows_empty() -> None:
    capped = cap_rows(["n"], [], max_rows=10, max_bytes=10)

    assert capped.rows == []
    assert capped.json_text == "[]"
    assert capped.truncated is False
