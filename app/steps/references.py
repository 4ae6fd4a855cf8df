"""Checking a job's ``{"$from": ...}`` references before it runs.

A reference must name an earlier step of the same job (or a field of the job, or a run
token), and its first
key must be one the referenced step's type outputs (``StepFactory`` knows each type's
``output_fields``); a key whose value is a scalar cannot be stepped into. What depends on
the data (a row index, a column) is left to the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import fields
from typing import Any

from app.domain.errors import FieldError
from app.domain.models import JobDefinition
from app.steps.context import REFERENCE_KEY, ParameterReferenceError, parse_reference

#: A step type's output: key -> whether its value is a container (``True``) or a scalar.
OutputFields = Mapping[str, bool]
_JOB_FIELDS = frozenset(f.name for f in fields(JobDefinition))


def reference_errors(
    steps: Sequence[Any], output_fields: Callable[[str], OutputFields | None]
) -> list[FieldError]:
    """Every bad ``$from`` in the steps' ``parameters``, each naming its field.

    ``output_fields(step_type)``: the type's output keys, or None when unknown (not checked).
    """
    errors: list[FieldError] = []
    earlier: dict[str, str] = {}
    all_ids = {s.get("step_id"): s.get("type") for s in steps if isinstance(s, dict)}
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            continue
        for where, path in _references(step.get("parameters"), f"steps[{i}].parameters"):
            problem = _problem(path, earlier, all_ids, output_fields)
            if problem is not None:
                errors.append(FieldError(f"{where}.{REFERENCE_KEY}", problem))
        step_id, step_type = step.get("step_id"), step.get("type")
        if isinstance(step_id, str) and isinstance(step_type, str):
            earlier[step_id] = step_type
    return errors


def _references(value: Any, where: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        if REFERENCE_KEY in value:
            yield where, value[REFERENCE_KEY]
            return
        for key, item in value.items():
            yield from _references(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _references(item, f"{where}[{index}]")


def _problem(
    path: Any,
    earlier: Mapping[str, str],
    all_ids: Mapping[Any, Any],
    output_fields: Callable[[str], OutputFields | None],
) -> str | None:
    try:
        tokens = parse_reference(path)
    except ParameterReferenceError as exc:
        return str(exc)
    root, name, rest = tokens[0], tokens[1], tokens[2:]
    if not isinstance(name, str):
        return f"{path!r}: {root!r} must be followed by a name, not an index"
    if root == "job":
        if name not in _JOB_FIELDS:
            return f"{path!r}: a job has no field {name!r}"
        return None
    if root != "steps":  # run.<token>: parse_reference checked the token
        return None
    if name not in earlier:
        if name in all_ids:
            return f"{path!r}: step {name!r} does not run before this step"
        known = ", ".join(repr(s) for s in earlier) or "none"
        return f"{path!r}: no earlier step {name!r} in this job (earlier steps: {known})"
    outputs = output_fields(earlier[name])
    if outputs is None or not rest:
        return None
    key = rest[0]
    if not isinstance(key, str) or key not in outputs:
        keys = ", ".join(sorted(outputs))
        return f"{path!r}: a {earlier[name]} step outputs {keys}; not {key!r}"
    if len(rest) > 1 and not outputs[key]:
        return f"{path!r}: {key!r} of a {earlier[name]} step is a single value"
    return None
