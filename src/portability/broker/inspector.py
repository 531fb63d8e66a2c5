"""Reading a broker's state for the operator commands: topics, offsets, groups, configs.

Each read is written so that it gives the right answer on real Kafka and on the embedded
Tansu, whose answers differ in places:

- ListOffsets "latest" (``end_offsets()``) answers the base offset of a partition's last
  record batch plus one, not its end. The high watermark in a Fetch response is right, so
  :meth:`Inspector.read` fetches from each partition and takes the end from the response.
- OffsetFetch without partitions ("every offset of the group") gets an answer aiokafka
  cannot decode, and the connection drops: committed offsets are always asked for by
  partition.
- DescribeGroups of several groups at once gets an answer aiokafka mis-decodes: groups are
  described one at a time.
- A Metadata request naming a missing topic creates it (as does Kafka with
  ``auto.create.topics.enable``): only topics seen in the full listing are ever named.

Every call is bounded by ``timeout_s``; a broker that cannot be reached or does not answer
in time is a :class:`BrokerError` that says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError

from portability.broker import BrokerError, stop_consumer

__all__ = ["Inspector", "PartitionRead", "RecordHead", "TopicLayout"]

_T = TypeVar("_T")
_POLL_MS = 100
# Enough of one partition to find its first record; Kafka returns a whole first batch
# anyway when it is larger (KIP-74).
_PARTITION_FETCH_BYTES = 64 * 1024
# Polls after a partition's end is known to wait for its first record before giving up.
_RECORD_POLLS = 10


@dataclass(frozen=True, slots=True)
class PartitionRead:
    """What a fetch from ``offset`` said about a partition."""

    end: int  # the high watermark: the offset the next record will get
    first_offset: int | None  # the first record at or after the asked offset, if any
    first_timestamp_ms: int | None  # its timestamp (-1 from the broker becomes None)


@dataclass(frozen=True, slots=True)
class RecordHead:
    """A record's offset, key and headers (its value is not kept)."""

    offset: int
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class TopicLayout:
    """A topic's partitions and where they live, from Metadata."""

    name: str
    partitions: tuple[int, ...]
    leaders: Mapping[int, int]
    replicas: Mapping[int, tuple[int, ...]]


