"""Publishing account changes as the platform must (``portability changes publish``), and the
schema a producer registers (``portability changes schema``).

Publishing is the producer contract of :mod:`portability.wire.ingress` done by the book: each
JSON line is checked (JSON, the schema, the body checks that apply before a record exists),
encoded with the codec (Confluent frame, the registry's schema id), keyed by the UTF-8 user
id, placed in ``partition_for_user``'s partition, given the audience header when the change
needs one, and produced with ``acks=all``. A line that fails a check is named and never sent;
the others are. Memory stays bounded whatever the input: lines are read with a length limit,
and at most ``in_flight`` records await their acknowledgement.
"""

from __future__ import annotations

import asyncio
import collections
import json
from dataclasses import dataclass, field
from typing import IO, Any, Final, Protocol
from urllib.parse import urlsplit, urlunsplit

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from portability.broker import KafkaClients, bounded
from portability.broker.inspector import Inspector
from portability.ops.change_lines import (
    DEFAULT_MAX_LINE_BYTES,
    LineChecker,
    LineReader,
    LineRejection,
    PreparedRecord,
)
from portability.ops.errors import MissingTopicsError, OpsError
from portability.runtime import open_codec
from portability.settings import Settings
from portability.wire.ingress import ACCOUNT_CHANGE_RECORD, short_reason
from portability.wire.schemas import SchemaName, schema_text
from portability.wire.topics import TopicNames

__all__ = [
    "PublishCounts",
    "PublishObserver",
    "PublishOptions",
    "SchemaInfo",
    "publish_changes",
    "schema_info",
]

_READ_BATCH: Final = 256  # lines read per hop to the reading thread
_TIMEOUT_S: Final = 15.0


@dataclass(frozen=True, slots=True)
class PublishOptions:
    """How ``changes publish`` runs."""

    dry_run: bool = False
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    in_flight: int = 10_000  # records sent and not yet acknowledged, at most


@dataclass(slots=True)
class PublishCounts:
    """How far a publish got."""

    lines: int = 0  # lines read, blank ones included
    bytes_read: int = 0
    accepted: int = 0  # passed every check (sent or, in a dry run, would be)
    sent: int = 0  # acknowledged by the broker
    rejected: int = 0
    failed: int = 0  # accepted, but the broker did not acknowledge them
    stopped_at: int | None = None  # the line after which nothing more was read (a failure)


class PublishObserver(Protocol):
    """What a publish tells as it goes; the command prints it."""

    def rejected(self, rejection: LineRejection) -> None:
        """A line failed a check and is not sent."""

    def failed(self, rejection: LineRejection) -> None:
        """A sent line was not acknowledged by the broker."""

    def accepted(self, record: PreparedRecord) -> None:
        """A line passed every check (called before it is sent)."""

    def progress(self, counts: PublishCounts) -> None:
        """Called after each batch of lines."""


class _Silent:
    """The observer that tells nobody."""

    def rejected(self, rejection: LineRejection) -> None:
        return None

    def failed(self, rejection: LineRejection) -> None:
        return None

    def accepted(self, record: PreparedRecord) -> None:
        return None

    def progress(self, counts: PublishCounts) -> None:
        return None


# --- publishing -------------------------------------------------------------------------------


async def publish_changes(
    settings: Settings,
    bootstrap: str | None,
    stream: IO[bytes],
    options: PublishOptions,
    observer: PublishObserver | None = None,
) -> PublishCounts:
    """Check every line of ``stream`` and send those that pass (none with ``dry_run``).

    Args:
        settings: Topic prefix, partition count, time window, schema registry.
        bootstrap: The Kafka to send to; unused (may be None) in a dry run.
        stream: JSON lines, one AccountChange each.
        options: Dry run, line length limit, records in flight.
        observer: Told of each rejection, failure and accepted record, and of progress.

    Returns:
        The counts. Reading stops at the first record the broker does not acknowledge
        (``stopped_at``); records already in flight then are still reported one by one.

    Raises:
        BrokerError: Kafka cannot be reached.
        MissingTopicsError: ``account.changes`` does not exist.
        OpsError: The topic's partition count is not the configured one.
    """
    watcher: PublishObserver = observer or _Silent()
    topic = TopicNames.with_prefix(settings.topic_prefix).account_changes
    codec = await open_codec(settings)
    producer: AIOKafkaProducer | None = None
    try:
        if not options.dry_run:
            if bootstrap is None:  # pragma: no cover - the command requires it
                raise OpsError("no Kafka configured to publish to")
            await _check_topic(settings, bootstrap, topic)
            producer = KafkaClients(bootstrap, settings).producer("portability-changes-publish")
            await bounded(producer.start(), bootstrap, _TIMEOUT_S, "connect")
        checker = LineChecker(codec, settings.partitions, settings.ingress_window())
        sender = _Sender(producer, topic, options.in_flight, watcher)
        counts = sender.counts
        await _run_lines(LineReader(stream, options.max_line_bytes), checker, sender, options)
        await sender.drain()
        watcher.progress(counts)
        return counts
    finally:
        if producer is not None:
            await producer.stop()
        await codec.registry.close()


