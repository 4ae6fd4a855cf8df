"""Confining ``script_path`` and ``working_directory`` to the server's script roots.

A path is allowed when, with every symlink followed (``os.path.realpath``), it lies inside
one of the roots (``V2_SCRIPT_ROOTS``). Refused outright: NUL characters and any ``..``
component (even one that would resolve inside a root). A relative ``script_path`` is taken
from the working directory, a relative ``working_directory`` (or a relative ``script_path``
without one) from the first root.

The API checks at submission; the step checks again when it runs (the file system may have
changed) and runs the *resolved* path, so a symlink swapped in after the check is not
followed. Roots should be writable only by whoever may change what jobs run.

``roots is None`` means unconfined (a ``StepResources`` built by library code without
roots); the service always passes a tuple, and an empty one refuses both fields.
"""

from __future__ import annotations

import os
from collections.abc import Sequence


class PathNotAllowedError(ValueError):
    """``field`` names a path outside the script roots (or a malformed one)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def real_roots(roots: Sequence[str]) -> list[str]:
    """The roots with symlinks resolved (a root may itself be a symlink)."""
    return [os.path.realpath(root) for root in roots if root]


def confine(
    value: str,
    roots: Sequence[str] | None,
    *,
    field: str,
    base: str | None = None,
) -> str:
    """The real path of ``value`` if it lies inside one of ``roots``.

    ``base`` is the directory a relative ``value`` is taken from (default: the first root;
    unconfined: the current directory). Raises :class:`PathNotAllowedError` naming ``field``.
    """
    if "\x00" in value:
        raise PathNotAllowedError(field, "must not contain NUL characters")
    if roots is None:
        return os.path.abspath(os.path.join(base or os.getcwd(), value))
    resolved_roots = real_roots(roots)
    if not resolved_roots:
        raise PathNotAllowedError(
            field,
            "is not allowed: no script roots are configured on the server "
            "(the operator sets V2_SCRIPT_ROOTS to the directories scripts may come from)",
        )
    if ".." in value.replace(os.sep, "/").split("/"):
        raise PathNotAllowedError(field, "must not contain '..'")
    start = base if base is not None else resolved_roots[0]
    real = os.path.realpath(os.path.join(start, value))
    for root in resolved_roots:
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            return real
    raise PathNotAllowedError(
        field,
        f"{value!r} is outside the script roots (V2_SCRIPT_ROOTS) once symlinks are followed",
    )


def confine_step_paths(
    working_directory: str | None,
    script_path: str | None,
    roots: Sequence[str] | None,
    *,
    prefix: str = "",
) -> tuple[str | None, str | None, list[PathNotAllowedError]]:
    """(working directory, script path, problems) of one step, each confined to ``roots``.

    Field names are prefixed by ``prefix`` (``steps[0]``). A relative script path is taken
    from the (confined) working directory when there is one.
    """

    def where(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    problems: list[PathNotAllowedError] = []
    cwd: str | None = None
    script: str | None = None
    if working_directory is not None:
        try:
            cwd = confine(working_directory, roots, field=where("working_directory"))
        except PathNotAllowedError as exc:
            problems.append(exc)
    wd_failed = working_directory is not None and cwd is None
    if script_path is not None and not (wd_failed and not os.path.isabs(script_path)):
        try:
            script = confine(script_path, roots, field=where("script_path"), base=cwd)
        except PathNotAllowedError as exc:
            problems.append(exc)
    return cwd, script, problems
