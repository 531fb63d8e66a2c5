"""aiokafka against confluent-kafka (librdkafka) reading the matcher's change stream.

Issue 19: does another well-kept client for the hot reads change the picture? One embedded
broker, one ``account.changes`` topic populated as the matcher benchmark's (200,000 changes
of 50,000 users, six partitions), then rounds of four reads, their order rotated each round,
each client with the matcher's fetch settings:

- ``aiokafka raw``: the floor's read (:mod:`benchmarks.matcher_floor`, same opener): every
  partition without a group (``getmany``), each key looked up among the consenting users,
  their values kept;
- ``confluent raw``: the same with confluent-kafka's blocking ``Consumer`` (``assign``,
  ``consume(num_messages=...)``), each message's ``error()`` checked, as it must be;
- ``aiokafka group`` and ``confluent group``: read as the matcher needs it: a fresh group
  (``subscribe``, range assignor, 6 s session), each record's key, value, offset and headers
  taken, grouped by partition (aiokafka hands them so; confluent-kafka's flat batch is
  grouped here), the batch's offsets committed before the next; confluent-kafka through its
  asyncio wrapper ``confluent_kafka.aio.AIOConsumer`` (each call on a thread pool), as an
  asyncio matcher would have to use it.

CPU is the process's (``time.process_time``: every thread, librdkafka's fetch and parse
threads included), from creating the client to the last record, since librdkafka fetches
ahead before the first ``consume`` returns; it includes connecting and, for group reads,
idling through the join (~3 s on Tansu, a few ms of CPU). The rate is wall clock from the
first batch to the last record. Best of each path; every round is printed (shared machine).

Printed last: ``bench clients: ratio=R`` = confluent-kafka's raw read CPU per record ÷
aiokafka's (equally: aiokafka's records per CPU second ÷ confluent-kafka's): 0.5 would mean
confluent-kafka reads the stream with half the CPU. Before it ``bench clients_group``, the
same for the matcher-shaped reads, and what a switch would save the matcher per change.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from benchmarks.matcher_floor import open_changes_reader
from benchmarks.measurement import InvalidRunError, bench_settings
from benchmarks.population import Population, produce
from benchmarks.reporting import print_ratio, print_table
from portability.broker import EmbeddedBroker
from portability.runtime import Runtime, settle_collector

__all__ = ["main"]

_POLL_MS = 200
_FETCH_MAX_BYTES = 16 * 1024 * 1024  # as the matcher's consumer (KafkaClients.group_consumer)
_PARTITION_FETCH_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Size:
    users: int
    changes: int
    rounds: int
    timeout_s: float


FULL = Size(users=50_000, changes=200_000, rounds=3, timeout_s=60.0)
QUICK = Size(users=5_000, changes=20_000, rounds=1, timeout_s=30.0)


@dataclass(frozen=True, slots=True)
class Read:
    """One path's pass over the topic."""

    path: str
    run: int
    records: int
    seconds: float  # wall clock, first batch to last record
    cpu_s: float  # process CPU, from creating the client to the last record
    kept: int  # raw reads: values of consenting users; group reads: records taken apart

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.records * 1e6 if self.records else 0.0


@dataclass(frozen=True, slots=True)
class _Topic:
    """What every path reads, and what it must find."""

    runtime: Runtime
    total: int
    consenting: frozenset[bytes]
    expected_kept: int
    timeout_s: float

    @property
    def name(self) -> str:
        return self.runtime.topics.account_changes


def main(quick: bool = False) -> None:
    """Run the comparison and print its table and ``bench clients: ratio=R``."""
    _confluent_available()  # before minutes of set-up, not after
    asyncio.run(_main(QUICK if quick else FULL))


def _confluent_available() -> None:
    try:
        import confluent_kafka  # noqa: F401 - only this benchmark needs it
    except ImportError as error:
        raise InvalidRunError(
            "confluent-kafka is not installed: pip install confluent-kafka "
            "(it is in the dev extras: pip install -e '.[dev]')"
        ) from error


async def _main(size: Size) -> None:
    with tempfile.TemporaryDirectory(prefix="portability-bench-") as data_dir:
        async with EmbeddedBroker(log_file=Path(data_dir) / "tansu.log") as broker:
            runtime = await Runtime.open(bench_settings(Path(data_dir)), broker.bootstrap)
            try:
                await _bench(runtime, size)
            finally:
                await runtime.close()


async def _bench(runtime: Runtime, size: Size) -> None:
    population = Population(users=size.users, changes=size.changes)
    population.generate(runtime)
    await produce(
        runtime.kafka.bootstrap, runtime.topics.account_changes, population.change_records
    )
    consenting = frozenset(c["user_id"].encode() for c in population.consents)
    topic = _Topic(runtime, size.changes, consenting, population.expected_decoded, size.timeout_s)
    print(
        f"clients benchmark: {size.changes:,} changes of {size.users:,} users on "
        f"{runtime.settings.partitions} partitions, {len(consenting):,} consenting users "
        f"({topic.expected_kept:,} changes theirs); {size.rounds} round(s) of 4 reads",
        flush=True,
    )
    settle_collector()  # as the matcher process and the matcher benchmark do
    paths = list(_PATHS.items())
    reads: list[Read] = []
    for run in range(1, size.rounds + 1):
        shift = (run - 1) % len(paths)  # rotate: no path always runs first or last
        for path, measure in paths[shift:] + paths[:shift]:
            read = await measure(topic, run)
            _check(read, topic)
            reads.append(read)
            print(f"  {path} run {run}: {read.rate:,.0f} records/s, {read.cpu_us:.2f} us CPU")
    _report(reads)


