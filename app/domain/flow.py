"""Step routing (SQL Server Agent's on-success / on-failure actions) and its validation.

Each step has ``on_success`` (default ``"next"``) and ``on_failure`` (default
``"quit_failure"``; ``"next"`` with ``continue_on_failure: true``), each one of ``"next"``,
``"quit_success"``, ``"quit_failure"`` or ``{"goto": "<step_id>"}``. ``"next"`` after the
last step ends the job. A job is checked when it is submitted or stored: every goto names a
step of the job, and no step is reached from which the job can never end (a step that only
routes to itself, or a loop without a way out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.domain.errors import FieldError

NEXT = "next"
QUIT_SUCCESS = "quit_success"
QUIT_FAILURE = "quit_failure"
ACTIONS = (NEXT, QUIT_SUCCESS, QUIT_FAILURE)

#: Step runs allowed in one attempt of a job unless it sets ``max_step_runs``.
DEFAULT_MAX_STEP_RUNS = 100
MAX_MAX_STEP_RUNS = 100_000


@dataclass(frozen=True)
class Route:
    """Where the job goes after a step: ``action`` is ``next``, ``quit_success``,
    ``quit_failure`` or ``goto`` (then ``target`` is a step_id)."""

    action: str
    target: str | None = None

    def describe(self) -> str:
        return f"goto {self.target!r}" if self.action == "goto" else self.action


def parse_route(value: Any) -> Route | None:
    """The route ``value`` means, or None when it is not a valid route."""
    if isinstance(value, str) and value in ACTIONS:
        return Route(value)
    if (
        isinstance(value, dict)
        and set(value) == {"goto"}
        and isinstance(value["goto"], str)
        and value["goto"]
    ):
        return Route("goto", value["goto"])
    return None


def on_success(config: dict[str, Any]) -> Route:
    return parse_route(config.get("on_success", NEXT)) or Route(NEXT)


def on_failure(config: dict[str, Any]) -> Route:
    default = NEXT if config.get("continue_on_failure") is True else QUIT_FAILURE
    return parse_route(config.get("on_failure", default)) or Route(QUIT_FAILURE)


def successor(steps: list[dict[str, Any]], index: int, route: Route) -> int | None:
    """Index of the step ``route`` leads to from ``steps[index]``; None when the job ends."""
    if route.action == NEXT:
        return index + 1 if index + 1 < len(steps) else None
    if route.action == "goto":
        for position, config in enumerate(steps):
            if config.get("step_id") == route.target:
                return position
    return None


def routing_errors(steps: Any, max_step_runs: Any = DEFAULT_MAX_STEP_RUNS) -> list[FieldError]:
    """Every routing problem of a job's ``steps`` (shape problems are the step schema's)."""
    errors: list[FieldError] = []
    if not isinstance(max_step_runs, int) or isinstance(max_step_runs, bool):
        errors.append(FieldError("max_step_runs", "must be an integer"))
    elif not 1 <= max_step_runs <= MAX_MAX_STEP_RUNS:
        errors.append(FieldError("max_step_runs", f"must be between 1 and {MAX_MAX_STEP_RUNS}"))
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        return errors
    ids = {s.get("step_id") for s in steps if isinstance(s.get("step_id"), str)}
    routes_ok = True
    for index, config in enumerate(steps):
        for name in ("on_success", "on_failure"):
            if name not in config:
                continue
            route = parse_route(config[name])
            if route is None:
                routes_ok = False  # reported by the step schema
            elif route.action == "goto" and route.target not in ids:
                # Reported here; the trap check below reads it as an end of the job.
                errors.append(
                    FieldError(
                        f"steps[{index}].{name}.goto",
                        f"no step has step_id {route.target!r}",
                    )
                )
        if (
            config.get("continue_on_failure") is True
            and "on_failure" in config
            and config["on_failure"] != NEXT
        ):
            errors.append(
                FieldError(
                    f"steps[{index}].on_failure",
                    "conflicts with continue_on_failure: true (which means on_failure: "
                    '"next"); set only one',
                )
            )
    if routes_ok and steps:
        errors.extend(_trap_errors(steps))
    return errors


def _trap_errors(steps: list[dict[str, Any]]) -> list[FieldError]:
    """Steps the job can reach from its first step but from which it can never end."""
    edges: list[list[int | None]] = []
    for index, config in enumerate(steps):
        edges.append(
            [
                successor(steps, index, on_success(config)),
                successor(steps, index, on_failure(config)),
            ]
        )
    # Steps from which the job can end: a route to None, or to a step that can.
    can_end = {i for i, out in enumerate(edges) if None in out}
    changed = True
    while changed:
        changed = False
        for i, out in enumerate(edges):
            if i not in can_end and any(t in can_end for t in out if t is not None):
                can_end.add(i)
                changed = True
    reachable, todo = {0}, [0]
    while todo:
        for target in edges[todo.pop()]:
            if target is not None and target not in reachable:
                reachable.add(target)
                todo.append(target)
    trapped = sorted(reachable - can_end)
    if not trapped:
        return []
    names = ", ".join(repr(steps[i].get("step_id")) for i in trapped)
    errors = []
    for i in trapped:
        config = steps[i]
        only_self = all(t == i for t in edges[i])
        reason = (
            "routes only to itself (on_success and on_failure): the job could never end"
            if only_self
            else f"is part of a loop without a way out (steps {names}): the job could never end"
        )
        errors.append(
            FieldError(f"steps[{i}].on_failure", f"step {config.get('step_id')!r} {reason}")
        )
    return errors


def loop_of(path: list[str]) -> list[str]:
    """The loop the end of ``path`` goes round: from the last step's previous run to it."""
    if not path:
        return []
    last = path[-1]
    for position in range(len(path) - 2, -1, -1):
        if path[position] == last:
            return path[position:]
    return [last]
