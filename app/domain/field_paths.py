"""Pydantic validation errors as :class:`FieldError` s whose paths read like the input.

The one converter every layer uses (the step configurations in ``app.steps``, the request
models in ``app.api``): ``("steps", 0, "shell", "script")`` -> ``steps[0].script``; and the
other way, ``with_extra_problems``: rules of our own joined to a failed validation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from app.domain.errors import FieldError

T = TypeVar("T")
_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")

#: The discriminator tags of a ``schedule_config`` (``app/domain/schemas/schedule_config.json``),
#: which pydantic puts in the path right after ``schedule_config``.
SCHEDULE_UNION_TAGS = ("cron", "interval", "once", "calendar")


def _is_union_tag(previous: int | str | None, part: str, union_tags: Collection[str]) -> bool:
    if previous == "schedule_config":
        return part in SCHEDULE_UNION_TAGS
    return isinstance(previous, int) and part in union_tags


def field_path(loc: Sequence[int | str], prefix: str = "", union_tags: Collection[str] = ()) -> str:
    """``loc`` as ``a.b[0].c`` under ``prefix``; a ``union_tags`` member right after a list
    index, and a schedule type right after ``schedule_config`` (the discriminators pydantic
    puts in a tagged union's path), are left out."""
    path = prefix
    for i, part in enumerate(loc):
        previous = loc[i - 1] if i >= 1 else None
        if isinstance(part, int):
            path += f"[{part}]"
        elif _is_union_tag(previous, part, union_tags):
            continue
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


def field_errors_from_pydantic(
    errors: Iterable[Mapping[str, Any]],
    prefix: str = "",
    *,
    union_tags: Collection[str] = (),
    whole: str = "body",
) -> list[FieldError]:
    """Pydantic's ``ValidationError.errors()`` as FieldErrors with readable messages.

    ``whole`` names the input as a whole (an error with an empty path, invalid JSON);
    ``union_tags``: the tags of a discriminated union (step types), left out of paths and
    listed when a tag is missing or unknown.
    """
    out: list[FieldError] = []
    expected_tags = ", ".join(repr(t) for t in union_tags)
    for err in errors:
        kind = err.get("type", "")
        ctx = err.get("ctx") or {}
        message = str(err.get("msg", "is invalid"))
        if kind == "json_invalid":
            out.append(FieldError(whole, f"is not valid JSON: {ctx.get('error', message)}"))
            continue
        field = field_path(tuple(err.get("loc", ())), prefix, union_tags) or whole
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            field = f"{field}.type"
            expected = ctx.get("expected_tags") or expected_tags
            loc = tuple(err.get("loc", ()))
            what = "schedule" if loc and loc[-1] == "schedule_config" else "step"
            message = (
                f"unknown {what} type {ctx.get('tag')!r}; expected one of {expected}"
                if kind == "union_tag_invalid"
                else f"is required (one of {expected})"
            )
        elif kind == "missing":
            message = "is required"
        elif kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "value_error" and "error" in ctx:
            message = str(ctx["error"])
        out.append(FieldError(field, message))
    return out


def with_extra_problems(
    data: Any,
    handler: Callable[[Any], T],
    problems: Callable[[Any], list[FieldError]],
    *,
    union_tags: Collection[str] = (),
) -> T:
    """``handler(data)`` (a pydantic wrap validator's handler); when it fails, its
    ValidationError with ``problems(data)`` added: those on fields it does not already report
    (the same field or one inside it), so that one answer lists every problem."""
    try:
        return handler(data)
    except ValidationError as exc:
        try:
            found = problems(data)
        except (TypeError, ValueError, KeyError, AttributeError):
            # The extra rules assume more of the data than the schema check could; it has
            # failed, so the schema's errors stand alone.
            found = []
        extra = _uncovered(exc, found, union_tags)
        if not extra:
            raise
        try:
            details = [_detail(e) for e in exc.errors()] + [
                InitErrorDetails(
                    type=PydanticCustomError("domain_rule", "{message}", {"message": e.message}),
                    loc=_loc(e.field),
                    input=data,
                )
                for e in extra
            ]
            combined = ValidationError.from_exception_data(exc.title, details)
        except (TypeError, KeyError, ValueError):  # an error pydantic cannot rebuild
            raise exc from None
        raise combined from None


def _detail(error: Any) -> InitErrorDetails:
    detail = InitErrorDetails(type=error["type"], loc=error["loc"], input=error.get("input"))
    if "ctx" in error:
        detail["ctx"] = error["ctx"]
    return detail


def _uncovered(
    exc: ValidationError, problems: list[FieldError], union_tags: Collection[str]
) -> list[FieldError]:
    covered = [field_path(tuple(e["loc"]), union_tags=union_tags) for e in exc.errors()]

    def is_covered(name: str) -> bool:
        return any(name == c or name.startswith((f"{c}.", f"{c}[")) or not c for c in covered)

    return [p for p in problems if not is_covered(p.field)]


def _loc(path: str) -> tuple[int | str, ...]:
    return tuple(name if name else int(index) for name, index in _PART.findall(path))