async def _run_lines(
    reader: LineReader, checker: LineChecker, sender: _Sender, options: PublishOptions
) -> None:
    counts = sender.counts
    while sender.counts.failed == 0:  # ends at the end of the input, or a broker failure
        # The stream is read in a thread: a slow pipe must not stall the producer's loop.
        lines = await asyncio.to_thread(reader.batch, _READ_BATCH)
        if not lines:
            return
        for number, line, length in lines:
            counts.lines = number
            if line is None:
                sender.reject(
                    number, f"longer than {options.max_line_bytes} bytes ({length}); not read"
                )
            elif line.strip():
                verdict = checker.check(number, line)
                if isinstance(verdict, LineRejection):
                    sender.reject(verdict.line, verdict.reason)
                else:
                    await sender.send(verdict)
            if counts.failed:
                counts.stopped_at = number
                break
        counts.bytes_read = reader.bytes_read
        sender.observer.progress(counts)


@dataclass(slots=True)
class _Sender:
    """Sends prepared records in order, keeping at most ``limit`` unacknowledged."""

    producer: AIOKafkaProducer | None  # None: a dry run
    topic: str
    limit: int
    observer: PublishObserver
    counts: PublishCounts = field(default_factory=PublishCounts)
    pending: collections.deque[tuple[int, asyncio.Future[Any]]] = field(
        default_factory=collections.deque
    )

    def reject(self, line: int, reason: str) -> None:
        self.counts.rejected += 1
        self.observer.rejected(LineRejection(line, reason))

    async def send(self, record: PreparedRecord) -> None:
        self.counts.accepted += 1
        self.observer.accepted(record)
        if self.producer is None:
            return
        try:
            future = await self.producer.send(
                self.topic,
                record.value,
                key=record.key,
                partition=record.partition,
                headers=list(record.headers) or None,
                timestamp_ms=record.timestamp_ms,
            )
        except KafkaError as error:
            self._fail(record.line, error)
            return
        self.pending.append((record.line, future))
        while len(self.pending) > self.limit:
            await self._settle_oldest()

    async def drain(self) -> None:
        while self.pending:
            await self._settle_oldest()

    async def _settle_oldest(self) -> None:
        line, future = self.pending.popleft()
        try:
            await future
        except KafkaError as error:
            self._fail(line, error)
        else:
            self.counts.sent += 1

    def _fail(self, line: int, error: Exception) -> None:
        self.counts.failed += 1
        self.observer.failed(LineRejection(line, short_reason(f"not sent: {error!r}")))


async def _check_topic(settings: Settings, bootstrap: str, topic: str) -> None:
    """The topic exists with the configured partitions (a producer would create a missing
    one with the broker's default count, and placing by a wrong count breaks co-partitioning)."""
    async with Inspector(bootstrap, _TIMEOUT_S) as inspector:
        layouts = await inspector.layouts([topic])
    layout = layouts.get(topic)
    if layout is None:
        raise MissingTopicsError([topic], bootstrap)
    if len(layout.partitions) != settings.partitions:
        raise OpsError(
            f"{topic} has {len(layout.partitions)} partitions, the pipeline is configured for "
            f"{settings.partitions}: set PORTABILITY_PARTITIONS={len(layout.partitions)}"
        )


# --- the schema -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    """What a producer of ``account.changes`` registers and frames its values with."""

    topic: str
    subject: str
    schema_id: int
    record: str
    registry: str  # "in-process" or the registry's URL
    schema: str  # the schema JSON exactly as registered

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "subject": self.subject,
            "schema_id": self.schema_id,
            "record": self.record,
            "registry": self.registry,
            "compatibility": "BACKWARD",
            "schema": json.loads(self.schema),
        }


async def schema_info(settings: Settings) -> SchemaInfo:
    """The subject, id and text of the AccountChange schema in the configured registry."""
    codec = await open_codec(settings)
    url = settings.schema_registry_url
    try:
        return SchemaInfo(
            topic=TopicNames.with_prefix(settings.topic_prefix).account_changes,
            subject=codec.subject(SchemaName.ACCOUNT_CHANGE),
            schema_id=codec.schema_id(SchemaName.ACCOUNT_CHANGE),
            record=ACCOUNT_CHANGE_RECORD,
            registry=_without_credentials(url.get_secret_value() if url else None) or "in-process",
            schema=schema_text(SchemaName.ACCOUNT_CHANGE),
        )
    finally:
        await codec.registry.close()


def _without_credentials(url: str | None) -> str | None:
    """The registry URL to print: any user and password in it left out."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))
