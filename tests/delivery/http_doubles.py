"""Real local HTTP endpoints that misbehave on purpose, for the sender's and egress tests.

Everything listens on 127.0.0.1 only. Handlers that stall wait on an event the fixture sets
at teardown, so no task outlives its test.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from portability.webhooks.signing import generate_secret
from portability.wire.records import AppRecord

_ENDLESS_CHUNKS = 10_000  # 10 MB at most: far beyond the 4 KB the sender reads


@dataclass(slots=True)
class Answer:
    """What the endpoint's ``/answer`` route replies."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"


@dataclass(slots=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class Endpoint:
    """A real aiohttp server; ``url(path)`` addresses it, ``received`` lists what arrived."""

    port: int
    answer: Answer = field(default_factory=Answer)
    received: list[Received] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = "/answer", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [request.path for request in self.received]


async def _record(endpoint: Endpoint, request: web.Request) -> None:
    body = await request.read()
    endpoint.received.append(Received(request.path, dict(request.headers), body))


def _routes(endpoint: Endpoint) -> web.Application:
    async def answer(request: web.Request) -> web.StreamResponse:
        await _record(endpoint, request)
        reply = endpoint.answer
        return web.Response(status=reply.status, headers=reply.headers, body=reply.body)

    async def stall(request: web.Request) -> web.StreamResponse:
        await _record(endpoint, request)
        await endpoint.release.wait()
        return web.Response(status=200)

    async def endless(request: web.Request) -> web.StreamResponse:
        await _record(endpoint, request)
        response = web.StreamResponse(status=500)
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(_ENDLESS_CHUNKS):
                if endpoint.release.is_set():
                    break
                await response.write(b"x" * 1024)
        return response

    async def target(request: web.Request) -> web.StreamResponse:
        await _record(endpoint, request)
        return web.Response(status=200, text="redirect target")

    app = web.Application()
    app.router.add_post("/answer", answer)
    app.router.add_post("/stall", stall)
    app.router.add_post("/endless", endless)
    app.router.add_route("*", "/target", target)
    return app


@contextlib.asynccontextmanager
async def serve_endpoint() -> AsyncIterator[Endpoint]:
    """A scriptable aiohttp endpoint on 127.0.0.1 for the duration of the block."""
    endpoint = Endpoint(port=0)
    runner = web.AppRunner(_routes(endpoint), shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        endpoint.port = runner.addresses[0][1]
        yield endpoint
    finally:
        endpoint.release.set()
        await runner.cleanup()


@dataclass(slots=True)
class RawServer:
    port: int
    connections: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


RawHandler = Callable[[RawServer, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serve_raw(handler: RawHandler) -> AsyncIterator[RawServer]:
    """A bare asyncio server on 127.0.0.1 whose ``handler`` writes whatever bytes it likes."""
    raw = RawServer(port=0)
    tasks: set[asyncio.Task[None]] = set()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw.connections += 1
        task = asyncio.current_task()
        if task is not None:
            tasks.add(task)
        try:
            await handler(raw, reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    raw.port = server.sockets[0].getsockname()[1]
    try:
        yield raw
    finally:
        raw.release.set()
        server.close()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> None:
    """Consume one request's head and body (Content-Length) before misbehaving."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    await reader.readexactly(length)


def reset(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with a TCP RST (SO_LINGER 0), as a crashing server would."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@contextlib.contextmanager
def unaccepting_port() -> Iterator[int]:
    """A port whose accept queue is full, so a new connection is never established.

    Linux drops a SYN when the listener's queue is full: the client's connect hangs until its
    own connect timeout, which is exactly what a black-holed endpoint looks like.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(3):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def app_record(url: str, app_id: str = "app_test") -> AppRecord:
    return {
        "app_id": app_id,
        "name": "Test app",
        "webhook_url": url,
        "signing_secrets": [generate_secret()],
        "enabled": True,
        "version": 1,
    }


def resolved(host: str, address: str, port: int) -> ResolveResult:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return {
        "hostname": host,
        "host": address,
        "port": port,
        "family": family,
        "proto": 0,
        "flags": socket.AI_NUMERICHOST,
    }


class ScriptedResolver(AbstractResolver):
    """A DNS stand-in: call N answers ``answers[min(N, last)]``; counts its calls.

    An answer is a list of (address, port) pairs; an exception instance is raised instead.
    """

    def __init__(self, *answers: list[tuple[str, int]] | BaseException) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answer = self.answers[min(len(self.calls), len(self.answers) - 1)]
        self.calls.append(host)
        if isinstance(answer, BaseException):
            raise answer
        return [resolved(host, address, to_port) for address, to_port in answer]

    async def close(self) -> None:
        return None
