"""What the relay tests share: what the outbox must publish, and what Kafka holds."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from aiokafka import TopicPartition
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from portability.consent import OutboxEvent
from portability.runtime import Runtime
from portability.wire import SchemaName

__all__ = ["expected_ids", "identity", "published_ids", "unpublished"]


def expected_ids(engine: Engine) -> Counter[tuple[str, str]]:
    """What each outbox row must put on Kafka once: (topic kind, version or event id)."""
    with Session(engine) as session:
        events = session.exec(select(OutboxEvent).order_by(col(OutboxEvent.id))).all()
    return Counter(identity(event.kind, json.loads(event.payload)) for event in events)


def identity(kind: str, record: Mapping[str, Any]) -> tuple[str, str]:
    """What an outbox row is on Kafka: its kind and version, or its event id."""
    if kind == "notification":
        return kind, str(record["event_id"])
    return kind, str(record["version"])


async def published_ids(runtime: Runtime, expected: int) -> Counter[tuple[str, str]]:
    """Everything the three topics hold, by identity (bounded: reads each to its end)."""
    topics, partitions = runtime.topics, runtime.settings.partitions
    sources = [
        ("consent", topics.consents, partitions, SchemaName.CONSENT),
        ("app", topics.apps, 1, SchemaName.APP),
        ("notification", topics.notifications, partitions, SchemaName.NOTIFICATION),
    ]
    reader = runtime.kafka.reader("test-lock-reader")
    await reader.start()
    try:
        found: Counter[tuple[str, str]] = Counter()
        for kind, topic, count, schema in sources:
            assigned = [TopicPartition(topic, p) for p in range(count)]
            reader.assign(assigned)
            await reader.seek_to_beginning(*assigned)
            for _ in range(100):
                batches = await reader.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        found[identity(kind, runtime.codec.decode(schema, record.value))] += 1
                # The fetch's high watermark, not end_offsets (see DESIGN.md on Tansu).
                ends = [reader.highwater(tp) for tp in assigned]
                positions = [await reader.position(tp) for tp in assigned]
                if all(
                    end is not None and at >= end for at, end in zip(positions, ends, strict=True)
                ):
                    break
        assert sum(found.values()) >= expected, f"{sum(found.values())} of {expected} read"
        return found
    finally:
        await reader.stop()


def unpublished(engine: Engine) -> int:
    with Session(engine) as session:
        query = select(sa.func.count()).where(col(OutboxEvent.published_at).is_(None))
        return int(session.exec(query).one())
