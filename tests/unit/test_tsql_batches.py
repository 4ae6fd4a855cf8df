"""The T-SQL batch splitter (SQLCMD's GO rules) and the per-dialect checks built on the same
lexer: GO lines refused outside SQL Server, a second statement refused on PostgreSQL, MariaDB
and SQLite."""

from __future__ import annotations

import pytest

from app.steps.sql_checks import query_problems, step_problems
from app.steps.sql_text import go_lines, second_statement_line
from app.steps.tsql import Batch, BatchSyntaxError, split_batches

# (query, the batches' text stripped, their repeat counts)
SPLITS: list[tuple[str, list[str], list[int]]] = [
    ("SELECT 1", ["SELECT 1"], [1]),
    ("SELECT 1\nGO", ["SELECT 1"], [1]),
    ("SELECT 1\nGO\nSELECT 2", ["SELECT 1", "SELECT 2"], [1, 1]),
    ("SELECT 1\r\nGO\r\nSELECT 2\r\n", ["SELECT 1", "SELECT 2"], [1, 1]),
    ("SELECT 1\rGO\rSELECT 2", ["SELECT 1", "SELECT 2"], [1, 1]),
    # case-insensitive, whitespace around it
    (
        "SELECT 1\n  go  \nSELECT 2\n\tGo\t\nSELECT 3",
        ["SELECT 1", "SELECT 2", "SELECT 3"],
        [1, 1, 1],
    ),
    # repeat count, trailing comment
    ("INSERT t DEFAULT VALUES\nGO 3\nSELECT 2", ["INSERT t DEFAULT VALUES", "SELECT 2"], [3, 1]),
    ("SELECT 1\nGO -- the end of batch one\nSELECT 2", ["SELECT 1", "SELECT 2"], [1, 1]),
    ("SELECT 1\nGO 2 -- twice\nSELECT 2", ["SELECT 1", "SELECT 2"], [2, 1]),
    ("SELECT 1\nGO--tight\nSELECT 2", ["SELECT 1", "SELECT 2"], [1, 1]),
    # GO that is not first on its line, or part of a word, or a column alias
    ("SELECT 1 GO\nSELECT 2", ["SELECT 1 GO\nSELECT 2"], [1]),
    ("SELECT 1\nGOTO done\ndone:", ["SELECT 1\nGOTO done\ndone:"], [1]),
    ("SELECT go\nFROM t", ["SELECT go\nFROM t"], [1]),
    ("SELECT 1\nGO_TABLE", ["SELECT 1\nGO_TABLE"], [1]),
    # inside strings, with '' escapes and N'' strings
    ("SELECT 'a\nGO\nb'", ["SELECT 'a\nGO\nb'"], [1]),
    ("SELECT 'it''s\nGO\nstill'\nGO\nSELECT 2", ["SELECT 'it''s\nGO\nstill'", "SELECT 2"], [1, 1]),
    ("SELECT N'x\nGO\ny'", ["SELECT N'x\nGO\ny'"], [1]),
    ("SELECT ''\nGO\nSELECT 2", ["SELECT ''", "SELECT 2"], [1, 1]),
    # a string that ends on a line followed by GO on the same line is not a GO line
    ("SELECT 'a\n' GO\nSELECT 2", ["SELECT 'a\n' GO\nSELECT 2"], [1]),
    # quoted identifiers
    ("SELECT 1 AS [a\nGO\nb]", ["SELECT 1 AS [a\nGO\nb]"], [1]),
    ("SELECT 1 AS [x]]\nGO\n]", ["SELECT 1 AS [x]]\nGO\n]"], [1]),
    ('SELECT 1 AS "a\nGO\nb"', ['SELECT 1 AS "a\nGO\nb"'], [1]),
    # comments: line, block, nested block
    ("SELECT 1\n-- GO\nSELECT 2", ["SELECT 1\n-- GO\nSELECT 2"], [1]),
    ("SELECT 1\n/*\nGO\n*/\nSELECT 2", ["SELECT 1\n/*\nGO\n*/\nSELECT 2"], [1]),
    (
        "SELECT 1\n/* outer /* inner */\nGO\n*/\nGO\nSELECT 2",
        ["SELECT 1\n/* outer /* inner */\nGO\n*/", "SELECT 2"],
        [1, 1],
    ),
    ("SELECT '/*'\nGO\nSELECT 2", ["SELECT '/*'", "SELECT 2"], [1, 1]),
    ("SELECT '--'\nGO\nSELECT 2", ["SELECT '--'", "SELECT 2"], [1, 1]),
    ("SELECT 1 -- it's\nGO\nSELECT 2", ["SELECT 1 -- it's", "SELECT 2"], [1, 1]),
    ("SELECT [it's]\nGO\nSELECT 2", ["SELECT [it's]", "SELECT 2"], [1, 1]),
    # empty batches (only whitespace or comments) are not sent
    ("GO\nSELECT 1\nGO\n\nGO\n-- nothing\nGO", ["SELECT 1"], [1]),
    ("\n\nGO\n", [], []),
    # an unterminated string runs to the end: no split after it
    ("SELECT 'open\nGO\nSELECT 2", ["SELECT 'open\nGO\nSELECT 2"], [1]),
    # T-SQL that is not a separator
    (
        "CREATE PROCEDURE p AS\nBEGIN\n  SELECT 1;\nEND\nGO\nEXEC p",
        ["CREATE PROCEDURE p AS\nBEGIN\n  SELECT 1;\nEND", "EXEC p"],
        [1, 1],
    ),
]


