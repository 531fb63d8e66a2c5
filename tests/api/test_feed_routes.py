"""``GET /v1/apps/{app_id}/feed`` over HTTP on the real broker: who reads what, and misuse.

The API runs under uvicorn in the test's event loop (the feed's consumers live there);
events are appended as the worker appends them (:class:`FeedWriter`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from portability.api import RateLimiter, create_app
from portability.broker import EmbeddedBroker
from portability.consent import ConsentService, create_store_engine, init_schema
from portability.delivery.feed import FeedWriter
from portability.messages.feed_reader import FeedReader
from portability.runtime import Runtime
from replay_harness import OPERATOR_TOKEN, PLATFORM_TOKEN, replay_settings, serve_api

OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
PLATFORM = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}


@dataclass(slots=True)
class FeedStack:
    runtime: Runtime
    service: ConsentService
    writer: FeedWriter
    http: aiohttp.ClientSession
    api_url: str

    def register(self, app_id: str, mode: str) -> dict[str, str]:
        url = "" if mode == "poll" else "https://hooks.example/h"
        registration = self.service.apply_for_app(
            app_id, url, "Backups.", ["all"], app_id=app_id, delivery_mode=mode
        )
        self.service.review_app(app_id, "approve")
        return {"Authorization": f"Bearer {registration.api_key}"}

    async def append(self, app_id: str, n: int, consent_id: str = "cns_1") -> bytes:
        data = {"consent_id": consent_id, "app_id": app_id, "n": n, "text": "é \u2028"}
        body = orjson.dumps({"type": "portability.delta", "data": data})
        app = self.service.get_app(app_id).to_record()
        assert (await self.writer.append(app, f"msg_{app_id}_{n}", body)).ok
        return body

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, Any, bytes]:
        async with self.http.get(f"{self.api_url}{path}", headers=headers) as response:
            raw = await response.read()
            return response.status, orjson.loads(raw), raw


@contextlib.asynccontextmanager
async def feed_stack(broker: EmbeddedBroker, data_dir: Path) -> AsyncIterator[FeedStack]:
    settings = replay_settings(data_dir)
    runtime = await Runtime.open(settings, broker.bootstrap)
    engine = create_store_engine(settings.resolved_database_url())
    init_schema(engine)
    reader = FeedReader(runtime)
    producer: AIOKafkaProducer = runtime.kafka.producer("feed-route-tests", linger_ms=0)
    await producer.start()
    api = create_app(settings, engine, feed_reader=reader, rate_limiter=RateLimiter(1_000_000))
    try:
        async with (
            serve_api(api) as api_url,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        ):
            writer = FeedWriter(producer, runtime.topics.feed, settings.partitions)
            yield FeedStack(runtime, ConsentService(engine), writer, http, api_url)
    finally:
        await reader.stop()
        await producer.stop()
        await runtime.close()
        engine.dispose()


@pytest.fixture
async def stack(broker: EmbeddedBroker, tmp_path: Path) -> AsyncIterator[FeedStack]:
    async with feed_stack(broker, tmp_path) as started:
        yield started


async def test_an_app_reads_its_events_page_by_page(stack: FeedStack) -> None:
    headers = stack.register("app_a", "poll")
    bodies = [await stack.append("app_a", n) for n in range(3)]

    status, page, raw = await stack.get("/v1/apps/app_a/feed?limit=2&wait=0", headers)

    assert status == 200, page
    assert [e["body"]["data"]["n"] for e in page["events"]] == [0, 1]
    assert page["events"][0] | {"body": None} == {
        "webhook_id": "msg_app_a_0",
        "type": "portability.delta",
        "consent_id": "cns_1",
        "body": None,
    }
    assert bodies[0] in raw  # the body as appended, byte for byte
    assert page["more"] is True
    status, rest, _ = await stack.get(
        f"/v1/apps/app_a/feed?iterator={page['iterator']}&wait=0", headers
    )
    assert [e["body"]["data"]["n"] for e in rest["events"]] == [2]
    assert rest["more"] is False
    # An operator reads any app's feed.
    status, seen, _ = await stack.get("/v1/apps/app_a/feed?wait=0", OPERATOR)
    assert (status, len(seen["events"])) == (200, 3)


async def test_a_long_poll_answers_when_the_event_arrives(stack: FeedStack) -> None:
    headers = stack.register("app_a", "poll")
    _, empty, _ = await stack.get("/v1/apps/app_a/feed?wait=0", headers)

    started = time.monotonic()
    waiting = asyncio.create_task(
        stack.get(f"/v1/apps/app_a/feed?iterator={empty['iterator']}&wait=15", headers)
    )
    await stack.append("app_a", 7)
    status, page, _ = await asyncio.wait_for(waiting, 15)

    assert (status, [e["body"]["data"]["n"] for e in page["events"]]) == (200, [7])
    assert time.monotonic() - started < 5


async def test_other_apps_never_see_the_feed(stack: FeedStack) -> None:
    a = stack.register("app_a", "poll")
    b = stack.register("app_b", "poll")
    await stack.append("app_a", 1)
    await stack.append("app_b", 2)

    status, error, _ = await stack.get("/v1/apps/app_a/feed?wait=0", b)
    assert (status, error["error"]) == (404, "not_found")
    _, own, _ = await stack.get("/v1/apps/app_b/feed?wait=0", b)
    assert [e["body"]["data"]["app_id"] for e in own["events"]] == ["app_b"]
    # Another app's iterator, on one's own feed, is refused.
    _, theirs, _ = await stack.get("/v1/apps/app_a/feed?wait=0", a)
    status, error, _ = await stack.get(f"/v1/apps/app_b/feed?iterator={theirs['iterator']}", b)
    assert (status, error["error"]) == (400, "invalid_iterator")
    status, error, _ = await stack.get("/v1/apps/app_a/feed?wait=0", PLATFORM)
    assert status == 403


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("iterator=garbage", 400, "invalid_iterator"),
        ("limit=0", 422, "invalid_request"),
        ("limit=1001", 422, "invalid_request"),
        ("wait=21", 422, "invalid_request"),
        ("wait=-1", 422, "invalid_request"),
        ("from=newest", 422, "invalid_request"),
        ("from=latest&iterator=fi1.e30", 422, "invalid_request"),
    ],
)
async def test_misuse_is_a_4xx_that_says_what_to_send(
    stack: FeedStack, query: str, status: int, code: str
) -> None:
    headers = stack.register("app_a", "poll")

    answered, error, _ = await stack.get(f"/v1/apps/app_a/feed?{query}", headers)

    assert (answered, error["error"]) == (status, code)
    assert error["message"]


async def test_a_webhook_app_is_told_to_switch_and_can(stack: FeedStack) -> None:
    headers = stack.register("app_w", "webhook")

    status, error, _ = await stack.get("/v1/apps/app_w/feed", headers)
    assert (status, error["error"]) == (409, "not_poll_mode")

    async with stack.http.put(
        f"{stack.api_url}/v1/apps/app_w/delivery-mode",
        headers=headers,
        json={"delivery_mode": "poll"},
    ) as response:
        assert response.status == 200
    await stack.append("app_w", 1)
    status, page, _ = await stack.get("/v1/apps/app_w/feed?wait=0", headers)
    assert (status, len(page["events"])) == (200, 1)
