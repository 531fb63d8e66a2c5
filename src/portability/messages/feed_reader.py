"""Reading a poll-mode app's pull feed: its events from the feed topic, after an iterator.

The delivery worker appends each event of a poll-mode app to the ``feed`` topic
(:class:`portability.delivery.feed.FeedWriter`): the webhook body, keyed by app id, so one
app's events sit in one partition in the order they were appended (which keeps each
consent's order). A read looks at that partition from the iterator's offset, keeps the
app's records (others' share the partition), and answers up to ``limit`` events with the
iterator to continue from. When nothing is new it waits up to ``wait_s`` for an event and
answers as soon as one arrives (a long poll).

What bounds a read: ``limit`` events, ``_MAX_BYTES`` of bodies (at least one event), and
``_MAX_SCAN`` records looked at; past any of them the answer says ``more``. Each read has a
consumer of its own, outside any group (no offsets are committed: the iterator is the
app's position); started consumers are kept for the next reads, at most ``max_open`` at
once (beyond: :class:`FeedUnavailableError`, retriable).

The feed keeps what its retention allows (``PORTABILITY_FEED_RETENTION_DAYS``): an iterator
below the partition's start, or past its end, is refused (:class:`IteratorExpiredError`)
rather than silently moved, since events after it may be lost. Delivery is at least once,
as for webhooks: after a worker crash an event may be appended twice (the same webhook-id).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Literal, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from portability.messages.feed_iterators import (
    FeedIterator,
    FeedUnavailableError,
    check_position,
)
from portability.runtime import Runtime
from portability.wire.headers import (
    FEED_CONSENT_ID_HEADER,
    FEED_EVENT_TYPE_HEADER,
    FEED_WEBHOOK_ID_HEADER,
)
from portability.wire.topics import partition_for_app

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_WAIT_S",
    "MAX_LIMIT",
    "MAX_WAIT_S",
    "FeedEvent",
    "FeedPage",
    "FeedReader",
    "FeedStart",
]

log = logging.getLogger(__name__)

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
DEFAULT_WAIT_S: Final = 5.0
MAX_WAIT_S: Final = 20.0
FeedStart = Literal["oldest", "latest"]

_MIN_FETCH_S: Final = 0.3  # even with wait 0: a first fetch after a seek needs a round trip
_FETCH_RECORDS: Final = 500
_MAX_SCAN: Final = 20_000  # records looked at in one read (other apps' included)
_MAX_FETCHES: Final = 10_000  # a bound on the loop; time and _MAX_SCAN end it far sooner
_MAX_BYTES: Final = 4 * 1024 * 1024  # of bodies in one answer
_BROKER_TIMEOUT_S: Final = 10.0
_MAX_OPEN: Final = 64
_IDLE_KEPT: Final = 8
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One event of the feed: what a webhook's headers and body would have carried."""

    webhook_id: str
    event_type: str
    consent_id: str  # "" for an event of no consent
    body: bytes  # the webhook body, exactly: a JSON object


@dataclass(frozen=True, slots=True)
class FeedPage:
    """An answer: the events, where to continue, and whether the feed has more already."""

    events: list[FeedEvent]
    iterator: str
    more: bool