@pytest.mark.parametrize(("query", "texts", "repeats"), SPLITS)
def test_split_batches(query: str, texts: list[str], repeats: list[int]) -> None:
    batches = split_batches(query)

    assert [b.text.strip() for b in batches] == texts
    assert [b.repeat for b in batches] == repeats


def test_batches_know_the_line_they_start_on() -> None:
    query = "SELECT 1\nGO\n\nSELECT 2\nSELECT 3\nGO 2\nSELECT 4"

    batches = split_batches(query)

    assert batches == [
        Batch("SELECT 1\n", 1, 1),
        Batch("\nSELECT 2\nSELECT 3\n", 2, 3),
        Batch("SELECT 4", 1, 7),
    ]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT 1\nGO 0\nSELECT 2", "line 2: the GO repeat count must be at least 1"),
        ("SELECT 1\nGO x\nSELECT 2", "line 2: GO must stand alone on its line"),
        ("SELECT 1\nGO;\n", "line 2: GO must stand alone on its line"),
        ("SELECT 1\nGO 2 3\n", "line 2: GO must stand alone on its line"),
        ("SELECT 1\nGO /* c */\n", "line 2: GO must stand alone on its line"),
        ("SELECT 1\ngo -1\n", "line 2: GO must stand alone on its line"),
    ],
)
def test_go_lines_sqlcmd_refuses_are_refused(query: str, message: str) -> None:
    with pytest.raises(BatchSyntaxError) as caught:
        split_batches(query)

    assert caught.value.problems[0].startswith(message)


def test_every_bad_go_line_is_reported() -> None:
    with pytest.raises(BatchSyntaxError) as caught:
        split_batches("SELECT 1\nGO x\nSELECT 2\nGO 0\n")

    assert [p.split(":")[0] for p in caught.value.problems] == ["line 2", "line 4"]


# -- other dialects: GO refused --------------------------------------------------------------


@pytest.mark.parametrize("family", ["postgresql", "mysql", "sqlite"])
def test_a_go_line_is_refused_outside_sql_server(family: str) -> None:
    problems = query_problems("SELECT 1\nGO\n", family)

    assert len(problems) == 1
    assert problems[0].startswith("line 2: GO separates T-SQL batches")
    assert "SQL Server (mssql) connections only" in problems[0]
    assert "column alias" in problems[0]