class Inspector:
    """An admin client and a group-less consumer on one broker; ``async with`` it."""

    def __init__(self, bootstrap: str, timeout_s: float = 10.0) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        request_timeout_ms = int(timeout_s * 1000)
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="portability-inspector",
            request_timeout_ms=request_timeout_ms,
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id="portability-inspector",
            group_id=None,
            enable_auto_commit=False,
            # An asked offset below the log start (retention removed it) reads from the
            # start: the oldest record that is really there.
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=_PARTITION_FETCH_BYTES,
            request_timeout_ms=request_timeout_ms,
        )

    async def __aenter__(self) -> Inspector:
        try:
            await self._bounded(self._admin.start(), "connect")
            await self._bounded(self._consumer.start(), "connect")
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        try:
            await stop_consumer(self._consumer)  # not consumer.stop(): see stop_consumer
        finally:
            await self._admin.close()

    async def _bounded(self, call: Awaitable[_T], what: str) -> _T:
        """``call`` within the timeout, its failures turned into a BrokerError saying what."""
        try:
            return await asyncio.wait_for(call, self.timeout_s)
        except TimeoutError as error:
            raise BrokerError(
                f"Kafka at {self.bootstrap} did not answer within {self.timeout_s:g} s ({what})"
            ) from error
        except KafkaConnectionError as error:
            raise BrokerError(
                f"cannot reach Kafka at {self.bootstrap} ({what}): {error}"
            ) from error
        except KafkaError as error:
            raise BrokerError(f"{what} on Kafka at {self.bootstrap} failed: {error}") from error

    # --- topics -----------------------------------------------------------------------------

    async def topic_names(self) -> set[str]:
        """Every topic on the broker (a full listing names none, so it creates none)."""
        return set(await self._bounded(self._admin.list_topics(), "list topics"))

    async def layouts(self, topics: Iterable[str]) -> dict[str, TopicLayout]:
        """Partitions of the ``topics`` that exist; missing ones are left out, not created."""
        existing = await self.topic_names()
        wanted = sorted(set(topics) & existing)
        if not wanted:
            return {}
        described: list[dict[str, Any]] = await self._bounded(
            self._admin.describe_topics(wanted), "describe topics"
        )
        return {
            str(topic["topic"]): _layout(topic) for topic in described if topic["error_code"] == 0
        }

    async def topic_configs(self, topics: Iterable[str]) -> dict[str, dict[str, str]] | None:
        """Each topic's configs as the broker reports them, or None if it cannot say.

        Kafka lists every config (defaults included); Tansu only those set at creation.
        """
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in topics]
        if not resources:
            return {}
        try:
            responses = await self._bounded(
                self._admin.describe_configs(resources), "describe configs"
            )
        except BrokerError:
            return None
        configs: dict[str, dict[str, str]] = {}
        for response in responses:
            for error_code, _message, _type, name, entries in response.resources:
                if error_code == 0:
                    configs[str(name)] = {str(e[0]): str(e[1]) for e in entries if e[1] is not None}
        return configs

    async def earliest(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The log start offset of each partition (ListOffsets "earliest")."""
        wanted = list(partitions)
        if not wanted:
            return {}
        starts: dict[TopicPartition, int] = await self._bounded(
            self._consumer.beginning_offsets(wanted), "list offsets"
        )
        return starts

    # --- groups -----------------------------------------------------------------------------

    async def committed(
        self, group: str, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int | None]:
        """The group's committed offset on each partition; None where it has none."""
        wanted = sorted(partitions)
        if not wanted:
            return {}
        answer = await self._bounded(
            self._admin.list_consumer_group_offsets(group, partitions=wanted),
            f"committed offsets of {group}",
        )
        offsets: dict[TopicPartition, int | None] = dict.fromkeys(wanted)
        for tp, meta in answer.items():
            offsets[tp] = meta.offset if meta.offset >= 0 else None
        return offsets

    async def member_count(self, group: str) -> int | None:
        """How many members the group has; None if the broker's answer cannot be used."""
        try:
            responses = await self._bounded(
                self._admin.describe_consumer_groups([group]), f"describe group {group}"
            )
        except BrokerError:
            return None
        for response in responses:
            for described in response.groups:
                error_code, name, _state, _protocol_type, _protocol, members = described[:6]
                if name == group and error_code == 0:
                    return len(members)
        return None

    # --- partitions -------------------------------------------------------------------------

    async def read(
        self, targets: Mapping[TopicPartition, int | None]
    ) -> dict[TopicPartition, PartitionRead]:
        """Fetch each partition from its target offset: its end and the first record there.

        A target of None asks for the end only; the fetch then starts at ListOffsets'
        answer, so it reads at most the partition's last batch on Tansu and nothing on
        Kafka. Positions and high watermarks start afresh on every call (``assign``).
        """
        if not targets:
            return {}
        listed = await self._bounded(self._consumer.end_offsets(list(targets)), "list offsets")
        starts = {tp: listed[tp] if offset is None else offset for tp, offset in targets.items()}
        self._consumer.assign(list(starts))
        for tp, offset in starts.items():
            self._consumer.seek(tp, offset)
        return await self._bounded(self._fetch_until_known(starts), "fetch")

    async def _fetch_until_known(
        self, starts: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, PartitionRead]:
        """Poll until each partition's end is known and, if it lies beyond the start, the
        first record there was seen, or ``_RECORD_POLLS`` more polls brought none: between
        a committed offset and the end there may be only transaction markers, which a
        consumer never sees."""
        firsts: dict[TopicPartition, tuple[int, int]] = {}
        polls: dict[TopicPartition, int] = {}
        results: dict[TopicPartition, PartitionRead] = {}
        while len(results) < len(starts):
            pending = [tp for tp in starts if tp not in results]
            batches = await self._consumer.getmany(*pending, timeout_ms=_POLL_MS)
            for tp, records in batches.items():
                first = next((r for r in records if r.offset >= starts[tp]), None)
                if first is not None and tp not in firsts:
                    firsts[tp] = (first.offset, first.timestamp)
            for tp in pending:
                end = self._consumer.highwater(tp)
                if end is None:
                    continue
                polls[tp] = polls.get(tp, 0) + 1
                if tp in firsts or end <= starts[tp] or polls[tp] > _RECORD_POLLS:
                    results[tp] = _partition_read(end, firsts.get(tp))
        return results

    async def records(
        self, tp: TopicPartition, start: int, stop: int, limit: int
    ) -> list[RecordHead]:
        """The records of ``tp`` from ``start`` up to ``stop`` (exclusive), at most ``limit``.

        Fewer when the partition has fewer there (``_RECORD_POLLS`` polls in a row brought
        nothing: offsets held by transaction markers, or removed by retention).
        """
        if start >= stop or limit <= 0:
            return []
        self._consumer.assign([tp])
        self._consumer.seek(tp, start)
        return await self._bounded(self._collect(tp, start, stop, limit), "fetch")

    async def _collect(
        self, tp: TopicPartition, start: int, stop: int, limit: int
    ) -> list[RecordHead]:
        found: list[RecordHead] = []
        idle = 0
        # Every poll either brings a record (at most ``limit`` of them) or counts as idle.
        while len(found) < limit and idle < _RECORD_POLLS:
            batches = await self._consumer.getmany(
                tp, timeout_ms=_POLL_MS, max_records=limit - len(found)
            )
            polled = batches.get(tp, [])
            fresh = [r for r in polled if start <= r.offset < stop]
            found += [RecordHead(r.offset, r.key, tuple(r.headers or ())) for r in fresh]
            if any(r.offset >= stop - 1 for r in polled):
                break
            idle = 0 if fresh else idle + 1
        return found[:limit]


def _partition_read(end: int, first: tuple[int, int] | None) -> PartitionRead:
    if first is None:
        return PartitionRead(end=end, first_offset=None, first_timestamp_ms=None)
    offset, timestamp = first
    return PartitionRead(end, offset, timestamp if timestamp >= 0 else None)


def _layout(topic: Mapping[str, Any]) -> TopicLayout:
    partitions = sorted(topic["partitions"], key=lambda p: int(p["partition"]))
    return TopicLayout(
        name=str(topic["topic"]),
        partitions=tuple(int(p["partition"]) for p in partitions),
        leaders={int(p["partition"]): int(p["leader"]) for p in partitions},
        replicas={int(p["partition"]): tuple(int(r) for r in p["replicas"]) for p in partitions},
    )
