"""T-SQL batches: a SQL Server step's query split on ``GO`` lines as SQLCMD splits a script.

``GO`` is not T-SQL: SQLCMD, SSMS and SQL Server Agent's T-SQL job steps cut the script
into batches on it and send each batch on its own. The rules followed here (SQLCMD's):

* ``GO`` is the first token of its line, case-insensitive; whitespace around it is fine;
* it may be followed by a repeat count (``GO 3`` runs the batch before it three times) and a
  ``-- comment``; anything else on the line is an error (as in SQLCMD);
* a ``GO`` inside a string (``'..'``, ``N'..'``, ``''`` escapes), a quoted identifier
  (``".."``, ``[..]``), a ``--`` comment or a (nested) ``/* */`` comment is text;
* batches that hold only whitespace and comments are not sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.steps.sql_text import Kind, code_lines, go_line, may_have_go_lines, tokens


@dataclass(frozen=True)
class Batch:
    """One batch: its text, how many times it runs, the query line it starts on."""

    text: str
    repeat: int = 1
    first_line: int = 1


class BatchSyntaxError(ValueError):
    """A ``GO`` line that SQLCMD would refuse; ``problems`` name the lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def split_batches(query: str) -> list[Batch]:
    """The batches of ``query``, in order (``[Batch(query)]`` when it has no ``GO`` line).

    Raises:
        BatchSyntaxError: a ``GO`` line has something other than a count and a comment
    """
    batches: list[Batch] = []
    if not may_have_go_lines(query):  # the common case, without lexing every line
        _append(batches, query, 1, 1)
        return batches
    problems: list[str] = []
    start, first_line = 0, 1
    for line in code_lines(query, "mssql"):
        go = go_line(line)
        if go is None:
            continue
        if go.problem:
            problems.append(go.problem)
            continue
        _append(batches, query[start : line.start], go.count or 1, first_line)
        start, first_line = line.end, line.number + 1
    if problems:
        raise BatchSyntaxError(problems)
    _append(batches, query[start:], 1, first_line)
    return batches


def _append(batches: list[Batch], text: str, repeat: int, first_line: int) -> None:
    if any(t.kind in (Kind.WORD, Kind.QUOTED, Kind.PUNCT) for t in tokens(text, "mssql")):
        batches.append(Batch(text, repeat, first_line))
