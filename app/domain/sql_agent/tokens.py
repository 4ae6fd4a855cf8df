"""SQL Server Agent tokens in a step's command, translated to values bound at run time.

SQL Server Agent replaces ``$(TOKEN)`` and ``$(ESCAPE_xxx(TOKEN))`` in the command text
before it runs the step. Here nothing is ever spliced into SQL or a script: a token that
has a counterpart becomes a parameter whose value is a ``{"$from": ...}`` reference
(``TOKEN_SOURCES``), bound as the step type binds parameters:

* T-SQL: a bound ``:name`` parameter. A token that is a whole string literal
  (``N'$(ESCAPE_SQUOTE(JOBNAME))'``) replaces the literal; a bare token
  (``$(ESCAPE_NONE(JOBID))``) is replaced in place. A token *inside* a longer string literal,
  a quoted identifier or brackets cannot be a parameter and is reported, left as it is.
  Every other ``:name`` of the text is escaped (``\\:name``) so SQLAlchemy's ``text()``
  does not read it as a placeholder.
* CmdExec (run here by ``/bin/sh``): an environment variable (shell parameters are
  environment variables), quoted for where the token stands: ``"${SQLAGENT_JOBNAME}"``
  bare, ``${...}`` in double quotes, ``'"${...}"'`` in single quotes.
* PowerShell: a script parameter, declared by a ``param(...)`` line put before the script
  (``${SqlAgentJobName}`` bare or in double quotes). In single quotes, or in a script that
  declares its own ``param`` block, the token is reported and left as it is.

Tokens without a counterpart (``DATE``, ``TIME``, ``SRVR``, ``STEPID`` ...) are reported
and left in the text; tokens in comments are left alone (SQL Server Agent would replace
them too, to no effect).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

#: The tokens that have a counterpart here: token -> (reference, what differs).
TOKEN_SOURCES: dict[str, tuple[str, str]] = {
    "JOBID": ("run.job_id", "the job_id here, not SQL Server Agent's uniqueidentifier"),
    "JOBNAME": ("job.job_name", "the job's name"),
    "STRTDT": ("run.logical_date", "written YYYY-MM-DD, not yyyymmdd"),
    "STRTTM": (
        "run.scheduled_for_local",
        "an ISO 8601 date-time with its offset, not hhmmss",
    ),
}
#: SQL Server Agent's tokens (documented in "Use Tokens in Job Steps").
AGENT_TOKENS = (
    "A-DBN",
    "A-SVR",
    "A-ERR",
    "A-SEV",
    "A-MSG",
    "DATE",
    "INST",
    "JOBID",
    "JOBNAME",
    "MACH",
    "MSSA",
    "OSCMD",
    "SQLDIR",
    "SQLLOGDIR",
    "STEPCT",
    "STEPID",
    "SRVR",
    "TIME",
    "STRTTM",
    "STRTDT",
)
_NAME = "|".join(re.escape(t) for t in AGENT_TOKENS) + r"|WMI\([^()]*\)"
_TOKEN = re.compile(
    rf"\$\((?:ESCAPE_(?:SQUOTE|DQUOTE|RBRACKET|NONE)\((?P<escaped>{_NAME})\)|(?P<plain>{_NAME}))\)"
)
#: SQLAlchemy ``text()``'s placeholder pattern (``sqlalchemy.sql.elements.TextClause``).
_PLACEHOLDER = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")
_PS_PARAM_BLOCK = re.compile(
    r"^\s*(?:#[^\n]*\n\s*|<#.*?#>\s*)*(?:\[[^\]]*\]\s*)*param\s*\(", re.I | re.S
)
#: ``using`` statements must come before a param block: a script with them keeps its tokens.
_PS_USING = re.compile(r"^\s*using\s+(?:namespace|module|assembly)\b", re.I | re.M)

_SQL_NAMES = {
    "JOBID": "agent_job_id",
    "JOBNAME": "agent_job_name",
    "STRTDT": "agent_start_date",
    "STRTTM": "agent_start_time",
}
_SHELL_NAMES = {
    "JOBID": "SQLAGENT_JOBID",
    "JOBNAME": "SQLAGENT_JOBNAME",
    "STRTDT": "SQLAGENT_STRTDT",
    "STRTTM": "SQLAGENT_STRTTM",
}
_PS_NAMES = {
    "JOBID": "SqlAgentJobId",
    "JOBNAME": "SqlAgentJobName",
    "STRTDT": "SqlAgentStartDate",
    "STRTTM": "SqlAgentStartTime",
}


@dataclass(frozen=True)
class TokenNote:
    """One token occurrence: translated (``reference`` set) or left as it is (``reason``)."""

    token: str
    reference: str | None = None
    reason: str = ""


@dataclass
class Translated:
    """The command with its tokens translated, the parameters they became, and a note per
    token kind found."""

    text: str
    parameters: dict[str, Any] = field(default_factory=dict)
    notes: list[TokenNote] = field(default_factory=list)

    def note(self, token: str, reference: str | None = None, reason: str = "") -> None:
        note = TokenNote(token, reference, reason)
        if note not in self.notes:  # one note per token and outcome
            self.notes.append(note)


def _token_name(match: re.Match[str]) -> str:
    return match.group("escaped") or match.group("plain")


# -- lexing: where in the text each character stands ---------------------------------------
@dataclass(frozen=True)
class Region:
    """A stretch of text: ``kind`` is ``code``, ``single`` / ``double`` (a quoted string,
    quotes included), ``bracket`` (T-SQL ``[...]``) or ``comment``."""

    kind: str
    start: int
    end: int


def sql_regions(text: str) -> Iterator[Region]:
    """T-SQL: ``'...'`` (``''`` inside), ``"..."``, ``[...]`` (``]]`` inside), ``--`` and
    ``/* */`` comments (nested, as SQL Server nests them)."""
    i, n, start = 0, len(text), 0
    while i < n:
        c = text[i]
        two = text[i : i + 2]
        if c in "'\"[" or two in ("--", "/*"):
            if i > start:
                yield Region("code", start, i)
            if two == "--":
                j = text.find("\n", i)
                j = n if j < 0 else j
                kind = "comment"
            elif two == "/*":
                depth, j = 1, i + 2
                while j < n and depth:
                    if text.startswith("/*", j):
                        depth, j = depth + 1, j + 2
                    elif text.startswith("*/", j):
                        depth, j = depth - 1, j + 2
                    else:
                        j += 1
                kind = "comment"
            else:
                close = "]" if c == "[" else c
                j = i + 1
                while j < n:
                    if text[j] == close:
                        if text[j + 1 : j + 2] == close:
                            j += 2
                            continue
                        j += 1
                        break
                    j += 1
                kind = {"'": "single", '"': "double", "[": "bracket"}[c]
            yield Region(kind, i, j)
            i = start = j
        else:
            i += 1
    if start < n:
        yield Region("code", start, n)


def shell_regions(text: str) -> Iterator[Region]:
    """POSIX sh: ``'...'`` (no escapes), ``"..."`` (backslash escapes), backslash outside,
    ``#`` comments at the start of a word."""
    yield from _script_regions(text, escape="\\", single_doubled=False)


