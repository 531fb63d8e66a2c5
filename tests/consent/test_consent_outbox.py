"""OutboxRelay against the real broker: order, partitions, restarts; and its failure handling."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from portability.consent import (
    AppView,
    ConsentError,
    ConsentService,
    ConsentView,
    OutboxEvent,
    OutboxRelay,
    RelayError,
)
from portability.runtime import Runtime
from portability.wire import SchemaName, partition_for_user
from portability.wire.notifications import AUTHORIZATION_REMOVED, event_id
from portability.wire.topics import partition_for_consent

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
USERS = [f"user-{index}" for index in range(8)]


@dataclasses.dataclass(frozen=True)
class Read:
    partition: int
    offset: int
    key: bytes
    record: Mapping[str, Any]


async def read_topic(
    runtime: Runtime, topic: str, partitions: int, schema: SchemaName, expected: int
) -> list[Read]:
    """Every record of ``topic`` once ``expected`` arrived (bounded: about 15 s at most)."""
    reader = runtime.kafka.reader(f"test-reader-{uuid.uuid4().hex[:8]}")
    await reader.start()
    try:
        assigned = [TopicPartition(topic, partition) for partition in range(partitions)]
        reader.assign(assigned)
        await reader.seek_to_beginning(*assigned)
        reads: list[Read] = []
        for _ in range(30):
            batches = await reader.getmany(timeout_ms=500)
            reads += [
                Read(m.partition, m.offset, m.key, runtime.codec.decode(schema, m.value))
                for messages in batches.values()
                for m in messages
            ]
            if len(reads) >= expected:
                break
        # Anything beyond ``expected`` would already be on the broker: one more short fetch.
        for messages in (await reader.getmany(timeout_ms=200)).values():
            reads += [Read(m.partition, m.offset, m.key, {}) for m in messages]
        return reads
    finally:
        await reader.stop()


def unpublished(engine: Engine) -> list[int]:
    with Session(engine) as session:
        query = select(OutboxEvent.id).where(col(OutboxEvent.published_at).is_(None))
        return sorted(row for row in session.exec(query) if row is not None)


def outbox_keys(engine: Engine) -> list[bytes]:
    with Session(engine) as session:
        query = select(OutboxEvent.key).order_by(col(OutboxEvent.id))
        return [key.encode() for key in session.exec(query)]


def grant_several(service: ConsentService, app: AppView, users: list[str]) -> list[ConsentView]:
    return [service.grant(user, app.app_id, ["post", "follow"], now=NOW) for user in users]


def assert_in_version_order(reads: list[Read]) -> None:
    """Within each partition, offsets follow versions (the outbox ids)."""
    for partition in {read.partition for read in reads}:
        in_partition = sorted(
            (r for r in reads if r.partition == partition), key=lambda r: r.offset
        )
        versions = [read.record["version"] for read in in_partition]
        assert versions == sorted(versions), f"partition {partition} out of order: {versions}"


# --- against the real broker --------------------------------------------------------------


async def test_publishes_in_order_to_the_users_partitions(
    engine: Engine, service: ConsentService, app: AppView, runtime: Runtime
) -> None:
    granted = grant_several(service, app, USERS)
    revoked = service.revoke(granted[0].consent_id, now=NOW + timedelta(seconds=1))
    expected = {view.version: view for view in [*granted, revoked]}

    async with OutboxRelay(engine, runtime) as relay:
        # And the app, and the revocation's authorization.removed notification.
        assert await relay.publish_pending() == len(expected) + 2
        assert await relay.publish_pending() == 0

    assert unpublished(engine) == []
    partitions = runtime.settings.partitions
    topic = runtime.topics.consents
    reads = await read_topic(runtime, topic, partitions, SchemaName.CONSENT, len(expected))
    assert len(reads) == len(expected)
    for read in reads:
        view = expected[read.record["version"]]
        assert read.record == view.to_record()  # datetimes round-trip exactly (millis)
        assert read.key == f"{view.user_id}/{view.consent_id}".encode()
        assert read.partition == partition_for_user(view.user_id, partitions)
    assert len({read.partition for read in reads}) > 1  # the users do spread out
    assert_in_version_order(reads)
    [app_read] = await read_topic(runtime, runtime.topics.apps, 1, SchemaName.APP, 1)
    assert (app_read.partition, app_read.key) == (0, app.app_id.encode())
    assert app_read.record == app.to_record()
    [removed] = await read_topic(
        runtime, runtime.topics.notifications, partitions, SchemaName.NOTIFICATION, 1
    )
    assert removed.key == revoked.consent_id.encode()
    # The partition of the consent's deliveries, so the event joins the consent's lane.
    assert removed.partition == partition_for_consent(revoked.consent_id, partitions)
    assert removed.record == {
        "event_id": event_id(AUTHORIZATION_REMOVED, revoked.consent_id, revoked.version),
        "event_type": "authorization.removed",
        "consent_id": revoked.consent_id,
        "app_id": app.app_id,
        "user_id": revoked.user_id,
        "occurred_at": NOW + timedelta(seconds=1),
        "attributes": {"reason": "user_revoked"},
        "records": None,
    }


async def test_restarted_relay_publishes_only_what_is_left(
    engine: Engine, service: ConsentService, app: AppView, runtime: Runtime
) -> None:
    first = grant_several(service, app, USERS[:4])
    async with OutboxRelay(engine, runtime) as relay:
        assert await relay.publish_pending() == 5
    # Committed while no relay runs: the next relay must find them.
    second = grant_several(service, app, USERS[4:])
    revoked = [service.revoke(view.consent_id, now=NOW + timedelta(seconds=1)) for view in first]

    async with OutboxRelay(engine, runtime) as restarted:
        assert await restarted.publish_pending(limit=3) == 3  # smaller batches keep the order
        # Each revocation also writes its removal notification.
        assert await restarted.publish_pending() == len(second) + 2 * len(revoked) - 3
        assert await restarted.publish_pending() == 0

    total = len(first) + len(second) + len(revoked)
    topic, partitions = runtime.topics.consents, runtime.settings.partitions
    reads = await read_topic(runtime, topic, partitions, SchemaName.CONSENT, total)
    versions = sorted(read.record["version"] for read in reads)
    assert versions == sorted(view.version for view in [*first, *second, *revoked])  # no dups
    assert_in_version_order(reads)


async def test_rows_acked_but_not_marked_are_sent_again_latest_last(
    engine: Engine, service: ConsentService, app: AppView, runtime: Runtime
) -> None:
    """A crash between Kafka's ack and the mark: after a restart the rows go out again."""
    granted = service.grant("user-1", app.app_id, ["post"], now=NOW)
    revoked = service.revoke(granted.consent_id, now=NOW + timedelta(seconds=1))
    async with OutboxRelay(engine, runtime) as relay:
        assert await relay.publish_pending() == 4  # app, grant, revocation, notification
    with Session(engine) as session, session.begin():  # what the crash leaves behind
        session.exec(sa.update(OutboxEvent).values(published_at=None))

    async with OutboxRelay(engine, runtime) as restarted:
        assert await restarted.publish_pending() == 4

    partitions = runtime.settings.partitions
    reads = await read_topic(runtime, runtime.topics.consents, partitions, SchemaName.CONSENT, 4)
    in_log = [read.record["version"] for read in sorted(reads, key=lambda r: r.offset)]
    assert in_log == [granted.version, revoked.version] * 2
    # Compaction keeps the last record of the key: the latest state.
    assert reads[-1].record == revoked.to_record()
    notifications = await read_topic(
        runtime, runtime.topics.notifications, partitions, SchemaName.NOTIFICATION, 2
    )
    # Sent twice, with one event id: the app deduplicates on its webhook-id.
    assert len({read.record["event_id"] for read in notifications}) == 1
    assert len(notifications) == 2