@pytest.mark.parametrize(
    ("family", "query"),
    [
        ("postgresql", "SELECT $$\nGO\n$$"),
        ("postgresql", "SELECT $body$\nGO\n$body$"),
        ("postgresql", "SELECT E'it\\'s\nGO\n'"),
        ("postgresql", 'SELECT 1 AS "a\nGO\nb"'),
        ("mysql", "SELECT `a\nGO\nb` FROM t"),
        ("mysql", "SELECT 'it\\'s\nGO\n'"),
        ("mysql", "SELECT 1 # a comment\n"),
        ("sqlite", "SELECT [a\nGO\nb] FROM t"),
        ("sqlite", "SELECT 1 /*\nGO\n*/"),
        ("postgresql", "SELECT go\nFROM t"),  # a column called go: not a GO line
    ],
)
def test_go_inside_quotes_or_comments_is_text(family: str, query: str) -> None:
    assert go_lines(query, family) == []
    assert query_problems(query, family) == ()


def test_go_is_accepted_on_sql_server() -> None:
    assert query_problems("SELECT 1\nGO\nSELECT 2", "mssql") == ()
    assert query_problems("SELECT 1\nGO x", "mssql") == (
        "line 2: GO must stand alone on its line, optionally followed by a repeat count and "
        "a -- comment (GO, GO 3, GO -- note)",
    )


# -- other dialects: one statement ------------------------------------------------------------

STATEMENTS: list[tuple[str, str, int | None]] = [
    ("postgresql", "SELECT 1", None),
    ("postgresql", "SELECT 1;", None),
    ("postgresql", "SELECT 1;  -- done\n;", None),
    ("postgresql", "SELECT 1; SELECT 2", 1),
    ("postgresql", "SELECT 1;\n\nDELETE FROM t", 3),
    ("postgresql", "SELECT ';' AS a, $$;x$$ AS b, \"c;d\" AS c -- ; x\n", None),
    ("postgresql", "DO $$ BEGIN PERFORM 1; PERFORM 2; END $$", None),
    (
        "postgresql",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END",
        None,
    ),
    ("postgresql", "BEGIN; DELETE FROM t; COMMIT", 1),
    ("mysql", "SELECT 1; SELECT 2", 1),
    ("mysql", "SELECT 'a\\';b'", None),
    ("mysql", "SELECT 1 # ; SELECT 2\n", None),
    (
        "mysql",
        "CREATE PROCEDURE p() BEGIN DECLARE x INT; CASE x WHEN 1 THEN SET x = 2; END CASE; "
        "IF x THEN SET x = 1; END IF; END",
        None,
    ),
    ("mysql", "BEGIN; SELECT 1", 1),
    ("mysql", "BEGIN WORK; SELECT 1", 1),
    ("sqlite", "SELECT 1; SELECT 2", 1),
    (
        "sqlite",
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET a = 1; "
        "UPDATE t SET b = CASE WHEN a THEN 1 END; END;",
        None,
    ),
    ("sqlite", "BEGIN IMMEDIATE; SELECT 1", 1),
    ("sqlite", "SELECT [a;b] FROM t", None),
]


@pytest.mark.parametrize(("family", "query", "line"), STATEMENTS)
def test_second_statement(family: str, query: str, line: int | None) -> None:
    assert second_statement_line(query, family) == line


@pytest.mark.parametrize("family", ["postgresql", "mysql", "sqlite"])
def test_a_second_statement_is_refused_with_our_words(family: str) -> None:
    (problem,) = query_problems("INSERT INTO t VALUES (1);\nINSERT INTO t VALUES (2)", family)

    assert problem.startswith("holds more than one statement (another one starts on line 2")
    assert "give each statement its own step" in problem


def test_transaction_false_is_refused_on_a_read_only_sql_server_connection() -> None:
    step = {"type": "sql", "query": "SELECT 1", "transaction": False}

    (problem,) = step_problems(step, "mssql", read_only=True, where="steps[0]")

    assert problem.field == "steps[0].transaction"
    assert "no read-only transaction" in problem.message
    assert step_problems(step, "mssql", read_only=False, where="steps[0]") == []
