"""A small SQL lexer: enough to find lines and semicolons that are *code*, per dialect.

The SQL step needs two facts about a query's text before it runs it, and both depend on what
is a string, a quoted identifier or a comment in the connection's dialect:

* which lines are SQLCMD ``GO`` separators (:mod:`app.steps.tsql` splits T-SQL batches on
  them; on the other databases a ``GO`` line is refused, it would silently become a column
  alias);
* whether a PostgreSQL, MariaDB or SQLite query holds a second statement after a ``;`` (the
  drivers refuse that with messages such as "cannot insert multiple commands into a prepared
  statement"; the service says it at validation time instead).

The lexer never rejects text: what it cannot classify is code, so an odd query reaches the
database, which has the last word. Quoting rules per dialect:

=============  =====================================================  ====================
dialect        strings and quoted identifiers                         comments
=============  =====================================================  ====================
mssql          ``'..'`` (``N'..'`` too), ``".."``, ``[..]``;           ``--``, nested
               doubled quote or ``]]`` escapes                        ``/* */``
postgresql     ``'..'``, ``E'..'`` (backslash escapes), ``".."``,      ``--``, nested
               ``$tag$..$tag$``                                       ``/* */``
mysql          ``'..'`` and ``".."`` (backslash and doubled escapes),  ``--``, ``#``,
               backticks                                              ``/* */``
sqlite         ``'..'``, ``".."``, backticks, ``[..]``                ``--``, ``/* */``
=============  =====================================================  ====================
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass


class Kind(enum.Enum):
    SPACE = "space"  # spaces and tabs, never a newline
    NEWLINE = "newline"
    COMMENT = "comment"  # a line comment stops before its newline
    QUOTED = "quoted"  # string literal or quoted identifier, quotes included
    WORD = "word"  # identifier, keyword or number
    PUNCT = "punct"  # any other single character


@dataclass(frozen=True)
class Token:
    kind: Kind
    text: str
    start: int  # offset in the query
    line: int  # 1-based line the token starts on

    @property
    def end(self) -> int:
        return self.start + len(self.text)


_WORD = re.compile(r"[^\W]+|@@?\w*|#+\w*", re.UNICODE)
_SPACE = re.compile(r"[ \t\f\v]+")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")


@dataclass(frozen=True)
class _Rules:
    quotes: str  # characters that open a quoted run closed by the same character
    brackets: bool  # [ .. ] quoted identifiers
    backslash: str  # quote characters inside which a backslash escapes the next character
    hash_comments: bool
    nested_comments: bool
    dollar_quotes: bool
    escape_strings: bool  # E'..' with backslash escapes


_RULES = {
    "mssql": _Rules("'\"", True, "", False, True, False, False),
    "postgresql": _Rules("'\"", False, "", False, True, True, True),
    "mysql": _Rules("'\"`", False, "'\"", True, False, False, False),
    "sqlite": _Rules("'\"`", True, "", False, False, False, False),
}


def tokens(query: str, family: str) -> Iterator[Token]:
    """The tokens of ``query`` under ``family``'s quoting rules (unknown families: SQLite's).

    An unterminated string or comment runs to the end of the text.
    """
    rules = _RULES.get(family, _RULES["sqlite"])
    i, line, n = 0, 1, len(query)
    while i < n:
        c = query[i]
        if c == "\n" or c == "\r":
            j = i + 2 if query.startswith("\r\n", i) else i + 1
            kind = Kind.NEWLINE
        elif (m := _SPACE.match(query, i)) is not None:
            j, kind = m.end(), Kind.SPACE
        elif query.startswith("--", i) or (c == "#" and rules.hash_comments):
            j, kind = _line_end(query, i), Kind.COMMENT
        elif query.startswith("/*", i):
            j, kind = _block_comment_end(query, i, nested=rules.nested_comments), Kind.COMMENT
        elif c in rules.quotes:
            j, kind = _quoted_end(query, i, c, backslash=c in rules.backslash), Kind.QUOTED
        elif c == "[" and rules.brackets:
            j, kind = _quoted_end(query, i, "]", backslash=False), Kind.QUOTED
        elif c == "$" and rules.dollar_quotes and (m := _DOLLAR_TAG.match(query, i)):
            close = query.find(m.group(), m.end())
            j = n if close < 0 else close + len(m.group())
            kind = Kind.QUOTED
        elif (
            rules.escape_strings
            and c in "eE"
            and query.startswith("'", i + 1)
            and not _word_before(query, i)
        ):
            j, kind = _quoted_end(query, i + 1, "'", backslash=True), Kind.QUOTED
        elif (m := _WORD.match(query, i)) is not None and m.end() > i:
            j, kind = m.end(), Kind.WORD
        else:
            j, kind = i + 1, Kind.PUNCT
        text = query[i:j]
        yield Token(kind, text, i, line)
        line += text.count("\n") + (text.count("\r") - text.count("\r\n"))
        i = j


def _word_before(query: str, i: int) -> bool:
    return i > 0 and (query[i - 1].isalnum() or query[i - 1] in "_$")


def _line_end(query: str, i: int) -> int:
    ends = [p for p in (query.find("\n", i), query.find("\r", i)) if p >= 0]
    return min(ends) if ends else len(query)


def _block_comment_end(query: str, i: int, *, nested: bool) -> int:
    depth, j, n = 0, i, len(query)
    while j < n:
        if query.startswith("/*", j) and (nested or depth == 0):
            depth += 1
            j += 2
        elif query.startswith("*/", j):
            depth -= 1
            j += 2
            if depth == 0:
                return j
        else:
            j += 1
    return n


def _quoted_end(query: str, i: int, close: str, *, backslash: bool) -> int:
    """End of the quoted run opened at ``i``; a doubled closing character is an escape."""
    j, n = i + 1, len(query)
    while j < n:
        c = query[j]
        if backslash and c == "\\":
            j += 2
        elif c == close:
            if query.startswith(close, j + 1):
                j += 2
            else:
                return j + 1
        else:
            j += 1
    return n


# -- lines ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeLine:
    """A physical line that starts in code (not inside a string or comment)."""

    number: int
    start: int  # offset of the line's first character
    end: int  # offset just past its newline (or the end of the text)
    tokens: tuple[Token, ...]  # the tokens that start on it, its newline excluded


def code_lines(query: str, family: str) -> Iterator[CodeLine]:
    """Every line of ``query`` that does not begin inside a multi-line string or comment."""
    current: list[Token] = []
    start, number, in_code = 0, 1, True
    for tok in tokens(query, family):
        if tok.kind is Kind.NEWLINE:
            if in_code:
                yield CodeLine(number, start, tok.end, tuple(current))
            current, start, number, in_code = [], tok.end, tok.line + 1, True
            continue
        current.append(tok)
        if "\n" in tok.text or "\r" in tok.text:  # a string or comment goes on past this line
            if in_code:
                yield CodeLine(number, start, tok.end, tuple(current))
            current = []
            in_code = False  # the next line starts inside this token
            start = tok.end
    if in_code and (current or start < len(query)):
        yield CodeLine(number, start, len(query), tuple(current))


# -- GO lines ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoLine:
    """A line that SQLCMD reads as its ``GO`` command."""

    line: CodeLine
    count: int | None  # ``GO 3`` -> 3; None when the count is missing
    problem: str | None  # why the rest of the line is not ``[count] [-- comment]``


def go_line(line: CodeLine) -> GoLine | None:
    """``line`` as a ``GO`` command, or None when its first token is not the word ``GO``.

    SQLCMD's rules: ``GO`` is the first token of its line (whitespace before it is fine),
    case-insensitive, optionally followed by a positive repeat count and a ``--`` comment.
    """
    toks = [t for t in line.tokens if t.kind is not Kind.SPACE]
    if not toks or toks[0].kind is not Kind.WORD or toks[0].text.upper() != "GO":
        return None
    rest = toks[1:]
    if rest and rest[-1].kind is Kind.COMMENT and rest[-1].text.startswith("--"):
        rest = rest[:-1]
    if not rest:
        return GoLine(line, None, None)
    if len(rest) == 1 and rest[0].kind is Kind.WORD and rest[0].text.isdigit():
        count = int(rest[0].text)
        if count >= 1:
            return GoLine(line, count, None)
        return GoLine(line, None, f"line {line.number}: the GO repeat count must be at least 1")
    return GoLine(
        line,
        None,
        f"line {line.number}: GO must stand alone on its line, optionally followed by a "
        "repeat count and a -- comment (GO, GO 3, GO -- note)",
    )


def go_lines(query: str, family: str) -> list[GoLine]:
    """The ``GO`` command lines of ``query`` read with ``family``'s quoting rules."""
    return [g for line in code_lines(query, family) if (g := go_line(line)) is not None]