def powershell_regions(text: str) -> Iterator[Region]:
    """PowerShell: ``'...'`` (``''`` inside), ``"..."`` (backtick escapes), ``#`` and
    ``<# #>`` comments."""
    yield from _script_regions(text, escape="`", single_doubled=True, block_comments=True)


def _script_regions(
    text: str, *, escape: str, single_doubled: bool, block_comments: bool = False
) -> Iterator[Region]:
    i, n, start = 0, len(text), 0
    while i < n:
        c = text[i]
        if c == escape:
            i += 2
            continue
        comment_start = c == "#" and (i == 0 or text[i - 1] in " \t\n;")
        block = block_comments and text.startswith("<#", i)
        if c in "'\"" or comment_start or block:
            if i > start:
                yield Region("code", start, i)
            if block:
                j = text.find("#>", i + 2)
                j, kind = (n if j < 0 else j + 2), "comment"
            elif comment_start:
                j = text.find("\n", i)
                j, kind = (n if j < 0 else j), "comment"
            elif c == "'":
                j = i + 1
                while j < n:
                    if text[j] == "'":
                        if single_doubled and text[j + 1 : j + 2] == "'":
                            j += 2
                            continue
                        j += 1
                        break
                    j += 1
                kind = "single"
            else:
                j = i + 1
                while j < n:
                    if text[j] == escape:
                        j += 2
                        continue
                    if text[j] == '"':
                        j += 1
                        break
                    j += 1
                kind = "double"
            yield Region(kind, i, j)
            i = start = j
        else:
            i += 1
    if start < n:
        yield Region("code", start, n)


