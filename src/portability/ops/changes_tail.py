"""Reading ``account.changes`` as a person would (``portability changes tail``).

The topic is read without a consumer group: partitions are assigned, so the pipeline's
groups never see this reader. Every record is judged as the pipeline judges it (the door and
body checks of :mod:`portability.wire.ingress`) and printed with its verdict; a record that
does not decode is shown with its fault and a hex excerpt, and reading goes on.

Like ``tail``: by default the newest ``limit`` records (20), merged over the partitions by
timestamp; ``from_beginning`` reads from each partition's first record instead (each
partition in order, the partitions interleaved as fetched); ``follow`` then keeps printing new
records until stopped. Without ``follow`` the read ends at the partitions' ends as they were
when it started. The ends are high watermarks from fetch answers (ListOffsets "latest" is
wrong on the embedded broker, see :mod:`portability.broker.inspector`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from portability.broker import BrokerError, KafkaClients
from portability.broker.inspector import Inspector
from portability.ops.change_json import change_to_json
from portability.ops.errors import MissingTopicsError
from portability.privacy.audience import UPDATE_MARKER, audience_marker
from portability.runtime import open_codec
from portability.settings import Settings
from portability.wire.codec import AvroCodec
from portability.wire.errors import WireFormatError
from portability.wire.ingress import Door, Fault, Rejection
from portability.wire.records import AccountChange, format_timestamp, from_millis
from portability.wire.schemas import SchemaName
from portability.wire.topics import TopicNames, partition_for_user

__all__ = ["DEFAULT_TAIL", "TailOptions", "TailRecord", "tail_changes"]

DEFAULT_TAIL: Final = 20
_POLL_MS: Final = 200
_HEX_BYTES: Final = 64
_FIRST_WINDOW: Final = 500  # records read back first when looking for one user's records
# Faults after which the value is not an AccountChange body worth decoding.
_NOT_A_BODY: Final = frozenset(
    {Fault.NO_VALUE, Fault.NOT_FRAMED, Fault.UNKNOWN_SCHEMA_ID, Fault.WRONG_SCHEMA}
)

Record: TypeAlias = ConsumerRecord[bytes, bytes]


@dataclass(frozen=True, slots=True)
class TailOptions:
    """What ``changes tail`` reads."""

    user: str | None = None  # only this user's records (their partition, by key)
    from_beginning: bool = False
    follow: bool = False
    limit: int | None = None  # None: DEFAULT_TAIL from the end, everything from the start
    timeout_s: float = 15.0  # a read that stops moving for this long is an error

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1, not {self.limit}")


@dataclass(frozen=True, slots=True)
class TailRecord:
    """One record of ``account.changes``, decoded where it can be, with the pipeline's verdict."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    raw: bytes | None
    value: AccountChange | None  # the decoded change; None if it does not decode
    fault: Rejection | None  # None: the pipeline takes it

    def as_dict(self) -> dict[str, Any]:
        """The JSON object ``--json`` prints (the value in ``changes publish``'s form)."""
        document: dict[str, Any] = {
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self._time(),
            "key": _text(self.key),
            "headers": {name: _text(value) for name, value in self.headers},
            "fault": None if self.fault is None else str(self.fault.fault),
            "reason": None if self.fault is None else self.fault.reason,
            "value": None if self.value is None else change_to_json(self.value),
        }
        if self.value is None:
            document["value_bytes"] = None if self.raw is None else len(self.raw)
            document["value_hex"] = None if self.raw is None else self.raw[:_HEX_BYTES].hex()
        return document

    def text(self) -> str:
        """One line for a person: where, when, key, headers, verdict, value."""
        parts = [f"[{self.partition}]@{self.offset}", self._time() or "-", f"key={_text(self.key)}"]
        parts += [f"{name}={_text(value)}" for name, value in self.headers]
        if self.fault is not None:
            parts.append(f"FAULT {self.fault.reason}")
        if self.value is not None:
            parts.append(json.dumps(change_to_json(self.value), ensure_ascii=False))
        elif self.raw is not None:
            more = "..." if len(self.raw) > _HEX_BYTES else ""
            parts.append(f"({len(self.raw)} bytes: {self.raw[:_HEX_BYTES].hex()}{more})")
        return " ".join(parts)

    def _time(self) -> str | None:
        return None if self.timestamp_ms < 0 else format_timestamp(from_millis(self.timestamp_ms))


