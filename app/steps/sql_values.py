"""JSON-safe conversion of database values and capped result sets for the SQL step.

Drivers hand back Python objects that ``json`` cannot encode, or could encode only by losing
information. Every value of a result row goes through :func:`to_json_safe`:

==========================================  ===================================================
driver value                                JSON value
==========================================  ===================================================
``None``, ``bool``, ``int``, ``str``         unchanged (integers keep every digit)
``float``                                   unchanged; NaN/Infinity/-Infinity become the
                                            strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``
``Decimal``                                 string in plain notation, every digit and the
                                            column's scale kept (``"12.50"``, not ``12.5``);
                                            NaN/Infinity as above
``datetime``, ``date``, ``time``            ISO 8601 (``datetime.isoformat()``); aware values
                                            keep their offset, naive ones stay naive (as stored)
``timedelta`` (intervals, MariaDB TIME)     total seconds as a number (``90.5``)
``bytes``, ``bytearray``, ``memoryview``    standard base64 with padding (RFC 4648 section 4)
``UUID``, IP addresses and networks         ``str(value)``
``Enum``                                    its ``value``, converted
``list``, ``tuple`` (PostgreSQL arrays)      list, items converted
``set``, ``frozenset`` (MariaDB SET)         sorted list of the converted items
``dict``                                    object with string keys, values converted
anything else (asyncpg ``Range`` ...)       ``str(value)``
==========================================  ===================================================

JSON/JSONB columns read through a plain text query arrive as their JSON text and stay strings
(on every dialect), so a value is never silently re-shaped.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]

_IP_TYPES = (
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
    ipaddress.IPv4Interface,
    ipaddress.IPv6Interface,
)


def to_json_safe(value: Any) -> JsonValue:
    """``value`` as something ``json.dumps(..., allow_nan=False)`` encodes without loss."""
    if isinstance(value, Enum):  # before str/int: StrEnum and IntEnum members too
        return to_json_safe(value.value)
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, Decimal):
        return _decimal(value)
    if isinstance(value, datetime | date | time):  # datetime is a date: one branch
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (uuid.UUID, *_IP_TYPES)):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        items = [to_json_safe(v) for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, list | tuple):
        return [to_json_safe(v) for v in value]
    return str(value)


def _float(value: float) -> JsonValue:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _decimal(value: Decimal) -> str:
    if value.is_nan():
        return "NaN"
    if value.is_infinite():
        return "-Infinity" if value.is_signed() else "Infinity"
    # Plain notation keeps every digit and the scale: Decimal("0E-10") -> "0.0000000000".
    return format(value, "f")


def dumps(value: JsonValue) -> str:
    """Compact JSON text (UTF-8 characters kept as they are)."""
    return _ENCODER.encode(value)


# What ``json.dumps`` builds on every call given these options: one is enough (it keeps no
# state between calls); it runs once per result row.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def unique_column_names(keys: Iterable[str]) -> list[str]:
    """Column labels usable as object keys: a repeated label gets ``_2``, ``_3`` ...

    ``SELECT 1 AS n, 2 AS n`` would otherwise lose a column when rows become objects.
    """
    seen: set[str] = set()
    out: list[str] = []
    for raw in keys:
        name = str(raw)
        if name in seen:
            n = 2
            while f"{name}_{n}" in seen:
                n += 1
            name = f"{name}_{n}"
        seen.add(name)
        out.append(name)
    return out


@dataclass(frozen=True)
class CappedRows:
    """Rows kept within the limits, and whether any were left out."""

    rows: list[dict[str, JsonValue]]
    truncated: bool
    json_text: str


def cap_rows(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    max_rows: int,
    max_bytes: int,
) -> CappedRows:
    """Convert rows to JSON-safe objects, keeping at most ``max_rows`` of them and at most
    ``max_bytes`` bytes (UTF-8) of the JSON text of the list. Rows are kept whole, in order;
    ``truncated`` says some were left out. ``rows`` is read lazily: one row past the limit at
    most.
    """
    kept: list[dict[str, JsonValue]] = []
    encoded: list[str] = []
    size = 2  # "[]"
    truncated = False
    for row in rows:
        if len(kept) >= max_rows:
            truncated = True
            break
        obj = {name: to_json_safe(v) for name, v in zip(columns, row, strict=True)}
        text = dumps(obj)
        extra = len(text.encode("utf-8")) + (1 if kept else 0)  # the comma between rows
        if size + extra > max_bytes:
            truncated = True
            break
        size += extra
        kept.append(obj)
        encoded.append(text)
    return CappedRows(kept, truncated, "[" + ",".join(encoded) + "]")
