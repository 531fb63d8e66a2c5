"""The poll-mode last hop: an event appended to the app's feed partition, byte for byte."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from portability.delivery.feed import FeedWriter
from portability.runtime import Runtime
from portability.webhooks.ping import ping_event
from portability.wire.headers import (
    FEED_CONSENT_ID_HEADER,
    FEED_EVENT_TYPE_HEADER,
    FEED_WEBHOOK_ID_HEADER,
)
from portability.wire.records import AppRecord
from portability.wire.topics import partition_for_app
from waiting import wait_until

APP: AppRecord = {
    "app_id": "app_poll",
    "name": "Poller",
    "webhook_url": "",
    "signing_secrets": [],
    "enabled": True,
    "version": 1,
    "delivery_mode": "poll",
}
BODY = orjson.dumps(
    {
        "type": "authorization.removed",
        "timestamp": "2026-12-06T12:00:00.000Z",
        "data": {"consent_id": "cns_1", "app_id": "app_poll", "reason": "user_revoked"},
    }
)


@pytest.fixture
async def producer(runtime: Runtime) -> AsyncIterator[AIOKafkaProducer]:
    started = runtime.kafka.producer("feed-writer-tests", linger_ms=0)
    await started.start()
    yield started
    await started.stop()


async def read_feed(
    runtime: Runtime, partition: int, count: int
) -> list[ConsumerRecord[bytes, bytes]]:
    tp = TopicPartition(runtime.topics.feed, partition)
    reader = runtime.kafka.reader("feed-writer-tests")
    await reader.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        reader.assign([tp])
        await reader.seek_to_beginning(tp)

        async def read() -> bool:
            records.extend((await reader.getmany(tp, timeout_ms=100)).get(tp, []))
            return len(records) >= count

        await wait_until(read, f"{count} records on the feed", 10.0)
    finally:
        await reader.stop()
    return records


async def test_an_event_is_appended_to_the_apps_partition_as_it_was(
    runtime: Runtime, producer: AIOKafkaProducer
) -> None:
    partitions = runtime.settings.partitions
    writer = FeedWriter(producer, runtime.topics.feed, partitions)
    ping_id, ping = ping_event("app_poll", datetime.now(UTC))

    removed = await writer.append(APP, "evt_1", BODY)
    pinged = await writer.append(APP, ping_id, ping)

    assert (removed.ok, removed.status, removed.reason) == (True, None, "")
    assert pinged.ok
    [first, second] = await read_feed(runtime, partition_for_app("app_poll", partitions), 2)
    assert (first.key, first.value) == (b"app_poll", BODY)
    assert dict(first.headers) == {
        FEED_WEBHOOK_ID_HEADER: b"evt_1",
        FEED_CONSENT_ID_HEADER: b"cns_1",
        FEED_EVENT_TYPE_HEADER: b"authorization.removed",
    }
    # An event of no consent (a ping) says so with an empty consent id.
    assert second.value == ping
    assert dict(second.headers)[FEED_CONSENT_ID_HEADER] == b""
    assert dict(second.headers)[FEED_EVENT_TYPE_HEADER] == b"portability.ping"


async def test_what_the_caller_states_is_not_read_from_the_body(
    runtime: Runtime, producer: AIOKafkaProducer
) -> None:
    partitions = runtime.settings.partitions
    writer = FeedWriter(producer, runtime.topics.feed, partitions)

    outcome = await writer.append(
        APP, "msg_1", b"{}", consent_id="cns_9", event_type="portability.delta"
    )

    assert outcome.ok
    [record] = await read_feed(runtime, partition_for_app("app_poll", partitions), 1)
    headers = dict(record.headers)
    assert (headers[FEED_CONSENT_ID_HEADER], headers[FEED_EVENT_TYPE_HEADER]) == (
        b"cns_9",
        b"portability.delta",
    )


async def test_a_broker_failure_is_retriable(runtime: Runtime) -> None:
    stopped = runtime.kafka.producer("feed-writer-tests")
    await stopped.start()
    await stopped.stop()
    writer = FeedWriter(stopped, runtime.topics.feed, runtime.settings.partitions)

    outcome = await writer.append(APP, "evt_1", BODY)

    assert (outcome.ok, outcome.retriable) == (False, True)
    assert "appending to the feed failed" in outcome.reason


async def test_an_event_too_large_for_the_broker_is_final_and_says_why(runtime: Runtime) -> None:
    small = AIOKafkaProducer(bootstrap_servers=runtime.kafka.bootstrap, max_request_size=512)
    await small.start()
    try:
        writer = FeedWriter(small, runtime.topics.feed, runtime.settings.partitions)
        outcome = await writer.append(APP, "evt_1", b'{"x":"' + b"y" * 1000 + b'"}')
    finally:
        await small.stop()

    assert (outcome.ok, outcome.retriable) == (False, False)
    assert "too large" in outcome.reason