class FeedReader:
    """Reads apps' feeds for one API process.

    Args:
        runtime: Kafka, the topic names and the partition count; None in a process without
            Kafka, which then refuses every read (:class:`FeedUnavailableError`).
        consumer: Makes a consumer outside any group (tests pass their own); default the
            runtime's reader.
        max_open: Reads (consumers) open at once, at most.
    """

    def __init__(
        self,
        runtime: Runtime | None,
        *,
        consumer: Callable[[], AIOKafkaConsumer] | None = None,
        max_open: int = _MAX_OPEN,
    ) -> None:
        self._runtime = runtime
        self._make = consumer or (
            (lambda: runtime.kafka.reader("portability-api-feed")) if runtime else None
        )
        self._max_open = max_open
        self._open = 0
        self._idle: list[AIOKafkaConsumer] = []
        self._stopped = False

    async def stop(self) -> None:
        """Stop the consumers kept for later reads (those in use stop when their read ends)."""
        self._stopped = True
        idle, self._idle = self._idle, []
        for consumer in idle:
            self._open -= 1
            await consumer.stop()

    async def read(
        self,
        app_id: str,
        iterator: str | None = None,
        *,
        start: FeedStart = "oldest",
        limit: int = DEFAULT_LIMIT,
        wait_s: float = DEFAULT_WAIT_S,
    ) -> FeedPage:
        """The app's events after ``iterator`` (or from ``start`` without one).

        Args:
            app_id: The app whose feed is read.
            iterator: The ``iterator`` of the last answer; None to begin at ``start``.
            start: Without an iterator: the oldest event kept, or only events to come.
            limit: Events at most (1 to ``MAX_LIMIT``).
            wait_s: How long to wait for an event when none is there (0 to ``MAX_WAIT_S``).

        Raises:
            InvalidIteratorError: ``iterator`` is not one of this app's feed.
            IteratorExpiredError: The feed no longer holds where ``iterator`` points.
            FeedUnavailableError: No Kafka here, the broker did not answer, or too many reads.
        """
        position = FeedIterator.decode(iterator, app_id) if iterator is not None else None
        runtime = self._runtime
        if runtime is None or self._make is None:
            raise FeedUnavailableError(
                "the feed needs Kafka: this API server runs without PORTABILITY_KAFKA_BOOTSTRAP"
            )
        partitions = runtime.settings.partitions
        tp = TopicPartition(runtime.topics.feed, partition_for_app(app_id, partitions))
        if position is not None:
            check_position(position, tp.partition, 0, None)  # re-partitioned: no broker needed
        consumer = await self._take()
        broken = True
        try:
            deadline = time.monotonic() + min(max(wait_s, 0.0), MAX_WAIT_S)
            scan = _Scan(consumer, tp, app_id, min(max(limit, 1), MAX_LIMIT), deadline)
            page = await scan.run(position, start)
        except (KafkaError, TimeoutError) as error:
            raise FeedUnavailableError(
                f"reading the feed failed ({error!r}): try again shortly", retriable=True
            ) from error
        except BaseException:
            broken = False  # refused (an expired iterator): the consumer is fine
            raise
        else:
            broken = False
            return page
        finally:
            await self._give(consumer, broken=broken)

    async def _take(self) -> AIOKafkaConsumer:
        if self._idle:
            return self._idle.pop()
        if self._open >= self._max_open or self._make is None:
            raise FeedUnavailableError(
                f"{self._max_open} feed reads are open on this server: try again shortly",
                retriable=True,
            )
        self._open += 1
        consumer = self._make()
        try:
            await _bounded(consumer.start())
        except BaseException as error:
            self._open -= 1
            await consumer.stop()
            if isinstance(error, KafkaError | TimeoutError):
                raise FeedUnavailableError(
                    f"the broker did not answer ({error!r}): try again shortly", retriable=True
                ) from error
            raise
        return consumer

    async def _give(self, consumer: AIOKafkaConsumer, *, broken: bool) -> None:
        if not broken and not self._stopped and len(self._idle) < _IDLE_KEPT:
            consumer.unsubscribe()  # no fetching while idle; the next read assigns afresh
            self._idle.append(consumer)
            return
        self._open -= 1
        await consumer.stop()


