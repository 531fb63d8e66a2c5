"""The sender against real local HTTP servers: how each kind of answer is classified."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from delivery.http_doubles import (
    Answer,
    Endpoint,
    RawServer,
    app_record,
    closed_port,
    read_request,
    reset,
    serve_endpoint,
    serve_raw,
    unaccepting_port,
)
from portability.delivery import Outcome, WebhookSender
from portability.delivery.sender import _retry_after
from portability.settings import Settings

BODY = b'{"type":"test.event","data":{}}'
MSG_ID = "msg_0123456789abcdef0123456789abcdef"

Post = Callable[[str], Awaitable[Outcome]]


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    async with serve_endpoint() as served:
        yield served


@pytest.fixture
def sender_settings(tmp_path: Path) -> dict[str, Any]:
    """Overrides of the sender's settings; a test may change them before ``post``."""
    return {"data_dir": tmp_path, "delivery_timeout_s": 2.0, "delivery_connect_timeout_s": 0.5}


@pytest.fixture
async def post(sender_settings: dict[str, Any]) -> AsyncIterator[Post]:
    """Post one signed event to a URL with a started sender (default development settings)."""
    senders: list[WebhookSender] = []

    async def _post(url: str) -> Outcome:
        if not senders:
            senders.append(WebhookSender(Settings(**sender_settings)))
            await senders[0].start()
        return await senders[0].post_event(app_record(url), MSG_ID, BODY)

    yield _post
    for sender in senders:
        await sender.stop()


async def test_2xx_is_delivered_signed(endpoint: Endpoint, post: Post) -> None:
    endpoint.answer = Answer(204, body=b"")
    outcome = await post(endpoint.url())
    assert (outcome.ok, outcome.status, outcome.reason) == (True, 204, "delivered")
    [request] = endpoint.received
    assert request.body == BODY
    assert request.headers["webhook-id"] == MSG_ID
    assert request.headers["webhook-signature"].startswith("v1,")


async def test_500_is_retriable_with_the_body_excerpt(endpoint: Endpoint, post: Post) -> None:
    endpoint.answer = Answer(500, body=b"database down")
    outcome = await post(endpoint.url())
    assert not outcome.ok
    assert (outcome.status, outcome.reason, outcome.retriable) == (500, "HTTP 500", True)
    assert outcome.body_excerpt == "database down"
    assert outcome.retry_after_s is None
    assert not outcome.endpoint_gone


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 409, 422, 451, 502, 504, 599])
async def test_every_non_2xx_but_410_is_retried(
    endpoint: Endpoint, post: Post, status: int
) -> None:
    """As Svix and Stripe do: a 401 during a secret mix-up, a 404 during a redeploy, must not
    lose the delivery; the retry schedule decides when it stops."""
    endpoint.answer = Answer(status)
    outcome = await post(endpoint.url())
    assert (outcome.ok, outcome.status, outcome.retriable) == (False, status, True)
    assert outcome.reason == f"HTTP {status}"
    assert not outcome.endpoint_gone
    assert not outcome.endpoint_refused


async def test_410_is_final_and_marks_the_endpoint_gone(endpoint: Endpoint, post: Post) -> None:
    endpoint.answer = Answer(410, body=b"this hook was deleted")
    outcome = await post(endpoint.url())
    assert (outcome.ok, outcome.status, outcome.retriable) == (False, 410, False)
    assert outcome.endpoint_gone
    assert "endpoint gone" in outcome.reason
    assert outcome.body_excerpt == "this hook was deleted"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_retried_and_not_followed(
    endpoint: Endpoint, post: Post, status: int
) -> None:
    endpoint.answer = Answer(status, headers={"Location": endpoint.url("/target")})
    outcome = await post(endpoint.url())
    assert (outcome.ok, outcome.status, outcome.retriable) == (False, status, True)
    assert "redirects are not followed" in outcome.reason
    # The redirect's target was never requested: only the registered URL was.
    assert endpoint.paths() == ["/answer"]


def _in(seconds: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        ("0", 1.0),  # raised to delivery_retry_after_min_s
        ("-30", 1.0),  # a negative number is clamped too
        ("86400", 3600.0),  # cut to delivery_retry_after_max_s
        ("99999999999999999999", 3600.0),
        ("soon", None),  # malformed: ignored, the worker's own schedule applies
        ("", None),
        ("nan", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 1.0),  # a date in the past means now
        ("Mon, 99 Foo 2015 77:28:00 GMT", None),
    ],
)
async def test_retry_after_is_honoured_within_bounds(
    endpoint: Endpoint, post: Post, status: int, header: str, expected: float | None
) -> None:
    endpoint.answer = Answer(status, headers={"Retry-After": header})
    outcome = await post(endpoint.url())
    assert (outcome.status, outcome.retriable) == (status, True)
    assert outcome.retry_after_s == expected


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_as_an_http_date(endpoint: Endpoint, post: Post, status: int) -> None:
    endpoint.answer = Answer(status, headers={"Retry-After": _in(120)})
    outcome = await post(endpoint.url())
    assert outcome.retry_after_s is not None
    assert 100 <= outcome.retry_after_s <= 120  # the date has a resolution of one second
    endpoint.answer = Answer(status, headers={"Retry-After": _in(30 * 86400)})
    assert (await post(endpoint.url())).retry_after_s == 3600.0


async def test_retry_after_bounds_come_from_settings(
    endpoint: Endpoint, post: Post, sender_settings: dict[str, Any]
) -> None:
    sender_settings.update(delivery_retry_after_min_s=5, delivery_retry_after_max_s=60)
    endpoint.answer = Answer(429, headers={"Retry-After": "2"})
    assert (await post(endpoint.url())).retry_after_s == 5.0
    endpoint.answer = Answer(503, headers={"Retry-After": "600"})
    assert (await post(endpoint.url())).retry_after_s == 60.0