async def tail_changes(
    settings: Settings,
    bootstrap: str,
    options: TailOptions,
    emit: Callable[[TailRecord], None],
    stop: asyncio.Event | None = None,
) -> int:
    """Print (``emit``) what ``options`` select of ``account.changes``; return how many.

    With ``follow`` it returns only when ``stop`` is set (or the task is cancelled).

    Raises:
        MissingTopicsError: The topic does not exist.
        BrokerError: Kafka cannot be reached, or a read stopped moving.
    """
    topic = TopicNames.with_prefix(settings.topic_prefix).account_changes
    async with Inspector(bootstrap, options.timeout_s) as inspector:
        layouts = await inspector.layouts([topic])
        layout = layouts.get(topic)
        if layout is None:
            raise MissingTopicsError([topic], bootstrap)
        count = len(layout.partitions)
        numbers = layout.partitions
        if options.user is not None:
            numbers = (partition_for_user(options.user, count),)
        tps = [TopicPartition(topic, number) for number in numbers]
        starts = await inspector.earliest(tps)
        ends = {tp: read.end for tp, read in (await inspector.read(dict.fromkeys(tps))).items()}
    codec = await open_codec(settings)
    reader = _Reader(settings, bootstrap, codec, count, options)
    try:
        await reader.start()
        printed = await reader.history(starts, ends, emit)
        if options.follow:
            printed += await reader.follow(ends, emit, stop or asyncio.Event())
        return printed
    finally:
        await reader.stop()
        await codec.registry.close()


