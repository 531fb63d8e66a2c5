"""The floor under the matcher benchmark: what any matcher spends per change, and a raw read.

A matcher reads the platform's whole change stream. It cannot skip three steps: reading every
record (and looking at its key, the user, to know whether anyone consented), decoding the
changes of consenting users, and rendering, encoding and producing the deltas those changes
make. This module measures them by CPU time, in the benchmark's process, on the same topic
and in the same run, each the cheapest honest way:

- reading: a group-less consumer with the matcher's fetch settings reads every record and
  keeps the values whose key is a consenting user's (a set lookup per record);
- decoding: those values as the matcher decodes them (the reader generated from the schema,
  :mod:`portability.matching.change_reader`, the codec's fastavro where it refuses);
- emitting: per decoded change, the change rendered once and, per consent that grants its
  category, the delta's id, rendering and ledger digest, the Delivery record encoded (the
  change's bytes once per change, as the matcher writes them), and all of them produced in
  per-partition batches to a topic of their own, acks awaited.

The read's wall-clock rate is the *raw read*: the fastest a process can walk the topic
here, which sets how many cores a large platform's matchers need at best. Privacy shaping,
sequences, checkpoints, commits and audience figures are the matcher's own work, above the
floor.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from benchmarks.measurement import InvalidRunError
from benchmarks.population import Population
from portability.broker import ensure_topics
from portability.broker.batches import send_batches
from portability.matching import delta_id
from portability.matching.change_reader import change_reader
from portability.runtime import Runtime
from portability.webhooks.ledger import change_digest_of_rendered, delta_digest
from portability.webhooks.payload import render_change, render_delta
from portability.wire import SchemaName, TopicSpec
from portability.wire.records import AccountChange, to_millis
from portability.wire.topics import partition_for_consent

__all__ = ["MatcherFloor", "measure_floor", "open_changes_reader"]

_ROUNDS = 2  # each step's best of two: the machine is shared
_POLL_MS = 200
_VERSION = "floor"  # the policy version the floor's deltas carry (any string costs the same)

# (consent id, app id, categories granted) of a consenting user
_Grant = tuple[str, str, frozenset[str]]


@dataclass(frozen=True, slots=True)
class MatcherFloor:
    """CPU microseconds per change of the steps no matcher skips, and the raw read's rate."""

    read_us: float
    decode_us: float
    emit_us: float
    raw_rate: float  # changes/s of the read, wall clock, first batch to last record
    deltas: int  # the deltas the floor emitted (checked against the population's)

    @property
    def per_change_us(self) -> float:
        return self.read_us + self.decode_us + self.emit_us


async def measure_floor(runtime: Runtime, population: Population, timeout_s: float) -> MatcherFloor:
    """Measure the floor on the benchmark's ``account.changes`` topic (see the module)."""
    grants = _grants(population)
    consenting = {user.encode() for user in grants}
    best_read: tuple[float, float, list[bytes]] | None = None
    for _ in range(_ROUNDS):
        read = await _read(runtime, population.changes, consenting, timeout_s)
        if best_read is None or read[1] < best_read[1]:
            best_read = read
    assert best_read is not None
    seconds, read_cpu, values = best_read
    if len(values) != population.expected_decoded:
        raise InvalidRunError(
            f"the floor's read kept {len(values):,} changes of consenting users, "
            f"expected {population.expected_decoded:,}"
        )
    decode_cpu, changes = min(
        (_decode(runtime, values) for _ in range(_ROUNDS)), key=lambda pair: pair[0]
    )
    emits = [await _emit(runtime, changes, grants, round_) for round_ in range(_ROUNDS)]
    emit_cpu, deltas = min(emits)
    if deltas != population.expected_deltas:
        raise InvalidRunError(
            f"the floor emitted {deltas:,} deltas, expected {population.expected_deltas:,}"
        )
    total = population.changes
    return MatcherFloor(
        read_us=read_cpu / total * 1e6,
        decode_us=decode_cpu / total * 1e6,
        emit_us=emit_cpu / total * 1e6,
        raw_rate=total / seconds if seconds > 0 else 0.0,
        deltas=deltas,
    )


