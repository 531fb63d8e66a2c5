"""The request body limit: 413 before an oversized body is read, or as soon as it passes it.

The misuse of issue 15 is replayed against ``portability api`` in its own process: 200 MB to
the unauthenticated ``POST /v1/apps``, declared and chunked, streamed from a generator over
a raw socket (an HTTP client library would insist on sending the whole body before reading
the answer). The server must answer 413 long before the body is sent, and its resident
memory must not grow by anything like the body's size.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from api.api_helpers import TestClient, registration
from portability.api import create_app
from portability.broker import free_port
from portability.settings import Settings

MIB = 1024 * 1024
MISUSE_BYTES = 200 * 1000 * 1000  # the 200 MB of the report
CHUNK = 64 * 1024


def _limited(engine: Engine, api_settings: Settings, limit: int) -> TestClient:
    settings = api_settings.model_copy(update={"api_max_body_bytes": limit})
    return TestClient(create_app(settings, engine))


def _assert_too_large(status: int, headers: dict[str, str], body: dict[str, Any]) -> None:
    assert status == 413
    assert body["error"] == "too_large"
    assert "1048576 bytes" in body["message"]
    assert "send a smaller body" in body["message"]
    assert headers.get("connection") == "close"


# --- in process -------------------------------------------------------------------------------


def test_a_declared_length_over_the_limit_is_refused_unread(
    engine: Engine, api_settings: Settings
) -> None:
    client = _limited(engine, api_settings, MIB)
    body = json.dumps(registration() | {"use_case": "x" * MIB}).encode()

    response = client.post("/v1/apps", content=body, headers={"Content-Type": "application/json"})

    _assert_too_large(response.status_code, dict(response.headers), response.json())


def test_a_body_at_the_limit_passes_and_one_byte_more_does_not(
    engine: Engine, api_settings: Settings
) -> None:
    body = json.dumps(registration()).encode()
    headers = {"Content-Type": "application/json"}

    at_limit = _limited(engine, api_settings, len(body)).post(
        "/v1/apps", content=body, headers=headers
    )
    over = _limited(engine, api_settings, len(body) - 1).post(
        "/v1/apps", content=body, headers=headers
    )

    assert at_limit.status_code == 201, at_limit.text
    assert over.status_code == 413
    assert f"({len(body) - 1} bytes)" in over.json()["message"]


async def test_a_chunked_body_is_read_no_further_than_the_limit(
    engine: Engine, api_settings: Settings
) -> None:
    """Without Content-Length the app counts what it receives, and stops at the limit."""
    api = create_app(api_settings.model_copy(update={"api_max_body_bytes": MIB}), engine)
    pulled = 0

    async def receive() -> dict[str, Any]:
        # A 200 MB body, one 64 KiB chunk per call, made as it is asked for.
        nonlocal pulled
        pulled += CHUNK
        assert pulled <= MISUSE_BYTES, "the whole body was read"
        return {"type": "http.request", "body": b"x" * CHUNK, "more_body": True}

    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/apps",
        "raw_path": b"/v1/apps",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }

    await api(scope, receive, send)

    start, body = sent[0], sent[1]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    _assert_too_large(start["status"], headers, json.loads(body["body"]))
    assert pulled <= MIB + CHUNK  # the chunk that crossed the limit, and no further


# --- against `portability api` in its own process ---------------------------------------------


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@pytest.fixture
def api_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``portability api`` on SQLite, without Kafka, on a free port; yields it and the port."""
    if not Path("/proc/self/status").exists():
        pytest.skip("reads the server's memory from /proc (Linux)")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTABILITY_")}
    env |= {
        "PORTABILITY_DATA_DIR": str(tmp_path / "data"),
        "PORTABILITY_API_HOST": "127.0.0.1",
        "PORTABILITY_API_PORT": str(port),
        "PORTABILITY_LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "api.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "portability", "api"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the API did not start in 60 s"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield process, port
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _exchange(port: int, head: bytes, body: Iterator[bytes]) -> tuple[int, bytes, int]:
    """Send ``head``, then ``body`` until the server answers; (status, response, bytes sent).

    Stops sending as soon as the answer is readable, or the server stops reading (a send
    times out) or closes the connection.
    """
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(head)
        try:
            for chunk in body:
                if select.select([connection], [], [], 0)[0]:
                    break
                connection.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the server refused the rest: what it answered is read below
        response = b""
        try:
            while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
                data = connection.recv(65536)
                if not data:
                    break
                response += data
        except (ConnectionResetError, TimeoutError):
            pass
    status = int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0
    return status, response, sent


def _chunks(total: int) -> Iterator[bytes]:
    """``total`` bytes of a JSON-looking body, one 64 KiB piece at a time (never all at once)."""
    piece = b"x" * CHUNK
    for _ in range(total // CHUNK):
        yield piece


def _framed(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """HTTP/1.1 chunked framing of ``pieces``."""
    for piece in pieces:
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
    yield b"0\r\n\r\n"


def test_200_mb_to_registration_is_refused_quickly_without_memory_growth(
    api_process: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = api_process
    warm = _exchange(
        port,
        b"POST /v1/apps HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s"
        % (len(json.dumps(registration())), json.dumps(registration()).encode()),
        iter(()),
    )
    assert warm[0] == 201, warm[1][:500]
    before = _rss_bytes(process.pid)
    request = b"POST /v1/apps HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"

    started = time.monotonic()
    declared = _exchange(
        port, request + b"Content-Length: %d\r\n\r\n" % MISUSE_BYTES, _chunks(MISUSE_BYTES)
    )
    declared_s = time.monotonic() - started
    started = time.monotonic()
    chunked = _exchange(
        port, request + b"Transfer-Encoding: chunked\r\n\r\n", _framed(_chunks(MISUSE_BYTES))
    )
    chunked_s = time.monotonic() - started
    grown = _rss_bytes(process.pid) - before

    for status, response, sent in (declared, chunked):
        assert status == 413, response[:500]
        assert b'"error":"too_large"' in response
        assert b"connection: close" in response.lower()
        # Answered while the client had sent a small part of the 200 MB (what the kernel's
        # socket buffers take besides the 1 MiB the server reads).
        assert sent < 32 * MIB, sent
    assert declared_s < 10, declared_s
    assert chunked_s < 10, chunked_s
    assert grown < 50 * MIB, f"the API grew by {grown / MIB:.0f} MiB"
    assert process.poll() is None