class _Reader:
    """One group-less consumer, the codec and the door, over the chosen partitions."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        codec: AvroCodec,
        partitions: int,
        options: TailOptions,
    ) -> None:
        self._bootstrap = bootstrap
        self._codec = codec
        self._door = Door(codec, partitions, settings.ingress_window())
        self._options = options
        self._key = None if options.user is None else options.user.encode()
        self._consumer: AIOKafkaConsumer = KafkaClients(bootstrap, settings).reader(
            "portability-changes-tail"
        )

    async def start(self) -> None:
        try:
            await asyncio.wait_for(self._consumer.start(), self._options.timeout_s)
        except TimeoutError as error:
            raise BrokerError(f"Kafka at {self._bootstrap} did not answer (connect)") from error

    async def stop(self) -> None:
        await self._consumer.stop()

    async def history(
        self,
        starts: dict[TopicPartition, int],
        ends: dict[TopicPartition, int],
        emit: Callable[[TailRecord], None],
    ) -> int:
        """What is on the partitions now: from the start, or the newest ``limit``."""
        limit = self._options.limit
        if self._options.from_beginning:
            return await self._forward(starts, ends, emit, limit)
        wanted = DEFAULT_TAIL if limit is None else limit
        newest: list[Record] = []
        for tp in sorted(ends):
            newest += await self._newest(tp, starts[tp], ends[tp], wanted)
        newest.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
        shown = newest[-wanted:]
        for record in shown:
            emit(await self._judge(record))
        return len(shown)

    async def follow(
        self,
        ends: dict[TopicPartition, int],
        emit: Callable[[TailRecord], None],
        stop: asyncio.Event,
    ) -> int:
        """New records from ``ends`` on, as they come, until ``stop`` is set."""
        self._consumer.assign(list(ends))
        for tp, end in ends.items():
            self._consumer.seek(tp, end)
        printed = 0
        while not stop.is_set():  # runs until told to stop: following is the point
            self._door.expire_unknown()  # a schema registered meanwhile is found again
            batches = await self._consumer.getmany(timeout_ms=_POLL_MS)
            for records in batches.values():
                for record in self._mine(records):
                    emit(await self._judge(record))
                    printed += 1
        return printed

    async def _forward(
        self,
        starts: dict[TopicPartition, int],
        ends: dict[TopicPartition, int],
        emit: Callable[[TailRecord], None],
        limit: int | None,
    ) -> int:
        """Each partition from its start to its end, printed as fetched, ``limit`` at most."""
        printed = 0
        async with contextlib.aclosing(self._read(starts, ends)) as records:
            async for record in records:
                if limit is not None and printed >= limit:
                    break
                emit(await self._judge(record))
                printed += 1
        return printed

    async def _newest(self, tp: TopicPartition, start: int, end: int, wanted: int) -> list[Record]:
        """The newest ``wanted`` records of ``tp`` (of the user, if one is asked for).

        Reads back in windows that double, each read once, until enough are found or the
        partition's start is reached: a user's records may be far apart.
        """
        found: list[Record] = []
        high = end
        window = wanted if self._key is None else max(wanted, _FIRST_WINDOW)
        while high > start and len(found) < wanted:  # each pass moves down towards start
            low = max(start, high - window)
            found = [r async for r in self._read({tp: low}, {tp: high})] + found
            high, window = low, window * 2
        return found[-wanted:]

    async def _read(
        self, starts: dict[TopicPartition, int], ends: dict[TopicPartition, int]
    ) -> AsyncGenerator[Record, None]:
        """The records of each partition in [start, end) (the user's only, if asked)."""
        todo = {tp: end for tp, end in ends.items() if end > starts[tp]}
        if not todo:
            return
        self._consumer.assign(list(todo))
        for tp in todo:
            self._consumer.seek(tp, starts[tp])
        loop = asyncio.get_running_loop()
        moved_at = loop.time()
        while todo:  # each pass moves a position towards its end, or times out below
            batches = await self._consumer.getmany(*todo, timeout_ms=_POLL_MS)
            for tp, records in batches.items():
                moved_at = loop.time()
                inside = (r for r in records if starts[tp] <= r.offset < ends[tp])
                for record in self._mine(inside):
                    yield record
            for tp in list(todo):
                if await self._consumer.position(tp) >= todo[tp]:
                    del todo[tp]
            if todo and loop.time() - moved_at > self._options.timeout_s:
                raise BrokerError(
                    f"reading {next(iter(todo))} from {self._bootstrap} stopped moving for "
                    f"{self._options.timeout_s:g} s"
                )

    def _mine(self, records: Iterable[Record]) -> Iterable[Record]:
        if self._key is None:
            return records
        return (record for record in records if record.key == self._key)

    async def _judge(self, record: Record) -> TailRecord:
        """The record decoded where it can be, with the verdict the pipeline gives it."""
        headers = tuple((name, bytes(value)) for name, value in record.headers)
        update = audience_marker(headers) == UPDATE_MARKER  # the matcher's own records
        fault = None if update else await self._door.verdict(record)
        value: AccountChange | None = None
        if fault is None or fault.fault not in _NOT_A_BODY:
            try:
                value = await self._codec.decode_fetching(SchemaName.ACCOUNT_CHANGE, record.value)
            except WireFormatError as error:
                fault = fault or Rejection(Fault.UNDECODABLE, str(error))
        if fault is None and value is not None and not update:
            fault = self._door.body_fault(record, value)
        return TailRecord(
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp,
            key=record.key,
            headers=headers,
            raw=record.value,
            value=value,
            fault=fault,
        )


def _text(value: bytes | None) -> str | None:
    """Bytes as text where they are UTF-8, else as ``hex:...``."""
    if value is None:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return "hex:" + value.hex()