def _check(read: Read, topic: _Topic) -> None:
    expected = topic.expected_kept if read.path.endswith("raw") else topic.total
    if read.records != topic.total or read.kept != expected:
        raise InvalidRunError(
            f"{read.path} run {read.run} read {read.records:,} records and kept {read.kept:,}, "
            f"expected {topic.total:,} and {expected:,}"
        )


def _report(reads: list[Read]) -> None:
    print_table(
        ["path", "run", "seconds", "records/s", "CPU s", "CPU us/record"],
        [
            [
                r.path,
                str(r.run),
                f"{r.seconds:.2f}",
                f"{r.rate:,.0f}",
                f"{r.cpu_s:.2f}",
                f"{r.cpu_us:.2f}",
            ]
            for r in reads
        ],
    )
    best = {path: _best(reads, path) for path in _PATHS}
    print(
        "best of each (CPU per record, fastest rate): "
        + "; ".join(
            f"{path} {read.cpu_us:.2f} us, {_best_rate(reads, path):,.0f} records/s"
            for path, read in best.items()
        )
    )
    aio_raw, ck_raw = best["aiokafka raw"], best["confluent raw"]
    aio_group, ck_group = best["aiokafka group"], best["confluent group"]
    print(
        f"a switch would save the matcher {aio_group.cpu_us - ck_group.cpu_us:.2f} us of CPU "
        f"per change at most (the group reads' difference; the raw reads' "
        f"{aio_raw.cpu_us - ck_raw.cpu_us:.2f} us), against the several us per change the "
        f"matcher spends (`make bench ARGS=matcher`: 'the matcher spends M us per change')"
    )
    print_ratio("clients_group", ck_group.cpu_us / aio_group.cpu_us if aio_group.cpu_us else 0.0)
    print_ratio("clients", ck_raw.cpu_us / aio_raw.cpu_us if aio_raw.cpu_us else 0.0)


def _best(reads: list[Read], path: str) -> Read:
    return min((r for r in reads if r.path == path), key=lambda r: r.cpu_s)


def _best_rate(reads: list[Read], path: str) -> float:
    return max(r.rate for r in reads if r.path == path)


class _Clock:
    """Process CPU from creation; wall clock from the first batch; the end of both."""

    def __init__(self) -> None:
        self.cpu_started = time.process_time()
        self.first_batch: float | None = None

    def batch(self) -> None:
        if self.first_batch is None:
            self.first_batch = time.perf_counter()

    def read(self, path: str, run: int, records: int, kept: int) -> Read:
        cpu = time.process_time() - self.cpu_started
        first = self.first_batch or time.perf_counter()
        return Read(path, run, records, time.perf_counter() - first, cpu, kept)


def _timed_out(path: str, seen: int, topic: _Topic) -> InvalidRunError:
    return InvalidRunError(f"{path} read {seen:,} of {topic.total:,} records in time")


async def _aiokafka_raw(topic: _Topic, run: int) -> Read:
    clock = _Clock()
    consumer = await open_changes_reader(topic.runtime, f"bench-clients-aiokafka-{run}")
    try:
        deadline = time.monotonic() + topic.timeout_s
        kept: list[bytes] = []
        seen = 0
        while seen < topic.total:
            if time.monotonic() > deadline:
                raise _timed_out("aiokafka raw", seen, topic)
            batch = await consumer.getmany(timeout_ms=_POLL_MS)
            if batch:
                clock.batch()
            for records in batch.values():
                kept.extend(r.value for r in records if r.key in topic.consenting and r.value)
                seen += len(records)
        return clock.read("aiokafka raw", run, seen, len(kept))
    finally:
        await consumer.stop()


def _confluent_config(topic: _Topic, group: str, client_id: str) -> dict[str, Any]:
    """The matcher's fetch settings in librdkafka's words."""
    return {
        "bootstrap.servers": topic.runtime.kafka.bootstrap,
        "group.id": group,  # librdkafka wants one even where the consumer only assigns
        "client.id": client_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": topic.runtime.settings.kafka_fetch_max_wait_ms,
        "fetch.max.bytes": _FETCH_MAX_BYTES,
        "max.partition.fetch.bytes": _PARTITION_FETCH_BYTES,
        # With the default 1 s, most reads here stalled ~1.1 s at an unchanged CPU: librdkafka
        # postpones a partition's fetch by it once its prefetch queue is over a threshold.
        "fetch.queue.backoff.ms": topic.runtime.settings.kafka_fetch_max_wait_ms,
    }


