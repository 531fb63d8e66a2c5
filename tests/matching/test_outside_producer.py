"""A platform producer that follows only the published contract, with no project code: fastavro
on ``schemas/account_change.avsc``, the Confluent frame, the embedded mode's schema id computed
from the schema's fingerprint as documented, Kafka's murmur2 partitioner written out here, and
a plain aiokafka producer. Its change reaches the user's app.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from pipeline_harness import APP_A, Pipeline, pipeline_settings, running_pipeline
from portability.broker import EmbeddedBroker

MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")
# One worker runs the whole module (pytest -n): its tests share the module's pipeline.
pytestmark = pytest.mark.xdist_group("test_outside_producer")

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "account_change.avsc"


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``), as its Java source
    spells it: seed 0x9747b28c, 32-bit arithmetic."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(length // 4):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = length & ~3
    rest = length % 4
    if rest >= 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_of(user_id: str, partitions: int) -> int:
    """Java's default partitioner for a keyed record: toPositive(murmur2(key)) % partitions."""
    return (murmur2(user_id.encode()) & 0x7FFFFFFF) % partitions


def embedded_id(schema: dict[str, Any]) -> int:
    """The documented embedded-mode id: 1 + (CRC-64-AVRO fingerprint of the Parsing Canonical
    Form, unsigned) mod (2**31 - 1); fastavro writes the fingerprint's bytes little-endian."""
    canonical = fastavro.schema.to_parsing_canonical_form(schema)
    fingerprint = int.from_bytes(
        bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO")), "little"
    )
    return 1 + fingerprint % (2**31 - 1)


def test_murmur2_matches_kafkas_own_test_vectors() -> None:
    """From org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed ints there)."""
    vectors = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        bytes([ord("a"), ord("b"), ord("c")]): 479470107,
    }
    for key, signed in vectors.items():
        assert murmur2(key) == signed & 0xFFFFFFFF, key


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pipeline(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pipeline]:
    settings = pipeline_settings(tmp_path_factory.mktemp("outside"))
    async with running_pipeline(settings, broker.bootstrap) as running:
        yield running


@MODULE_LOOP
async def test_a_change_written_by_the_contract_alone_is_delivered(
    pipeline: Pipeline, broker: EmbeddedBroker
) -> None:
    p = pipeline
    consent = await p.grant("u_outside", APP_A, ["post"])
    await p.wait_matcher_ready()
    schema = json.loads(SCHEMA_FILE.read_text())
    now = datetime.now(UTC)
    change = {
        "change_id": "platform-chg-1",
        "user_id": "u_outside",
        "category": "post",
        "operation": "upsert",
        "record_id": "post-1",
        "occurred_at": now,
        "record": (
            "portability.v1.Post",
            {
                "caption": "from a platform producer",
                "media_url": "https://cdn.example/v.mp4",
                "visibility": "public",
                "created_at": now,
            },
        ),
        "context": None,
        "audience": None,
    }
    body = io.BytesIO()
    body.write(struct.pack(">bI", 0, embedded_id(schema)))
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), change)
    partitions = p.runtime.settings.partitions
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            f"{p.runtime.settings.topic_prefix}account.changes",
            body.getvalue(),
            key=b"u_outside",
            partition=partition_of("u_outside", partitions),
        )
    finally:
        await producer.stop()

    await p.wait_for_changes(consent.consent_id, ["platform-chg-1"])
    (delta,) = p.receiver.deltas(consent.consent_id)
    assert delta.record is not None
    assert delta.record["caption"] == "from a platform producer"
    assert p.matcher.stats.dead_lettered == 0