# -- translation per step type --------------------------------------------------------------
def translate_sql(text: str) -> Translated:
    """A T-SQL command for the ``sql`` step (see the module docstring)."""
    out = Translated("")
    pieces: list[str] = []
    for region in sql_regions(text):
        chunk = text[region.start : region.end]
        if region.kind == "comment" or not _TOKEN.search(chunk):
            pieces.append(_escape_placeholders(chunk))
            continue
        if region.kind == "single":
            body = chunk[1:-1]
            whole = _TOKEN.fullmatch(body)
            prefix_n = _n_prefixed(text, region.start)
            if whole is not None:
                name = _token_name(whole)
                if name in TOKEN_SOURCES:
                    if prefix_n:  # N'...' goes as a whole
                        pieces[-1] = pieces[-1][:-1]
                    pieces.append(":" + _bind(out, name, _SQL_NAMES))
                    continue
            for match in _TOKEN.finditer(body):
                name = _token_name(match)
                out.note(name, reason=_untranslated(name, "inside a longer string literal"))
            pieces.append(_escape_placeholders(chunk))
            continue
        if region.kind in ("double", "bracket"):
            for match in _TOKEN.finditer(chunk):
                name = _token_name(match)
                out.note(name, reason=_untranslated(name, "inside a quoted identifier"))
            pieces.append(_escape_placeholders(chunk))
            continue
        pieces.append(_replace_code(chunk, out, lambda name: ":" + _bind(out, name, _SQL_NAMES)))
    out.text = "".join(pieces)
    return out


def translate_shell(text: str) -> Translated:
    """A CmdExec command for the ``shell`` step (see the module docstring)."""
    out = Translated("")
    pieces: list[str] = []
    for region in shell_regions(text):
        chunk = text[region.start : region.end]
        if region.kind == "comment":
            pieces.append(chunk)
        elif region.kind == "single":
            pieces.append(
                _replace_code(
                    chunk,
                    out,
                    lambda n: "'\"${" + _bind(out, n, _SHELL_NAMES) + "}\"'",
                    sql=False,
                )
            )
        elif region.kind == "double":
            pieces.append(
                _replace_code(
                    chunk, out, lambda n: "${" + _bind(out, n, _SHELL_NAMES) + "}", sql=False
                )
            )
        else:
            pieces.append(
                _replace_code(
                    chunk, out, lambda n: '"${' + _bind(out, n, _SHELL_NAMES) + '}"', sql=False
                )
            )
    out.text = "".join(pieces)
    return out


def translate_powershell(text: str) -> Translated:
    """A PowerShell command for the ``powershell`` step (see the module docstring)."""
    out = Translated("")
    own_params = _PS_PARAM_BLOCK.match(text) is not None or _PS_USING.search(text) is not None
    pieces: list[str] = []
    for region in powershell_regions(text):
        chunk = text[region.start : region.end]
        if region.kind == "comment" or not _TOKEN.search(chunk):
            pieces.append(chunk)
        elif region.kind == "single" or own_params:
            where = (
                "inside a single-quoted string"
                if not own_params
                else "in a script with its own param block or using statements"
            )
            for match in _TOKEN.finditer(chunk):
                name = _token_name(match)
                out.note(name, reason=_untranslated(name, where))
            pieces.append(chunk)
        else:
            pieces.append(
                _replace_code(
                    chunk, out, lambda n: "${" + _bind(out, n, _PS_NAMES) + "}", sql=False
                )
            )
    body = "".join(pieces)
    if out.parameters:
        declared = ", ".join(f"${name}" for name in out.parameters)
        body = f"param({declared})\n{body}"
    out.text = body
    return out


def _bind(out: Translated, token: str, names: dict[str, str]) -> str:
    name = names[token]
    reference, differs = TOKEN_SOURCES[token]
    out.parameters[name] = {"$from": reference}
    out.note(token, reference=reference, reason=differs)
    return name


def _replace_code(
    chunk: str, out: Translated, replacement: Callable[[str], str], *, sql: bool = True
) -> str:
    """``chunk`` with each token that has a counterpart replaced by ``replacement(token)``;
    the others noted and left. ``sql``: escape the other ``:name`` placeholders too."""
    pieces: list[str] = []
    pos = 0
    for match in _TOKEN.finditer(chunk):
        before = chunk[pos : match.start()]
        pieces.append(_escape_placeholders(before) if sql else before)
        name = _token_name(match)
        if name in TOKEN_SOURCES:
            pieces.append(replacement(name))
        else:
            out.note(name, reason=_untranslated(name, None))
            pieces.append(match.group(0))
        pos = match.end()
    rest = chunk[pos:]
    pieces.append(_escape_placeholders(rest) if sql else rest)
    return "".join(pieces)


def _untranslated(name: str, where: str | None) -> str:
    if name not in TOKEN_SOURCES:
        return "has no counterpart here; left in the text as it is"
    return f"is {where}, where a parameter cannot stand; left in the text as it is"


def _escape_placeholders(chunk: str) -> str:
    return _PLACEHOLDER.sub(lambda m: "\\" + m.group(0), chunk)


def _n_prefixed(text: str, start: int) -> bool:
    """Whether the literal at ``start`` is ``N'...'`` (an N that is not the end of a word)."""
    if start == 0 or text[start - 1] not in "Nn":
        return False
    return start == 1 or not (text[start - 2].isalnum() or text[start - 2] in "_@#$")
