"""Live output of the process steps: their stdout/stderr lines as they are produced.

The engine binds a sink around a step (``bind_sink``, a context variable, so it follows the
step's task and the subprocess supervisor's task created from it, and nothing else). The
subprocess runner asks for ``current_splitter`` when it starts a program: with a sink bound,
every byte read from a pipe is also cut into lines and handed to the sink.

Bounds: each stream sends at most ``max_bytes`` (the step's stored-output cap,
``V2_MAX_OUTPUT_BYTES``) in all, a line longer than ``MAX_LINE_BYTES`` is sent in pieces,
and the partial line waiting for its newline never holds more than that.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

#: (stream, line): stream is "stdout" or "stderr"; the line has no trailing newline.
LineSink = Callable[[str, str], None]

MAX_LINE_BYTES = 16_384
STREAMS = {1: "stdout", 2: "stderr"}

_sink: ContextVar[LineSink | None] = ContextVar("live_output_sink", default=None)


@contextlib.contextmanager
def bind_sink(sink: LineSink) -> Iterator[None]:
    """Send the lines of the programs started inside this block to ``sink``."""
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)


def current_splitter(max_bytes: int) -> LineSplitter | None:
    """A splitter feeding the bound sink, or None when nobody listens."""
    sink = _sink.get()
    return LineSplitter(sink, max_bytes) if sink is not None else None


class LineSplitter:
    """Cuts each pipe's bytes into UTF-8 lines (undecodable bytes become U+FFFD)."""

    def __init__(self, sink: LineSink, max_bytes: int) -> None:
        self._sink = sink
        self._pending = {fd: bytearray() for fd in STREAMS}
        self._budget = {fd: max(0, max_bytes) for fd in STREAMS}

    def feed(self, fd: int, data: bytes) -> None:
        if fd not in STREAMS:
            return
        budget = self._budget[fd]
        if budget <= 0:
            return
        data = data[:budget]
        self._budget[fd] = budget - len(data)
        pending = self._pending[fd]
        pending += data
        while True:
            end = pending.find(b"\n")
            if end < 0:
                break
            self._send(fd, bytes(pending[:end]))
            del pending[: end + 1]
        while len(pending) >= MAX_LINE_BYTES:
            self._send(fd, bytes(pending[:MAX_LINE_BYTES]))
            del pending[:MAX_LINE_BYTES]
        if self._budget[fd] == 0:
            self.close(fd)

    def close(self, fd: int) -> None:
        """The pipe ended: send the last line even without its newline."""
        pending = self._pending.get(fd)
        if pending:
            self._send(fd, bytes(pending))
            pending.clear()

    def _send(self, fd: int, raw: bytes) -> None:
        raw = raw.removesuffix(b"\r")
        for start in range(0, max(len(raw), 1), MAX_LINE_BYTES):
            piece = raw[start : start + MAX_LINE_BYTES]
            line = piece.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
            self._sink(STREAMS[fd], line)
