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
from typing import NamedTuple


class Kind(enum.Enum):
    SPACE = "space"  # spaces and tabs, never a newline
    NEWLINE = "newline"
    COMMENT = "comment"  # a line comment stops before its newline
    QUOTED = "quoted"  # string literal or quoted identifier, quotes included
    WORD = "word"  # identifier, keyword or number
    PUNCT = "punct"  # any other single character


class Token(NamedTuple):  # a tuple: a long query has tens of thousands of them
    kind: Kind
    text: str
    start: int  # offset in the query
    line: int  # 1-based line the token starts on

    @property
    def end(self) -> int:
        return self.start + len(self.text)


def _quoted(open_: str, close: str, *, backslash: bool) -> str:
    """A quoted run (a doubled closing character escapes it; unterminated: to the end)."""
    o, c = re.escape(open_), re.escape(close)
    body = rf"[^{c}\\]|\\.|{c}{c}" if backslash else rf"[^{c}]|{c}{c}"
    return rf"{o}(?:{body})*(?:{c}|\Z)"


_COMMON = {
    "newline": r"\r\n|\r|\n",
    "space": r"[ \t\f\v]+",
    "line_comment": r"--[^\r\n]*",
}
_WORD = {"word": r"@@?\w*|#+\w*|\w+", "punct": r"."}
_FLAT_BLOCK = {"block_comment": r"/\*.*?(?:\*/|\Z)"}
_NESTED_BLOCK = {"nested_comment": r"/\*"}  # its end is found by _nested_comment_end


def _lexer(*parts: dict[str, str]) -> re.Pattern[str]:
    merged = {k: v for part in parts for k, v in part.items()}
    return re.compile("|".join(f"(?P<{k}>{v})" for k, v in merged.items()), re.DOTALL)


_LEXERS = {
    "mssql": _lexer(
        _COMMON,
        _NESTED_BLOCK,
        {
            "string": _quoted("'", "'", backslash=False),
            "ident": _quoted('"', '"', backslash=False),
            "bracket": _quoted("[", "]", backslash=False),
        },
        _WORD,
    ),
    "postgresql": _lexer(
        _COMMON,
        _NESTED_BLOCK,
        {
            "dollar": r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$",  # its end is the same tag again
            "escape_string": r"(?<![\w$])[eE]" + _quoted("'", "'", backslash=True),
            "string": _quoted("'", "'", backslash=False),
            "ident": _quoted('"', '"', backslash=False),
        },
        _WORD,
    ),
    "mysql": _lexer(
        _COMMON,
        {"hash_comment": r"#[^\r\n]*"},
        _FLAT_BLOCK,
        {
            "string": _quoted("'", "'", backslash=True),
            "ident": _quoted('"', '"', backslash=True),
            "backtick": _quoted("`", "`", backslash=False),
        },
        _WORD,
    ),
    "sqlite": _lexer(
        _COMMON,
        _FLAT_BLOCK,
        {
            "string": _quoted("'", "'", backslash=False),
            "ident": _quoted('"', '"', backslash=False),
            "backtick": _quoted("`", "`", backslash=False),
            "bracket": _quoted("[", "]", backslash=False),
        },
        _WORD,
    ),
}
_KINDS = {
    "newline": Kind.NEWLINE,
    "space": Kind.SPACE,
    "line_comment": Kind.COMMENT,
    "hash_comment": Kind.COMMENT,
    "block_comment": Kind.COMMENT,
    "nested_comment": Kind.COMMENT,
    "word": Kind.WORD,
    "punct": Kind.PUNCT,
}


def tokens(query: str, family: str) -> Iterator[Token]:
    """The tokens of ``query`` under ``family``'s quoting rules (unknown families: SQLite's).

    An unterminated string or comment runs to the end of the text.
    """
    lexer = _LEXERS.get(family, _LEXERS["sqlite"])
    i, line, n = 0, 1, len(query)
    while i < n:
        m = lexer.match(query, i)
        assert m is not None  # "punct" matches any character
        group = m.lastgroup or "punct"
        j = m.end()
        if group == "nested_comment":
            j = _nested_comment_end(query, i)
        elif group == "dollar":
            close = query.find(m.group(), j)
            j = n if close < 0 else close + len(m.group())
        text = query[i:j]
        yield Token(_KINDS.get(group, Kind.QUOTED), text, i, line)
        if group == "newline":
            line += 1
        elif "\n" in text or "\r" in text:
            line += text.count("\n") + text.count("\r") - text.count("\r\n")
        i = j


_COMMENT_MARK = re.compile(r"/\*|\*/")


def _nested_comment_end(query: str, i: int) -> int:
    depth = 0
    for m in _COMMENT_MARK.finditer(query, i):
        depth += 1 if m.group() == "/*" else -1
        if depth == 0:
            return m.end()
    return len(query)


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


# Without a line like this, a text has no GO line (checked first: lexing is the slow part).
_MAYBE_GO = re.compile(r"^[ \t\f\v]*go(?!\w)", re.IGNORECASE | re.MULTILINE)


def may_have_go_lines(query: str) -> bool:
    """False when ``query`` certainly has no ``GO`` line (no line starts with the word)."""
    return _MAYBE_GO.search(query.replace("\r", "\n")) is not None


def go_lines(query: str, family: str) -> list[GoLine]:
    """The ``GO`` command lines of ``query`` read with ``family``'s quoting rules."""
    if not may_have_go_lines(query):
        return []
    return [g for line in code_lines(query, family) if (g := go_line(line)) is not None]


# -- more than one statement --------------------------------------------------------------------

# BEGIN that starts a transaction, not a compound statement (MariaDB BEGIN ... END, SQLite
# trigger bodies); PostgreSQL's only compound BEGIN is BEGIN ATOMIC.
_TRANSACTION_WORDS = {"TRANSACTION", "WORK", "DEFERRED", "IMMEDIATE", "EXCLUSIVE"}
# END IF / END LOOP ... close blocks this check does not count.
_UNCOUNTED_ENDS = {"IF", "LOOP", "WHILE", "REPEAT", "FOR"}
_SEMICOLON_THEN_TEXT = re.compile(r";[\s;]*[^\s;]")


def second_statement_line(query: str, family: str) -> int | None:
    """The line where a second statement starts after a ``;`` (outside strings, comments and
    compound ``BEGIN ... END`` bodies), or None when ``query`` is one statement."""
    if _SEMICOLON_THEN_TEXT.search(query) is None:  # no ';' before more text: one statement
        return None
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