# -- more than one statement --------------------------------------------------------------------

# BEGIN that starts a transaction, not a compound statement (MariaDB BEGIN ... END, SQLite
# trigger bodies); PostgreSQL's only compound BEGIN is BEGIN ATOMIC.
_TRANSACTION_WORDS = {"TRANSACTION", "WORK", "DEFERRED", "IMMEDIATE", "EXCLUSIVE"}
# END IF / END LOOP ... close blocks this check does not count.
_UNCOUNTED_ENDS = {"IF", "LOOP", "WHILE", "REPEAT", "FOR"}


def second_statement_line(query: str, family: str) -> int | None:
    """The line where a second statement starts after a ``;`` (outside strings, comments and
    compound ``BEGIN ... END`` bodies), or None when ``query`` is one statement."""
    code = [
        t for t in tokens(query, family) if t.kind not in (Kind.SPACE, Kind.NEWLINE, Kind.COMMENT)
    ]
    depth = 0
    after_semicolon = False
    k = 0
    while k < len(code):
        tok = code[k]
        k += 1
        if after_semicolon and not (tok.kind is Kind.PUNCT and tok.text == ";"):
            return tok.line
        word = tok.text.upper() if tok.kind is Kind.WORD else ""
        following = code[k] if k < len(code) else None
        next_word = following.text.upper() if following and following.kind is Kind.WORD else ""
        opens = word == "BEGIN" and _opens_block(family, next_word, following)
        if opens or (word == "CASE" and depth > 0):
            depth += 1
        elif word == "END" and depth > 0 and next_word not in _UNCOUNTED_ENDS:
            depth -= 1
            if next_word == "CASE":  # END CASE closes one block, not two
                k += 1
        elif tok.kind is Kind.PUNCT and tok.text == ";" and depth == 0:
            after_semicolon = True
    return None


def _opens_block(family: str, next_word: str, following: Token | None) -> bool:
    if family == "postgresql":
        return next_word == "ATOMIC"
    if following is None or (following.kind is Kind.PUNCT and following.text == ";"):
        return False
    return next_word not in _TRANSACTION_WORDS