async def _confluent_raw(topic: _Topic, run: int) -> Read:
    # Blocking calls on the event loop's thread: nothing else runs on it meanwhile, and it is
    # the cheapest way to drive the client (no thread hand-off per batch).
    # Imported here, as everywhere in this module: only this benchmark needs the package.
    from confluent_kafka import OFFSET_BEGINNING, Consumer
    from confluent_kafka import TopicPartition as ConfluentPartition

    clock = _Clock()
    client_id = f"bench-clients-confluent-{run}"
    consumer = Consumer(_confluent_config(topic, f"unused-{uuid.uuid4().hex[:8]}", client_id))
    try:
        partitions = range(topic.runtime.settings.partitions)
        consumer.assign([ConfluentPartition(topic.name, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + topic.timeout_s
        batch_size = topic.runtime.settings.matcher_batch_max_records
        consenting = topic.consenting
        kept: list[bytes] = []
        seen = 0
        while seen < topic.total:
            if time.monotonic() > deadline:
                raise _timed_out("confluent raw", seen, topic)
            messages = consumer.consume(num_messages=batch_size, timeout=_POLL_MS / 1000)
            if messages:
                clock.batch()
            for message in messages:
                if message.error() is not None:
                    raise InvalidRunError(f"confluent raw: {message.error()}")
                if message.key() in consenting:
                    value = message.value()
                    if value:
                        kept.append(value)
            seen += len(messages)
        return clock.read("confluent raw", run, seen, len(kept))
    finally:
        consumer.close()


async def _aiokafka_group(topic: _Topic, run: int) -> Read:
    clock = _Clock()
    unique = uuid.uuid4().hex[:8]
    kafka = topic.runtime.kafka
    consumer = kafka.group_consumer(f"bench-clients-{unique}", f"bench-clients-aiokafka-{run}")
    await consumer.start()
    try:
        consumer.subscribe(topics=[topic.name])
        deadline = time.monotonic() + topic.timeout_s + 10  # + the join
        seen = taken = 0
        while seen < topic.total:
            if time.monotonic() > deadline:
                raise _timed_out("aiokafka group", seen, topic)
            batch = await consumer.getmany(timeout_ms=_POLL_MS)
            if not batch:
                continue
            clock.batch()
            offsets: dict[TopicPartition, int] = {}
            for tp, records in batch.items():
                for record in records:
                    _take(record.key, record.value, record.offset, record.headers)
                taken += len(records)
                seen += len(records)
                offsets[tp] = records[-1].offset + 1
            await consumer.commit(offsets)
        return clock.read("aiokafka group", run, seen, taken)
    finally:
        await consumer.stop()


async def _confluent_group(topic: _Topic, run: int) -> Read:
    from confluent_kafka import TopicPartition as ConfluentPartition
    from confluent_kafka.aio import AIOConsumer

    clock = _Clock()
    settings = topic.runtime.settings
    config = _confluent_config(
        topic, f"bench-clients-{uuid.uuid4().hex[:8]}", f"bench-clients-confluent-{run}"
    ) | {
        "partition.assignment.strategy": "range",  # as the matcher's (co-partitioned topics)
        # Tansu holds a first join for about half the session timeout: librdkafka's default
        # of 45 s makes that 23 s; the pipeline's 6 s makes it 3 s, as for aiokafka.
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        "heartbeat.interval.ms": settings.kafka_heartbeat_interval_ms,
    }
    consumer = AIOConsumer(config, max_workers=2)
    try:
        await consumer.subscribe([topic.name])
        deadline = time.monotonic() + topic.timeout_s + 10  # + the join
        batch_size = settings.matcher_batch_max_records
        seen = taken = 0
        while seen < topic.total:
            if time.monotonic() > deadline:
                raise _timed_out("confluent group", seen, topic)
            messages = await consumer.consume(num_messages=batch_size, timeout=_POLL_MS / 1000)
            if not messages:
                continue
            clock.batch()
            # Grouped by partition, as aiokafka hands them over and the matcher handles them.
            by_partition: dict[int | None, list[Any]] = defaultdict(list)
            for message in messages:
                if message.error() is not None:
                    raise InvalidRunError(f"confluent group: {message.error()}")
                by_partition[message.partition()].append(message)
            offsets: list[ConfluentPartition] = []
            for partition, records in by_partition.items():
                for message in records:
                    _take(message.key(), message.value(), message.offset(), message.headers())
                last = records[-1].offset()
                if partition is not None and last is not None:
                    offsets.append(ConfluentPartition(topic.name, partition, last + 1))
            taken += len(messages)
            seen += len(messages)
            await consumer.commit(offsets=offsets, asynchronous=False)
        return clock.read("confluent group", run, seen, taken)
    finally:
        await consumer.close()


def _take(key: object, value: object, offset: object, headers: object) -> None:
    """Where the matcher would use a record's fields: the read has handed them over."""


_PATHS: dict[str, Callable[[_Topic, int], Awaitable[Read]]] = {
    "aiokafka raw": _aiokafka_raw,
    "confluent raw": _confluent_raw,
    "aiokafka group": _aiokafka_group,
    "confluent group": _confluent_group,
}
