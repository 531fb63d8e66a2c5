"""The matcher against the real broker: what is matched, what is dropped, what is dead-lettered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import TopicPartition

from portability.matching import Matcher
from portability.runtime import Runtime
from portability.simulation import ChangeFactory, PlatformPublisher
from portability.webhooks.payload import rendered_delta
from portability.wire import ConsentRecord, SchemaName, consent_key, partition_for_user
from waiting import wait_until

USERS = ["alice", "bob", "carol"]


def consent(consent_id: str, user: str, categories: list[str], **overrides: Any) -> ConsentRecord:
    record: dict[str, Any] = {
        "consent_id": consent_id,
        "user_id": user,
        "app_id": "app_1",
        "categories": categories,
        "mode": "ongoing",
        "status": "active",
        "granted_at": datetime.now(UTC) - timedelta(seconds=5),
        "expires_at": None,
        "revoked_at": None,
        "version": 1,
    }
    record.update(overrides)
    return record  # type: ignore[return-value]


async def publish_consents(runtime: Runtime, *records: ConsentRecord) -> None:
    producer = runtime.kafka.producer("test-consents")
    await producer.start()
    try:
        for record in records:
            await producer.send_and_wait(
                runtime.topics.consents,
                runtime.codec.encode(SchemaName.CONSENT, dict(record)),
                key=consent_key(record["user_id"], record["consent_id"]),
                partition=partition_for_user(record["user_id"], runtime.settings.partitions),
            )
    finally:
        await producer.stop()


async def read_topic(
    runtime: Runtime, topic: str, expected: int, timeout_s: float = 15.0
) -> list[Any]:
    """Read ``topic`` from the beginning until ``expected`` records arrived or time is up."""
    reader = runtime.kafka.reader("test-reader")
    await reader.start()
    try:
        partitions = reader.partitions_for_topic(topic) or set()
        reader.assign([TopicPartition(topic, p) for p in partitions])
        await reader.seek_to_beginning()
        records: list[Any] = []
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(records) < expected and asyncio.get_running_loop().time() < deadline:
            batch = await reader.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
        return records
    finally:
        await reader.stop()


@pytest.fixture
async def matcher(runtime: Runtime) -> AsyncIterator[Matcher]:
    instance = Matcher(runtime)
    await instance.start()
    task = asyncio.create_task(instance.run())
    yield instance
    await instance.stop()
    await asyncio.wait_for(task, 10)


async def test_matches_only_consenting_users_and_granted_categories(runtime: Runtime) -> None:
    await publish_consents(runtime, consent("c_alice", "alice", ["post", "profile"]))
    matcher = Matcher(runtime)
    await matcher.start()
    task = asyncio.create_task(matcher.run())
    try:
        await wait_until(lambda: matcher.ready and matcher.consents_held == 1, timeout_s=20)
        factory = ChangeFactory(USERS)
        changes = [
            factory.random_change(u, c) for u in USERS for c in ("post", "activity", "profile")
        ]
        publisher = PlatformPublisher(runtime)
        await publisher.start()
        await publisher.publish(changes)
        await publisher.stop()
        await wait_until(lambda: matcher.stats.changes_seen >= len(changes), timeout_s=20)
    finally:
        await matcher.stop()
        await asyncio.wait_for(task, 10)
    deliveries = await read_topic(runtime, runtime.topics.deliveries, expected=2)
    decoded = [runtime.codec.decode(SchemaName.DELIVERY, r.value) for r in deliveries]
    assert sorted((d["change"]["category"], d["sequence"]) for d in decoded) == [
        ("post", 1),
        ("profile", 2),
    ]
    assert {d["consent_id"] for d in decoded} == {"c_alice"}
    assert all(d["change"]["user_id"] == "alice" for d in decoded)
    # Each delta rendered as the worker would render it of the change, which it need not decode.
    for d in decoded:
        assert d["rendered"] == rendered_delta({**d, "rendered": None})
    # Only alice's changes were decoded: the others were dropped on their key.
    assert matcher.stats.changes_decoded == 3


async def test_new_group_over_existing_changes_matches_every_one(runtime: Runtime) -> None:
    """Changes already on the topic when the matcher joins are all matched, exactly once.

    aiokafka may fetch a new assignment before the matcher has paused it to load consents;
    nothing fetched in that window may be lost or matched against an incomplete index.
    """
    users = [f"user{i}" for i in range(40)]
    await publish_consents(
        runtime, *(consent(f"c_{u}", u, ["post"]) for u in users if int(u[4:]) % 2 == 0)
    )
    factory = ChangeFactory(users)
    changes = [factory.random_change(u, "post") for u in users for _ in range(25)]
    publisher = PlatformPublisher(runtime)
    await publisher.start()
    await publisher.publish(changes)
    await publisher.stop()

    matcher = Matcher(runtime)
    await matcher.start()
    task = asyncio.create_task(matcher.run())
    try:
        await wait_until(lambda: matcher.stats.deltas_emitted >= 500, timeout_s=30)
        await wait_until(lambda: matcher.ready, timeout_s=20)
    finally:
        await matcher.stop()
        await asyncio.wait_for(task, 10)
    deliveries = await read_topic(runtime, runtime.topics.deliveries, expected=500)
    decoded = [runtime.codec.decode(SchemaName.DELIVERY, r.value) for r in deliveries]
    assert len(decoded) == 500
    by_consent: dict[str, list[int]] = {}
    for delivery in decoded:
        by_consent.setdefault(delivery["consent_id"], []).append(delivery["sequence"])
    assert len(by_consent) == 20
    assert all(sorted(seqs) == list(range(1, 26)) for seqs in by_consent.values())


async def test_a_change_sent_twice_is_matched_once(runtime: Runtime) -> None:
    """A producer may send a batch again when its acknowledgement was lost: the copy of a
    change (the same change id) gets no second sequence under the same delta id."""
    await publish_consents(runtime, consent("c_alice", "alice", ["post"]))
    factory = ChangeFactory(USERS)
    first, second = factory.random_change("alice", "post"), factory.random_change("alice", "post")
    publisher = PlatformPublisher(runtime)
    await publisher.start()
    await publisher.publish([first, first, second])
    await publisher.stop()

    matcher = Matcher(runtime)
    await matcher.start()
    task = asyncio.create_task(matcher.run())
    try:
        await wait_until(lambda: matcher.stats.changes_seen >= 3, timeout_s=20)
    finally:
        await matcher.stop()
        await asyncio.wait_for(task, 10)
    deliveries = await read_topic(runtime, runtime.topics.deliveries, expected=2)
    decoded = [runtime.codec.decode(SchemaName.DELIVERY, r.value) for r in deliveries]
    assert [(d["change"]["change_id"], d["sequence"]) for d in decoded] == [
        (first["change_id"], 1),
        (second["change_id"], 2),
    ]
    assert matcher.stats.dropped["duplicate_change"] == 1
