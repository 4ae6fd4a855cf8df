"""LineSplitter: pipe bytes to bounded lines."""

from __future__ import annotations

from app.steps.live_output import MAX_LINE_BYTES, LineSplitter


def lines(max_bytes: int, *chunks: tuple[int, bytes]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    splitter = LineSplitter(lambda stream, line: out.append((stream, line)), max_bytes)
    for fd, data in chunks:
        splitter.feed(fd, data)
    splitter.close(1)
    splitter.close(2)
    return out


def test_lines_are_cut_at_newlines_across_chunks_per_stream() -> None:
    assert lines(1000, (1, b"he"), (2, b"err\n"), (1, b"llo\r\nwor"), (1, b"ld")) == [
        ("stderr", "err"),
        ("stdout", "hello"),
        ("stdout", "world"),
    ]


def test_bytes_that_are_not_utf8_or_nul_become_replacement_characters() -> None:
    assert lines(1000, (1, b"a\xff\x00b\n")) == [("stdout", "a\ufffd\ufffdb")]


def test_each_stream_sends_at_most_the_stored_output_cap() -> None:
    assert lines(6, (1, b"12345\n789\n"), (2, b"ab\n")) == [
        ("stdout", "12345"),
        ("stderr", "ab"),
    ]


def test_a_very_long_line_comes_in_pieces() -> None:
    out = lines(10 * MAX_LINE_BYTES, (1, b"x" * (MAX_LINE_BYTES + 5) + b"\n"))
    assert [len(line) for _, line in out] == [MAX_LINE_BYTES, 5]
