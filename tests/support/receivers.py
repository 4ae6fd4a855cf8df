"""Real notification receivers on loopback ports, started by each test.

* ``WebhookReceiver``: an asyncio HTTP/1.1 server (``asyncio.start_server``) that records every
  POST, checks its ``X-JobScheduler-Signature`` against the secret it was given, and answers
  from a script: ``fail_first=2`` answers 500 twice, then 200; ``hang=True`` never answers.
* ``SmtpReceiver``: ``aiosmtpd``'s SMTP server on a loopback port, keeping every message.
* ``wait_until``: poll a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool | None  # None: the receiver has no secret
    answered: int | None  # the status answered (None: it hung)

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class WebhookReceiver:
    secret: str | None = None
    fail_first: int = 0
    hang: bool = False
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _hanging: list[asyncio.Event] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def delivered(self) -> list[Received]:
        """Requests answered 2xx."""
        return [r for r in self.requests if r.answered is not None and r.answered < 300]

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for event in self._hanging:
            event.set()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            ok = None
            if self.secret is not None:
                expected = (
                    "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
                )
                ok = hmac.compare_digest(expected, headers.get("x-jobscheduler-signature", ""))
            received = Received(request_line.split(" ")[1], headers, body, ok, None)
            self.requests.append(received)
            self.arrived.set()
            if self.hang:
                release = asyncio.Event()
                self._hanging.append(release)
                await release.wait()
                return
            status = 500 if len(self.requests) <= self.fail_first else 200
            if ok is False:
                status = 401
            received.answered = status
            reason = {200: "OK", 401: "Unauthorized", 500: "Internal Server Error"}[status]
            head_out = f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\n"
            writer.write((head_out + "Connection: close\r\n\r\n").encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def webhook_receiver(**options: Any) -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver(**options)
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


class _Keep:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.messages.append(message_from_bytes(content))
        self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        return "250 OK"


@dataclass
class SmtpReceiver:
    controller: Controller
    handler: _Keep

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.controller.port}"

    @property
    def messages(self) -> list[Message]:
        return self.handler.messages


@contextlib.contextmanager
def smtp_receiver() -> Any:
    """aiosmtpd on 127.0.0.1:<free port> (its own thread and loop, as aiosmtpd runs it)."""
    handler = _Keep()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield SmtpReceiver(controller, handler)
    finally:
        controller.stop()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, what: str = ""
) -> None:
    """Poll ``condition`` (sync or async) every 20 ms until true; fail after ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                value = condition()
                if not isinstance(value, bool):
                    value = await value
                if value:
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not reached within {timeout}s: {what}") from None


class ThreadedWebhookReceiver:
    """A ``WebhookReceiver`` on its own event loop in a thread, for tests that block (a
    server in a subprocess polled with a synchronous client)."""

    def __init__(self, port: int, **options: Any) -> None:
        import threading

        self._port = port
        self._options = options
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.receiver: WebhookReceiver | None = None
        self._thread = threading.Thread(target=self._serve, name="webhook-receiver", daemon=True)

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def start() -> None:
            self.receiver = WebhookReceiver(**self._options)
            await self.receiver.start(self._port)

        loop.run_until_complete(start())
        self._ready.set()
        loop.run_forever()
        assert self.receiver is not None
        loop.run_until_complete(self.receiver.stop())
        loop.close()

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the webhook receiver did not start")
        assert self.receiver is not None
        return self.receiver

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
