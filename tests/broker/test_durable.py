"""The embedded broker on S3 storage: what it acknowledged survives a SIGKILL and a restart.

A broker of the test's own (the ``durable`` fixture: Tansu on a moto S3 server), killed as a
crash would and started again on the same port and bucket. Every wait is bounded.
"""

from __future__ import annotations

import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from durable_broker import DurableBroker
from portability.broker import EmbeddedBroker, ensure_topics
from portability.settings import Settings
from portability.wire import TopicSpec

_DEADLINE_S = 20.0
_RECORDS = 60


async def _produce(bootstrap: str, topic: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for number in range(count):
            await producer.send_and_wait(topic, f"v{number}".encode(), key=f"k{number}".encode())
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, partitions: list[TopicPartition], count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning()
        values: list[bytes] = []
        deadline = time.monotonic() + _DEADLINE_S
        while len(values) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            values += [record.value or b"" for batch in batches.values() for record in batch]
        return values
    finally:
        await consumer.stop()


async def _committed(bootstrap: str, group: str, partitions: list[TopicPartition]) -> list[int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return [await consumer.committed(partition) or -1 for partition in partitions]
    finally:
        await consumer.stop()


async def test_records_and_group_offsets_survive_a_kill(durable: DurableBroker) -> None:
    topic = f"durable-{uuid.uuid4().hex[:8]}"
    partitions = [TopicPartition(topic, number) for number in range(2)]
    await ensure_topics(durable.bootstrap, [TopicSpec(topic, 2, "delete")])
    await _produce(durable.bootstrap, topic, _RECORDS)
    consumer = AIOKafkaConsumer(bootstrap_servers=durable.bootstrap, group_id="survivor")
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.commit({partitions[0]: 7, partitions[1]: 11})
    finally:
        await consumer.stop()
    first_pid = durable.pid

    await durable.kill()
    assert durable.pid is None
    await durable.start()

    assert durable.pid not in (None, first_pid)
    assert await _committed(durable.bootstrap, "survivor", partitions) == [7, 11]
    values = await _read_all(durable.bootstrap, partitions, _RECORDS)
    assert sorted(values) == sorted(f"v{number}".encode() for number in range(_RECORDS))
    # And it goes on taking records after the restart.
    await _produce(durable.bootstrap, topic, 1)
    assert len(await _read_all(durable.bootstrap, partitions, _RECORDS + 1)) == _RECORDS + 1


def test_settings_give_the_broker_its_storage_and_s3_environment() -> None:
    settings = Settings(
        broker_storage="s3://bucket/",
        broker_s3_endpoint="http://127.0.0.1:9000/",
        broker_s3_access_key_id="key-id",
        broker_s3_secret_access_key="a-secret-access-key",
    )
    broker = EmbeddedBroker.from_settings(settings)
    assert broker.storage == "s3://bucket/"
    assert broker.durable
    assert settings.broker_environment() == {
        "AWS_ENDPOINT": "http://127.0.0.1:9000",
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "key-id",
        "AWS_SECRET_ACCESS_KEY": "a-secret-access-key",
    }
    assert "a-secret-access-key" not in repr(settings)
    assert not EmbeddedBroker.from_settings(Settings()).durable
    assert Settings().broker_environment() == {}


@pytest.mark.parametrize(
    ("storage", "says"),
    [
        ("postgres://user:pw@host/db", "scheme 'postgres' is not supported"),
        ("sqlite:///tmp/tansu.db", "scheme 'sqlite' is not supported"),
        ("s3://key:hidden@bucket/", "must not carry credentials"),
        ("s3:///", "names no bucket"),
    ],
)
def test_storage_other_than_memory_or_s3_is_refused(storage: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as refused:
        EmbeddedBroker(storage=storage)
    assert "pw" not in str(refused.value)
    assert "hidden" not in str(refused.value)
