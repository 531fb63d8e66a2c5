"""Entries as the delivery worker writes them, a running writer, and reading what it stored.

The tests produce real ``delivery.log`` records on the session broker and read the consent
store's tables back; nothing here reaches into the writer's internals.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import TopicPartition
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from portability.messages import AttemptRow, DisclosedRecordRow, MessageRow
from portability.messages.writer import MessageLogWriter
from portability.runtime import Runtime
from portability.wire.dead_letters import DeadLetter
from portability.wire.delivery_log import DeliveryLogEntry, LoggedRecord
from portability.wire.headers import LetterField
from portability.wire.schemas import SchemaName

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
MESSAGE = "msg_0123456789abcdef0123456789abcdef"


def record(record_id: str, sequence: int) -> LoggedRecord:
    return {
        "delta_id": f"dlt_{record_id}",
        "record_id": record_id,
        "category": "post",
        "operation": "upsert",
        "sequence": sequence,
        "policy_version": "2026-01",
    }


def entry(**changes: Any) -> DeliveryLogEntry:
    """A worker's attempt at :data:`MESSAGE` (two records), failed with a 503 unless changed."""
    made: DeliveryLogEntry = {
        "message_id": MESSAGE,
        "app_id": "app_log",
        "consent_id": "cns_log",
        "user_id": "u-log",
        "event_type": "portability.delta",
        "endpoint_url": "http://127.0.0.1:9/hooks",
        "origin": "worker",
        "attempt": 1,
        "attempted_at": T0,
        "duration_ms": 12,
        "ok": False,
        "status": 503,
        "reason": "http_503",
        "response_excerpt": "busy",
        "size": 321,
        "body_sha256": "ab" * 32,
        "first_sequence": 1,
        "last_sequence": 2,
        "snapshot_epoch": None,
        "removal_reason": None,
        "records": [record("r1", 1), record("r2", 2)],
        "sources": [{"topic": "deliveries", "partition": 0, "offset": 7}],
        "ledger": None,
    }
    made.update(changes)  # type: ignore[typeddict-item]
    return made


def ok_entry(attempt: int = 2, at: datetime | None = None, **changes: Any) -> DeliveryLogEntry:
    """The successful attempt that follows :func:`entry`'s failure."""
    return entry(
        attempt=attempt,
        attempted_at=at or T0 + timedelta(seconds=attempt),
        ok=True,
        status=200,
        reason="",
        response_excerpt="",
        **changes,
    )


async def produce(runtime: Runtime, *values: DeliveryLogEntry | bytes) -> None:
    """Write entries (or raw bytes) to ``delivery.log``, keyed by message id, acknowledged."""
    producer = runtime.kafka.producer("test-delivery-log")
    await producer.start()
    try:
        for value in values:
            if isinstance(value, bytes):
                await producer.send_and_wait(runtime.topics.delivery_log, value, key=b"garbage")
                continue
            data = runtime.codec.encode(SchemaName.DELIVERY_LOG_ENTRY, value)
            key = value["message_id"].encode()
            await producer.send_and_wait(runtime.topics.delivery_log, data, key=key)
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def running_writer(
    runtime: Runtime, engine: Engine, **kwargs: Any
) -> AsyncIterator[MessageLogWriter]:
    """A started writer running in a task; stopped (and its task awaited) on the way out."""
    import asyncio

    writer = MessageLogWriter(runtime, engine, **kwargs)
    await writer.start()
    task = asyncio.create_task(writer.run(), name="message log writer")
    try:
        yield writer
    finally:
        await writer.stop()
        await asyncio.wait_for(task, timeout=10.0)


def messages(engine: Engine) -> list[MessageRow]:
    with Session(engine) as session:
        return list(session.exec(select(MessageRow).order_by(MessageRow.message_id)))


def attempts(engine: Engine) -> list[AttemptRow]:
    with Session(engine) as session:
        query = select(AttemptRow).order_by(col(AttemptRow.attempted_at), col(AttemptRow.origin))
        return list(session.exec(query))


def disclosed(engine: Engine) -> list[DisclosedRecordRow]:
    with Session(engine) as session:
        query = select(DisclosedRecordRow).order_by(DisclosedRecordRow.record_id)
        return list(session.exec(query))


async def committed(runtime: Runtime, group: str) -> int:
    """The offsets the group committed on ``delivery.log``, summed over partitions."""
    consumer = runtime.kafka.group_consumer(group, "test-committed")
    await consumer.start()
    try:
        total = 0
        for partition in range(runtime.settings.partitions):
            offset = await consumer.committed(
                TopicPartition(runtime.topics.delivery_log, partition)
            )
            total += offset or 0
        return total
    finally:
        await consumer.stop()


async def dead_letters(runtime: Runtime, at_least: int, timeout_s: float = 10.0) -> list[Any]:
    """The dead-letters topic's records (``at_least`` of them, or fail after the timeout)."""
    reader = runtime.kafka.reader("test-dead-letters")
    await reader.start()
    try:
        tp = TopicPartition(runtime.topics.dead_letters, 0)
        reader.assign([tp])
        await reader.seek_to_beginning(tp)
        found: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(found) < at_least:
            assert time.monotonic() < deadline, f"fewer than {at_least} dead letters"
            batch = await reader.getmany(tp, timeout_ms=200)
            found += batch.get(tp, [])
        return found
    finally:
        await reader.stop()


def letter_fields(letter: Any) -> dict[str, str]:
    """A dead letter's ``dlq.*`` headers, by :class:`LetterField`."""
    return DeadLetter.parse_headers(letter.headers)


__all__ = [
    "MESSAGE",
    "T0",
    "LetterField",
    "attempts",
    "committed",
    "dead_letters",
    "disclosed",
    "entry",
    "letter_fields",
    "messages",
    "ok_entry",
    "produce",
    "record",
    "running_writer",
]