async def test_run_publishes_until_stopped(
    engine: Engine, service: ConsentService, app: AppView, runtime: Runtime
) -> None:
    stop = asyncio.Event()
    async with OutboxRelay(engine, runtime) as relay:
        task = asyncio.create_task(relay.run(stop, poll_interval_s=0.01))
        granted = grant_several(service, app, USERS[:3])
        topic, partitions = runtime.topics.consents, runtime.settings.partitions
        reads = await read_topic(runtime, topic, partitions, SchemaName.CONSENT, 3)
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    assert sorted(r.record["version"] for r in reads) == [view.version for view in granted]
    assert unpublished(engine) == []


# --- failure handling, with a producer that fails on demand --------------------------------


class FakeProducer:
    """Acks each send unless ``fail`` says otherwise for its sequence number (from 0)."""

    def __init__(self, fail: Callable[[int], BaseException | None]) -> None:
        self.fail = fail
        self.sent: list[tuple[str, int, bytes]] = []
        self.attempts = 0
        self.all_acked = asyncio.Event()
        self.expected_acks = 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(
        self, topic: str, value: bytes, *, key: bytes, partition: int
    ) -> asyncio.Future[None]:
        number, self.attempts = self.attempts, self.attempts + 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        error = self.fail(number)
        if isinstance(error, KafkaConnectionError):  # fails the send call itself
            raise error
        if error is None:
            self.sent.append((topic, partition, key))
            future.set_result(None)
        else:
            future.set_exception(error)
        if len(self.sent) >= self.expected_acks > 0:
            self.all_acked.set()
        return future


