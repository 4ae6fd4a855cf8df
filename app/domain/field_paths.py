"""Pydantic validation errors as :class:`FieldError` s whose paths read like the input.

The one converter every layer uses (the step configurations in ``app.steps``, the request
models in ``app.api``): ``("steps", 0, "shell", "script")`` -> ``steps[0].script``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from app.domain.errors import FieldError

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
