"""Dead letters counted as they arrive, for the status page and the dead-letter metrics.

:func:`follow_dead_letters` reads the dead-letter topic from its first record and keeps
following it, outside any consumer group. It reads headers only (stage, app, consent, reason,
redelivery markers), never decodes a value, so it costs next to nothing however large the
letters are. ``portability dlq`` is where a letter is inspected in full and redelivered.

As with the lag sampler, each batch publishes a new immutable :class:`DeadLetterSummary`, so
readers on other threads (a metrics scrape) never see a half-counted batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from portability.broker import KafkaClients
from portability.ops.dead_letters.listing import reason_class
from portability.settings import Settings
from portability.wire.dead_letters import DeadLetter
from portability.wire.headers import MARKER_HEADER, LetterField
from portability.wire.topics import TopicNames

__all__ = [
    "LATEST_KEPT",
    "DeadLetterCounter",
    "DeadLetterSummary",
    "LetterBrief",
    "follow_dead_letters",
]

log = logging.getLogger(__name__)

LATEST_KEPT = 20  # newest letters the status page lists
_POLL_MS = 500


@dataclass(frozen=True, slots=True)
class LetterBrief:
    """What the status page shows of one letter (``portability dlq show`` shows the rest)."""

    offset: int
    at: float | None  # epoch seconds, from the record's timestamp
    stage: str
    source: str
    app_id: str | None
    consent_id: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "at": None if self.at is None else _iso(self.at),
            "stage": self.stage,
            "source": self.source,
            "app_id": self.app_id,
            "consent_id": self.consent_id,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class DeadLetterSummary:
    """The letters read so far: counts per (stage, app) and per kind of reason, the newest."""

    following: bool = False  # a reader follows the topic (False: counts are unknown)
    letters: int = 0
    redeliveries: int = 0  # redelivery markers (``portability dlq redeliver``), not letters
    end_offset: int = 0  # the next offset to read
    by_stage_app: Mapping[tuple[str, str], int] = field(default_factory=dict)  # app "" unknown
    by_reason: Mapping[str, int] = field(default_factory=dict)
    latest: tuple[LetterBrief, ...] = ()  # oldest first
    error: str | None = None

    def by_stage(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for (stage, _app), count in self.by_stage_app.items():
            counts[stage] += count
        return dict(counts)

    def by_app(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for (_stage, app), count in self.by_stage_app.items():
            if app:
                counts[app] += count
        return dict(counts)


class DeadLetterCounter:
    """Counts letters record by record; :attr:`summary` is the published state."""

    def __init__(self) -> None:
        self._by_stage_app: Counter[tuple[str, str]] = Counter()
        self._by_reason: Counter[str] = Counter()
        self._latest: deque[LetterBrief] = deque(maxlen=LATEST_KEPT)
        self._letters = 0
        self._redeliveries = 0
        self._end = 0
        self.summary = DeadLetterSummary()

    def add(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Count ``records`` (one partition's, in order) and publish the new summary."""
        for record in records:
            self._end = record.offset + 1
            headers = [(name, bytes(value)) for name, value in record.headers or ()]
            if any(name == MARKER_HEADER for name, _value in headers):
                self._redeliveries += 1
                continue
            brief = _brief(record, DeadLetter.parse_headers(headers))
            self._letters += 1
            self._by_stage_app[(brief.stage, brief.app_id or "")] += 1
            self._by_reason[reason_class(brief.reason)] += 1
            self._latest.append(brief)
        self.publish(following=True)

    def publish(self, *, following: bool, error: str | None = None) -> None:
        self.summary = DeadLetterSummary(
            following=following,
            letters=self._letters,
            redeliveries=self._redeliveries,
            end_offset=self._end,
            by_stage_app=dict(self._by_stage_app),
            by_reason=dict(self._by_reason.most_common()),
            latest=tuple(self._latest),
            error=error,
        )


def _brief(record: ConsumerRecord[bytes, bytes], fields: Mapping[str, str]) -> LetterBrief:
    stage = fields.get(LetterField.STAGE, "?")
    consent = fields.get(LetterField.CONSENT_ID)
    if consent is None and stage == "delivery" and record.key:
        consent = record.key.decode(errors="replace")  # deliveries are keyed by consent
    topic = fields.get(LetterField.SOURCE_TOPIC)
    source = "?" if topic is None else f"{topic}[{fields.get(LetterField.SOURCE_PARTITION, '?')}]"
    return LetterBrief(
        offset=record.offset,
        at=record.timestamp / 1000
        if record.timestamp is not None and record.timestamp >= 0
        else None,
        stage=stage,
        source=f"{source}@{fields.get(LetterField.SOURCE_OFFSET, '?')}",
        app_id=fields.get(LetterField.APP_ID),
        consent_id=consent,
        reason=fields.get(LetterField.REASON, ""),
    )


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).isoformat(timespec="milliseconds")


async def follow_dead_letters(
    settings: Settings, bootstrap: str, counter: DeadLetterCounter, stop: asyncio.Event
) -> None:
    """Count the dead-letter topic from its first record until ``stop`` is set.

    Kafka errors are logged and retried; ``counter.summary.error`` says what failed meanwhile.
    """
    topic = TopicNames.with_prefix(settings.topic_prefix).dead_letters
    tp = TopicPartition(topic, 0)  # one partition: a letter is known by its offset
    consumer = KafkaClients(bootstrap, settings).reader("portability-api-dead-letters")
    try:
        await consumer.start()
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        counter.publish(following=True)
        while not stop.is_set():
            await _poll(consumer, tp, counter, stop)
    except KafkaError as error:
        counter.publish(following=False, error=f"cannot read {topic}: {error}")
        log.warning("dead-letter counter stopped: cannot read %s: %s", topic, error)
    finally:
        if counter.summary.following:
            counter.publish(following=False)
        await consumer.stop()


async def _poll(
    consumer: AIOKafkaConsumer,
    tp: TopicPartition,
    counter: DeadLetterCounter,
    stop: asyncio.Event,
) -> None:
    try:
        batches = await consumer.getmany(tp, timeout_ms=_POLL_MS)
    except KafkaError as error:
        counter.publish(following=True, error=str(error))
        log.warning("dead-letter counter: %s (retried)", error)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        return
    records = batches.get(tp, [])
    if records:
        counter.add(records)
