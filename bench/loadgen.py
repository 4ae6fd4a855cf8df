"""A small HTTP/1.1 keep-alive client on asyncio streams, and the closed-loop load generator.

httpx costs more CPU per request than the server under test spends on a cheap request; on a
2-core machine that makes the client the bottleneck. This client sends pre-built request
bytes and parses only the status line and ``Content-Length`` (or chunked framing), so the
load generator stays far below one core and the server gets the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from bench.common import cpu_seconds, summary_ms


class HttpError(Exception):
    pass


class HttpConnection:
    """One persistent connection to ``host:port``."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
            self._writer = self._reader = None

    def build(self, method: str, path: str, body: bytes | None = None) -> bytes:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        return (head + "\r\n").encode() + (body or b"")

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        """Send a pre-built request; the response status and body."""
        if self._writer is None:
            await self.connect()
        assert self._reader is not None and self._writer is not None
        self._writer.write(raw)
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = None
        chunked = False
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            lname = name.strip().lower()
            if lname == b"content-length":
                length = int(value)
            elif lname == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif lname == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            body = bytearray()
            while True:
                size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self._reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
            payload = bytes(body)
        elif length is not None:
            payload = await self._reader.readexactly(length)
        else:
            raise HttpError("response without Content-Length")
        if close:
            await self.close()
        return status, payload

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        return await self.send(self.build(method, path, body))


@dataclass
class LoadResult:
    requests: int
    seconds: float
    latencies: list[float]
    statuses: dict[int, int]
    errors: int
    client_cpu_seconds: float
    server_cpu_seconds: float | None
    sample_body: bytes = field(default=b"", repr=False)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, float | int | dict[int, int]]:
        out: dict[str, float | int | dict[int, int]] = {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "per_second": round(self.per_second, 1),
            "errors": self.errors,
            "statuses": dict(self.statuses),
            "client_cpu_percent": round(100 * self.client_cpu_seconds / self.seconds, 1),
        }
        if self.server_cpu_seconds is not None:
            out["server_cpu_percent"] = round(100 * self.server_cpu_seconds / self.seconds, 1)
        out.update({k: round(v, 3) for k, v in summary_ms(self.latencies).items()})
        return out


async def closed_loop(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes | None,
    *,
    clients: int,
    seconds: float,
    warmup_seconds: float,
    expect_status: tuple[int, ...] = (200,),
    server_pid: int | None = None,
) -> LoadResult:
    """``clients`` connections, each sending the next request as soon as the previous one
    answered, for ``warmup_seconds`` (not counted) and then ``seconds`` (measured)."""
    connections = [HttpConnection(host, port) for _ in range(clients)]
    for conn in connections:
        await conn.connect()
    raw = connections[0].build(method, path, body)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    sample = b""
    measuring = False
    stop = False

    async def client(conn: HttpConnection) -> None:
        nonlocal errors, sample
        while not stop:
            t0 = time.perf_counter()
            try:
                status, payload = await conn.send(raw)
            except (OSError, asyncio.IncompleteReadError, HttpError):
                errors += 1
                await conn.close()
                continue
            elapsed = time.perf_counter() - t0
            if measuring and not stop:
                latencies.append(elapsed)
                statuses[status] = statuses.get(status, 0) + 1
                if status not in expect_status:
                    errors += 1
                    if not sample:
                        sample = payload[:2000]

    tasks = [
        asyncio.create_task(client(c), name=f"bench-client-{i}") for i, c in enumerate(connections)
    ]
    try:
        await asyncio.sleep(warmup_seconds)
        cpu0 = cpu_seconds()
        server_cpu0 = cpu_seconds(server_pid) if server_pid else None
        t0 = time.perf_counter()
        measuring = True
        await asyncio.sleep(seconds)
        stop = True
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds() - cpu0
        server_cpu = (
            cpu_seconds(server_pid) - server_cpu0
            if server_pid and server_cpu0 is not None
            else None
        )
        await asyncio.wait(tasks, timeout=30)
    finally:
        stop = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in connections:
            await conn.close()
    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        latencies=latencies,
        statuses=statuses,
        errors=errors,
        client_cpu_seconds=cpu,
        server_cpu_seconds=server_cpu,
        sample_body=sample,
    )


async def sequential_latencies(
    host: str, port: int, method: str, path: str, count: int, body: bytes | None = None
) -> tuple[list[float], dict[int, int]]:
    """``count`` requests one after another on one connection: their latencies."""
    conn = HttpConnection(host, port)
    raw = conn.build(method, path, body)
    out: list[float] = []
    statuses: dict[int, int] = {}
    try:
        await conn.send(raw)  # warm the connection
        for _ in range(count):
            t0 = time.perf_counter()
            status, _ = await conn.send(raw)
            out.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        await conn.close()
    return out, statuses


async def send_all(
    host: str,
    port: int,
    requests: list[bytes],
    *,
    clients: int,
    max_seconds: float,
    expect_status: tuple[int, ...] = (200,),
) -> tuple[int, float, int, bytes]:
    """Send pre-built ``requests`` over ``clients`` connections until all are answered or
    ``max_seconds`` passed: (answered, seconds, errors, first bad body)."""
    position = 0
    answered = errors = 0
    sample = b""
    deadline = time.perf_counter() + max_seconds

    async def client() -> None:
        nonlocal position, answered, errors, sample
        conn = HttpConnection(host, port)
        try:
            while position < len(requests) and time.perf_counter() < deadline:
                raw = requests[position]
                position += 1
                status, payload = await conn.send(raw)
                answered += 1
                if status not in expect_status:
                    errors += 1
                    sample = sample or payload[:2000]
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return answered, time.perf_counter() - t0, errors, sample