@pytest.mark.parametrize("status", [500, 502, 408])
async def test_retry_after_only_counts_on_429_and_503(
    endpoint: Endpoint, post: Post, status: int
) -> None:
    endpoint.answer = Answer(status, headers={"Retry-After": "120"})
    assert (await post(endpoint.url())).retry_after_s is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("  42  ", 42.0),
        ("1.5", 1.5),
        ("1e3", None),  # not delay-seconds, not a date
        ("inf", None),
        ("Sun, 06 Nov 1994 08:49:37 -0000", 1.0),
    ],
)
def test_retry_after_parsing(value: str | None, expected: float | None) -> None:
    assert _retry_after(value, (1.0, 3600.0)) == expected


async def test_a_huge_body_costs_only_4_kb(endpoint: Endpoint, post: Post) -> None:
    endpoint.answer = Answer(500, body=b"e" * 1_000_000)
    outcome = await post(endpoint.url())
    assert outcome.reason == "HTTP 500"
    assert outcome.body_excerpt == "e" * 4096


async def test_an_endless_body_costs_only_4_kb(endpoint: Endpoint, post: Post) -> None:
    # Were the rest awaited, the 2 s total timeout would turn this into a timeout.
    outcome = await post(endpoint.url("/endless"))
    assert (outcome.status, outcome.reason, outcome.retriable) == (500, "HTTP 500", True)
    assert outcome.body_excerpt == "x" * 4096


async def test_a_stalled_body_keeps_the_status_and_what_arrived(
    post: Post, sender_settings: dict[str, Any]
) -> None:
    sender_settings["delivery_timeout_s"] = 0.5

    async def headers_then_stall(
        raw: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 503 Busy\r\nContent-Length: 100000\r\n\r\npartial")
        await writer.drain()
        await raw.release.wait()

    async with serve_raw(headers_then_stall) as raw:
        started = time.monotonic()
        outcome = await post(raw.url())
        elapsed = time.monotonic() - started
    assert (outcome.status, outcome.reason, outcome.retriable) == (503, "HTTP 503", True)
    assert outcome.body_excerpt == "partial"
    assert elapsed < 5  # bounded by the 0.5 s total timeout, not by the server


async def test_no_answer_within_the_total_timeout(
    endpoint: Endpoint, post: Post, sender_settings: dict[str, Any]
) -> None:
    sender_settings["delivery_timeout_s"] = 0.5
    outcome = await post(endpoint.url("/stall"))
    assert (outcome.ok, outcome.status, outcome.retriable) == (False, None, True)
    assert outcome.reason == "timeout: no complete answer within 0.5 s"
    assert endpoint.paths() == ["/stall"]


async def test_connect_timeout_is_named_apart(post: Post) -> None:
    with unaccepting_port() as port:
        outcome = await post(f"http://127.0.0.1:{port}/hook")
    assert (outcome.ok, outcome.status, outcome.retriable) == (False, None, True)
    assert outcome.reason == "connect timeout: no connection within 0.5 s"


async def test_connection_refused(post: Post) -> None:
    port = closed_port()
    outcome = await post(f"http://127.0.0.1:{port}/hook")
    assert (outcome.ok, outcome.status, outcome.retriable) == (False, None, True)
    assert outcome.reason == f"connection refused by 127.0.0.1:{port}"


async def test_connection_reset_mid_response(post: Post) -> None:
    async def reset_in_headers(
        raw: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Len")
        await writer.drain()
        reset(writer)

    async with serve_raw(reset_in_headers) as raw:
        outcome = await post(raw.url())
    assert (outcome.ok, outcome.status, outcome.retriable) == (False, None, True)
    assert outcome.reason == "connection reset by the endpoint"


async def test_reset_after_the_status_keeps_the_status(post: Post) -> None:
    """Once the status line and headers arrived they decide; a broken body is only cut short."""

    async def reset_in_body(
        raw: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 500 Oops\r\nContent-Length: 1000\r\n\r\nstack tr")
        await writer.drain()
        reset(writer)

    async with serve_raw(reset_in_body) as raw:
        outcome = await post(raw.url())
    assert (outcome.status, outcome.reason, outcome.retriable) == (500, "HTTP 500", True)
    assert outcome.body_excerpt == "stack tr"


async def test_closed_without_an_answer(post: Post) -> None:
    async def hang_up(
        raw: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)

    async with serve_raw(hang_up) as raw:
        outcome = await post(raw.url())
    assert (outcome.ok, outcome.status, outcome.retriable) == (False, None, True)
    assert outcome.reason == "the endpoint closed the connection before answering"


async def test_no_secret_is_final(endpoint: Endpoint, tmp_path: Path) -> None:
    sender = WebhookSender(Settings(data_dir=tmp_path))
    await sender.start()
    try:
        app = app_record(endpoint.url())
        app["signing_secrets"] = []
        outcome = await sender.post_event(app, MSG_ID, BODY)
    finally:
        await sender.stop()
    assert (outcome.ok, outcome.retriable) == (False, False)
    assert outcome.reason.startswith("cannot sign for app app_test")
    assert endpoint.received == []


async def test_post_before_start_is_a_programming_error(tmp_path: Path) -> None:
    sender = WebhookSender(Settings(data_dir=tmp_path))
    with pytest.raises(RuntimeError, match="start"):
        await sender.post_event(app_record("https://hooks.example/x"), MSG_ID, BODY)