def _grants(population: Population) -> dict[str, list[_Grant]]:
    grants: dict[str, list[_Grant]] = defaultdict(list)
    for consent in population.consents:
        grants[consent["user_id"]].append(
            (consent["consent_id"], consent["app_id"], frozenset(consent["categories"]))
        )
    return dict(grants)


async def _read(
    runtime: Runtime, total: int, consenting: set[bytes], timeout_s: float
) -> tuple[float, float, list[bytes]]:
    """Wall seconds and CPU seconds of reading every change, and the consenting users' values."""
    consumer = await open_changes_reader(runtime, "bench-matcher-floor")
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        kept: list[bytes] = []
        seen = 0
        started: tuple[float, float] | None = None
        while seen < total:
            if loop.time() > deadline:
                raise InvalidRunError(f"the floor's read got {seen:,} of {total:,} in time")
            batch = await consumer.getmany(timeout_ms=_POLL_MS)
            if batch and started is None:
                started = (time.perf_counter(), time.process_time())
            for records in batch.values():
                kept.extend(r.value for r in records if r.key in consenting and r.value)
                seen += len(records)
        assert started is not None
        return time.perf_counter() - started[0], time.process_time() - started[1], kept
    finally:
        await consumer.stop()


async def open_changes_reader(runtime: Runtime, client_id: str) -> AIOKafkaConsumer:
    """A started group-less consumer of every partition of ``account.changes``, from the
    start, with the matcher's fetch settings (so that it fetches as the matcher does)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=runtime.kafka.bootstrap,
        client_id=client_id,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=runtime.settings.matcher_batch_max_records,
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        topic = runtime.topics.account_changes
        partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        await consumer.seek_to_beginning()
    except BaseException:
        await consumer.stop()
        raise
    return consumer


def _decode(runtime: Runtime, values: list[bytes]) -> tuple[float, list[AccountChange]]:
    """As the matcher decodes: by the generated reader, the codec where it refuses."""
    read = change_reader(runtime.codec)
    decode = runtime.codec.decode
    started = time.process_time()
    changes = [read(value) or decode(SchemaName.ACCOUNT_CHANGE, value) for value in values]
    return time.process_time() - started, changes


async def _emit(
    runtime: Runtime, changes: list[AccountChange], grants: dict[str, list[_Grant]], round_: int
) -> tuple[float, int]:
    """CPU seconds of rendering, encoding and producing every delta, and how many there were."""
    topic = f"{runtime.topics.deliveries}.floor{round_}"
    partitions = runtime.settings.partitions
    await ensure_topics(runtime.kafka.bootstrap, [TopicSpec(topic, partitions, "delete")])
    producer: AIOKafkaProducer = runtime.kafka.producer(f"bench-matcher-floor-{round_}")
    await producer.start()
    try:
        encode = runtime.codec.delivery_encoder.encode
        started = time.process_time()
        records: list[tuple[int, bytes, bytes]] = []
        for change in changes:
            change_json = render_change(change, _VERSION)
            change_bytes = runtime.codec.encode_body(SchemaName.ACCOUNT_CHANGE, change)
            digest = change_digest_of_rendered(change_json)
            matched_at_ms = to_millis(change["occurred_at"])
            for consent_id, app_id, categories in grants[change["user_id"]]:
                if change["category"] not in categories:
                    continue
                sequence = len(records) + 1
                identity = delta_id(consent_id, change["change_id"])
                value = encode(
                    delta_id=identity,
                    consent_id=consent_id,
                    app_id=app_id,
                    user_id=change["user_id"],
                    sequence=sequence,
                    matched_at_ms=matched_at_ms,
                    policy_version=_VERSION,
                    source_offset=sequence,
                    snapshot_epoch=0,
                    rendered=render_delta(identity, sequence, change_json),
                    ledger_digest=delta_digest(identity, sequence, digest),
                    change=change_bytes,
                )
                records.append(
                    (partition_for_consent(consent_id, partitions), consent_id.encode(), value)
                )
        # In per-partition batches, as the cheapest producer does: ``send`` costs ~20 us each.
        await send_batches(producer, topic, records)
        deltas = len(records)
        return time.process_time() - started, deltas
    finally:
        await producer.stop()
