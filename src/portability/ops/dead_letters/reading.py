"""Reading the dead-letter topic once, whole, into linked :class:`Letter` s.

The topic is read without a consumer group: one partition, assigned, from its first record
to the high watermark seen at the first fetch, so a read is bounded however busy the
pipeline is. Every letter's value is decoded once, with the schema of its source topic, so
that what a letter is about (consent, app) is known even when its headers do not say it,
and so that a redelivery can refuse bytes that would only be dead-lettered again.

Redelivery markers are not letters: a read sets them apart and links them to the letters
they name (:func:`_link`), which is how ``list``, ``show`` and ``redeliver`` know a letter's
history.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from portability.broker import BrokerError, KafkaClients, bounded
from portability.broker.inspector import Inspector
from portability.ops.dead_letters.letters import Decoded, Letter, RedeliveryMark, int_or_none
from portability.ops.errors import MissingTopicsError, OpsError
from portability.runtime import open_codec
from portability.settings import Settings
from portability.wire.codec import AvroCodec
from portability.wire.dead_letters import DeadLetter
from portability.wire.errors import WireFormatError
from portability.wire.headers import (
    MARKED_AT_HEADER,
    MARKER_HEADER,
    REDELIVERY_MARKER,
    REPLAYED_FROM_HEADER,
    REPLAYED_TO_OFFSET_HEADER,
    REPLAYED_TO_PARTITION_HEADER,
    REPLAYED_TO_TOPIC_HEADER,
    LetterField,
)
from portability.wire.schemas import SchemaName
from portability.wire.subjects import schemas_for_topic
from portability.wire.topics import TopicNames

__all__ = ["DeadLetterTopic", "Scan"]

log = logging.getLogger(__name__)

_POLL_MS = 200


@dataclass(slots=True)
class Scan:
    """The dead-letter topic read once: its letters, linked to their redelivery markers."""

    topic: str
    start: int
    end: int
    letters: list[Letter]
    marks: list[RedeliveryMark]

    def find(self, offset: int) -> Letter | None:
        return next((letter for letter in self.letters if letter.offset == offset), None)

    def mark_at(self, offset: int) -> RedeliveryMark | None:
        return next((mark for mark in self.marks if mark.offset == offset), None)

    def not_a_letter(self, offset: int) -> str:
        """Why ``offset`` names no letter: a marker there, an empty topic, or out of range."""
        mark = self.mark_at(offset)
        if mark is not None:
            return (
                f"offset {offset} of {self.topic} is not a dead letter but the record of a "
                f"replay: letter {mark.letter} was replayed to "
                f"{mark.topic}[{mark.partition}]@{mark.target}"
            )
        if self.start >= self.end:
            return f"no dead letter at offset {offset}: {self.topic} is empty"
        return (
            f"no dead letter at offset {offset} of {self.topic}: its offsets run from "
            f"{self.start} to {self.end - 1} (`portability dlq list` shows them)"
        )


class DeadLetterTopic:
    """The dead-letter topic of ``settings`` on ``bootstrap``; ``async with`` it, then read."""

    def __init__(self, settings: Settings, bootstrap: str, timeout_s: float) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        self.names = TopicNames.with_prefix(settings.topic_prefix)
        self.topic = self.names.dead_letters
        self._codec: AvroCodec | None = None

    async def __aenter__(self) -> DeadLetterTopic:
        async with Inspector(self.bootstrap, self.timeout_s) as inspector:
            layouts = await inspector.layouts([self.topic])
        layout = layouts.get(self.topic)
        if layout is None:
            raise MissingTopicsError([self.topic], self.bootstrap)
        if len(layout.partitions) != 1:
            raise OpsError(
                f"{self.topic} has {len(layout.partitions)} partitions; the pipeline creates it "
                "with 1, and a dead letter is known by its offset in that partition: recreate "
                "the topic with one partition"
            )
        # The codec as the runtime builds it, without creating topics.
        self._codec = await open_codec(self.settings)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._codec is not None:
            await self._codec.registry.close()

    async def read(self) -> Scan:
        """Every letter and marker up to the high watermark of the first fetch."""
        start, end, records = await self._fetch_all()
        letters: list[Letter] = []
        marks: list[RedeliveryMark] = []
        for record in records:
            mark = _mark(record)
            if mark is not None:
                marks.append(mark)
            else:
                letters.append(await self._letter(record))
        scan = Scan(self.topic, start, end, letters, marks)
        _link(scan)
        return scan

    async def _fetch_all(self) -> tuple[int, int, list[ConsumerRecord[bytes, bytes]]]:
        consumer = KafkaClients(self.bootstrap, self.settings).reader("portability-dlq")
        try:
            await bounded(consumer.start(), self.bootstrap, self.timeout_s, "connect")
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            start = await bounded(consumer.position(tp), self.bootstrap, self.timeout_s, "seek")
            records, end = await self._drain(consumer, tp, start)
        finally:
            await consumer.stop()
        return start, end, records

    async def _drain(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, start: int
    ) -> tuple[list[ConsumerRecord[bytes, bytes]], int]:
        """Fetch until the position reaches the end; a read that stops moving is an error.

        The end is the high watermark of the first fetch answer (ListOffsets "latest" is
        wrong on Tansu: see :mod:`portability.broker.inspector`); letters written meanwhile
        are left for the next command.
        """
        loop = asyncio.get_running_loop()
        records: list[ConsumerRecord[bytes, bytes]] = []
        end: int | None = None
        position, moved_at = start, loop.time()
        while True:
            batch = await consumer.getmany(tp, timeout_ms=_POLL_MS)
            if end is None:
                end = consumer.highwater(tp)
            records += batch.get(tp, [])
            reached = max(position, await consumer.position(tp))
            if reached > position:
                position, moved_at = reached, loop.time()
            if end is not None and position >= end:
                return [record for record in records if record.offset < end], end
            if loop.time() - moved_at > self.timeout_s:
                raise BrokerError(
                    f"reading {self.topic} from {self.bootstrap} stopped at offset {position} "
                    f"of {end if end is not None else '?'} for {self.timeout_s:g} s"
                )

    async def _letter(self, record: ConsumerRecord[bytes, bytes]) -> Letter:
        headers = tuple((name, bytes(value)) for name, value in record.headers)
        fields = DeadLetter.parse_headers(headers)
        source = fields.get(LetterField.SOURCE_TOPIC)
        decoded = await self._decode(schemas_for_topic(self.names, source), record.value, source)
        letter = Letter(
            offset=record.offset,
            timestamp_ms=record.timestamp,
            key=record.key,
            value=record.value,
            raw_headers=headers,
            fields=fields,
            decoded=decoded,
        )
        letter.redelivery_topic = _redelivery_topic(self.names, source, decoded)
        letter.consent_id, letter.app_id = _about(self.names, letter)
        return letter

    async def _decode(
        self, schemas: Sequence[SchemaName], value: bytes | None, topic: str | None
    ) -> Decoded:
        if not schemas:
            return Decoded(None, None, f"no schema is known for source topic {topic or '?'}")
        if self._codec is None:  # pragma: no cover - __aenter__ sets it
            raise RuntimeError("the dead-letter topic was not opened")
        errors = []
        for schema in schemas:
            try:
                return Decoded(schema, await self._codec.decode_fetching(schema, value), None)
            except WireFormatError as error:
                errors.append(str(error))
        return Decoded(schemas[0] if len(schemas) == 1 else None, None, "; ".join(errors))


def _redelivery_topic(names: TopicNames, source: str | None, decoded: Decoded) -> str | None:
    """The source topic, except for a parked copy: back to deliveries or notifications.

    A record redelivered into the retry topic would lack its retry headers and be
    dead-lettered again; the original topic gives it a fresh start in the consent's lane
    (same partition number: the retry topic is partitioned like both).
    """
    if source != names.deliveries_retry:
        return source
    return (
        {
            SchemaName.DELIVERY: names.deliveries,
            SchemaName.NOTIFICATION: names.notifications,
        }.get(decoded.schema)
        if decoded.ok and decoded.schema
        else None
    )


def _about(names: TopicNames, letter: Letter) -> tuple[str | None, str | None]:
    """The consent and app of a letter: its headers, else its decoded value, else its key.

    Deliveries and notifications are keyed by consent id, so even an undecodable one names
    its consent.
    """
    record = letter.decoded.record or {}
    consent = letter.fields.get(LetterField.CONSENT_ID) or _str(record.get("consent_id"))
    app = letter.fields.get(LetterField.APP_ID) or _str(record.get("app_id"))
    keyed_by_consent = letter.source_topic in (
        names.deliveries,
        names.notifications,
        names.deliveries_retry,
    )
    if consent is None and keyed_by_consent and letter.key:
        consent = letter.key.decode(errors="replace")
    return consent, app


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _mark(record: ConsumerRecord[bytes, bytes]) -> RedeliveryMark | None:
    headers = {name: bytes(value).decode(errors="replace") for name, value in record.headers}
    if headers.get(MARKER_HEADER) != REDELIVERY_MARKER:
        return None
    letter = int_or_none(headers.get(REPLAYED_FROM_HEADER))
    partition = int_or_none(headers.get(REPLAYED_TO_PARTITION_HEADER))
    target = int_or_none(headers.get(REPLAYED_TO_OFFSET_HEADER))
    if letter is None or partition is None or target is None:
        log.warning("ignoring a malformed redelivery marker at offset %d", record.offset)
        return None
    return RedeliveryMark(
        offset=record.offset,
        letter=letter,
        topic=headers.get(REPLAYED_TO_TOPIC_HEADER, "?"),
        partition=partition,
        target=target,
        at=headers.get(MARKED_AT_HEADER, ""),
    )


def _link(scan: Scan) -> None:
    """Tie markers to their letters, and letters born of a redelivery to the letter redelivered.

    A redelivered record that fails again is dead-lettered with its own position as source;
    the marker says which letter was redelivered to that position. A worker that forwards
    the redelivered record's ``dlq.replayed_from`` header ties them even without a marker.
    """
    by_offset = {letter.offset: letter for letter in scan.letters}
    redelivered_to: dict[tuple[str, int, int], int] = {}
    for mark in scan.marks:
        redelivered_to[mark.position] = mark.letter
        if mark.letter in by_offset:
            by_offset[mark.letter].redeliveries.append(mark)
    for letter in scan.letters:
        origin = int_or_none(letter.fields.get(LetterField.REPLAYED_FROM))
        topic, partition, offset = (
            letter.source_topic,
            letter.source_partition,
            letter.source_offset,
        )
        if origin is None and topic is not None and partition is not None and offset is not None:
            origin = redelivered_to.get((topic, partition, offset))
        if origin is None or origin == letter.offset:
            continue
        letter.redelivery_of = origin
        if origin in by_offset:
            by_offset[origin].followups.append(letter.offset)