class _Scan:
    """One read of one partition: from a position, the app's events, within the bounds."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        app_id: str,
        limit: int,
        deadline: float,
    ) -> None:
        self._consumer = consumer
        self._tp = tp
        self._app_id = app_id
        self._key = app_id.encode()
        self._limit = limit
        self._deadline = deadline
        self._events: list[FeedEvent] = []
        self._bytes = 0

    async def run(self, iterator: FeedIterator | None, start: FeedStart) -> FeedPage:
        consumer, tp = self._consumer, self._tp
        consumer.assign([tp])
        begin = int((await _bounded(consumer.beginning_offsets([tp])))[tp])
        if iterator is None:
            position = begin if start == "oldest" else await self._end()
        else:
            check_position(iterator, tp.partition, begin, None)
            position = iterator.offset
        consumer.seek(tp, position)
        position = await self._collect(position, iterator)
        end = consumer.highwater(tp)
        return FeedPage(
            events=self._events,
            iterator=FeedIterator(self._app_id, tp.partition, position).encode(),
            more=end is not None and position < end,
        )

    async def _end(self) -> int:
        """Where events to come will be: the high watermark of a first fetch (the embedded
        broker's ListOffsets "latest" answers the start of the last record batch)."""
        consumer, tp = self._consumer, self._tp
        listed = int((await _bounded(consumer.end_offsets([tp])))[tp])
        consumer.seek(tp, listed)
        await consumer.getmany(tp, timeout_ms=int(_MIN_FETCH_S * 1000), max_records=1)
        end = consumer.highwater(tp)
        return listed if end is None else max(end, listed)

    async def _collect(self, position: int, iterator: FeedIterator | None) -> int:
        """Fetch from ``position`` until a bound is met; the position after what was seen."""
        scanned = 0
        first = True
        checked = iterator is None  # whether the first records seen start at the iterator
        for _ in range(_MAX_FETCHES):
            if self._full() or scanned >= _MAX_SCAN:
                break
            left = self._deadline - time.monotonic()
            timeout_s = 0.0 if self._events else max(left, _MIN_FETCH_S if first else 0.0)
            batches = await self._consumer.getmany(
                self._tp, timeout_ms=int(timeout_s * 1000), max_records=_FETCH_RECORDS
            )
            records = batches.get(self._tp, [])
            if not records:
                self._check_end(position, iterator)
                if self._events or time.monotonic() >= self._deadline:
                    break
                first = False
                continue
            if not checked and iterator is not None and records[0].offset != position:
                # Retention removed records since the check, or the log was recreated and
                # the consumer reset: events after the iterator may be lost.
                check_position(iterator, self._tp.partition, records[0].offset, position - 1)
            first, checked = False, True
            for record in records:
                scanned += 1
                position = record.offset + 1
                if record.key == self._key:
                    self._add(record)
                    if self._full():
                        break
        return position

    def _check_end(self, position: int, iterator: FeedIterator | None) -> None:
        end = self._consumer.highwater(self._tp)
        if iterator is not None and end is not None and position > end:
            check_position(iterator, self._tp.partition, 0, end)

    def _full(self) -> bool:
        return len(self._events) >= self._limit or self._bytes >= _MAX_BYTES

    def _add(self, record: ConsumerRecord[bytes, bytes]) -> None:
        event = _event(record)
        if event is not None:
            self._events.append(event)
            self._bytes += len(event.body)


def _event(record: ConsumerRecord[bytes, bytes]) -> FeedEvent | None:
    """The event of a feed record; None (logged) for one that does not hold a JSON object."""
    headers = {name: value.decode(errors="replace") for name, value in record.headers}
    body = record.value or b""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    if not isinstance(document, dict):
        log.warning(
            "feed record %s[%d]@%d is not a JSON object: skipped",
            record.topic,
            record.partition,
            record.offset,
        )
        return None
    data = document.get("data")
    consent_id = data.get("consent_id") if isinstance(data, dict) else None
    return FeedEvent(
        webhook_id=headers.get(FEED_WEBHOOK_ID_HEADER, ""),
        event_type=headers.get(FEED_EVENT_TYPE_HEADER) or str(document.get("type", "")),
        consent_id=headers.get(FEED_CONSENT_ID_HEADER) or str(consent_id or ""),
        body=body,
    )


async def _bounded(awaitable: Awaitable[_T]) -> _T:
    """``awaitable``, or TimeoutError after ``_BROKER_TIMEOUT_S``."""
    return await asyncio.wait_for(awaitable, _BROKER_TIMEOUT_S)