@dataclasses.dataclass(frozen=True)
class FakeKafka:
    fake: FakeProducer

    def producer(self, client_id: str) -> FakeProducer:
        return self.fake


def with_producer(runtime: Runtime, fake: FakeProducer) -> Runtime:
    return dataclasses.replace(runtime, kafka=FakeKafka(fake))  # type: ignore[arg-type]


async def test_failed_ack_marks_only_the_acked_prefix(
    engine: Engine, service: ConsentService, app: AppView, runtime: Runtime
) -> None:
    grant_several(service, app, USERS[:4])
    ids = unpublished(engine)  # the app's row and four consents
    fake = FakeProducer(lambda n: KafkaTimeoutError("no ack") if n == 2 else None)

    async with OutboxRelay(engine, with_producer(runtime, fake)) as relay:
        with pytest.raises(RelayError, match="published 2 of 5 outbox rows") as raised:
            await relay.publish_pending()
        assert isinstance(raised.value.__cause__, KafkaTimeoutError)
        # Row 3 was lost; 4 and 5 were acked, yet stay pending so that they go out after 3.
        assert unpublished(engine) == ids[2:]
        assert await relay.publish_pending() == 3

    assert unpublished(engine) == []
    keys = outbox_keys(engine)
    # Round one: rows 1, 2, (3 lost), 4, 5. Round two: 3, 4, 5 again, in order.
    assert [key for _, _, key in fake.sent] == keys[:2] + keys[3:] + keys[2:]


async def test_run_backs_off_on_kafka_errors_and_recovers(
    engine: Engine,
    service: ConsentService,
    app: AppView,
    runtime: Runtime,
    caplog: pytest.LogCaptureFixture,
) -> None:
    grant_several(service, app, USERS[:2])
    fake = FakeProducer(lambda n: KafkaConnectionError("broker down") if n < 3 else None)
    fake.expected_acks = 3
    stop = asyncio.Event()

    async with OutboxRelay(engine, with_producer(runtime, fake)) as relay:
        task = asyncio.create_task(relay.run(stop, poll_interval_s=0.001, max_backoff_s=0.01))
        await asyncio.wait_for(fake.all_acked.wait(), timeout=10)
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    assert unpublished(engine) == []
    assert fake.attempts == 3 + 3  # three failed rounds, then one full round
    warnings = [r for r in caplog.records if "outbox relay" in r.getMessage()]
    assert len(warnings) == 3
    assert "broker down" in warnings[0].getMessage()


async def test_publish_before_start_says_what_to_do(engine: Engine, runtime: Runtime) -> None:
    relay = OutboxRelay(engine, runtime)
    with pytest.raises(ConsentError, match=r"call start\(\)"):
        await relay.publish_pending()
