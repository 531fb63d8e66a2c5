"""Redelivering dead letters (``portability dlq redeliver``): plan, then re-produce and mark.

A redelivery re-produces a letter's original key and value to its source topic, in its
source partition (a consent's deliveries and notifications keep their lane), with headers
``dlq.replayed_from`` (the dead-letter offset) and ``dlq.replayed_at``. After the redelivered
record is acknowledged, a *redelivery marker* is appended to the dead-letter topic itself: a
record without value whose headers name the letter and where it went (``dlq.marker:
replay``). Markers are how a later redelivery knows a letter was redelivered already (it
refuses it without ``--again``) and how a letter born of a failed redelivery is tied to the
one it came from (its source position is the redelivery's position).

"Redeliver" is the code's word; the header names, the marker value, the JSON keys and the
messages an operator reads keep the word "replay" they were published with, and
``dlq replay`` stays as a hidden alias of the command.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from portability.broker import KafkaClients, bounded
from portability.broker.inspector import Inspector, TopicLayout
from portability.ops.dead_letters.letters import Letter, iso_time
from portability.ops.dead_letters.listing import LetterFilter
from portability.ops.dead_letters.reading import DeadLetterTopic, Scan
from portability.settings import Settings
from portability.wire.headers import (
    MARKED_AT_HEADER,
    MARKER_HEADER,
    REDELIVERY_MARKER,
    REPLAYED_AT_HEADER,
    REPLAYED_FROM_HEADER,
    REPLAYED_TO_OFFSET_HEADER,
    REPLAYED_TO_PARTITION_HEADER,
    REPLAYED_TO_TOPIC_HEADER,
)
from portability.wire.topics import TopicNames

__all__ = [
    "RedeliveryDecision",
    "RedeliveryPlan",
    "RedeliveryResult",
    "Selection",
    "execute_redelivery",
    "plan_redelivery",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Selection:
    """Letters named by offset, or (``all_matching``) every letter the filter matches."""

    offsets: tuple[int, ...] = ()
    letter_filter: LetterFilter = field(default_factory=LetterFilter)
    all_matching: bool = False


@dataclass(frozen=True, slots=True)
class RedeliveryDecision:
    """A selected letter, and why it will not be redelivered (``refusal``), if it will not."""

    letter: Letter
    refusal: str | None = None

    @property
    def target(self) -> str:
        letter = self.letter
        topic = letter.redelivery_topic
        return f"{topic}[{letter.source_partition}]" if topic else "?"


@dataclass(frozen=True, slots=True)
class RedeliveryPlan:
    """What a redelivery would do. Named letters are all-or-nothing: one refusal blocks them."""

    topic: str
    named: bool
    decisions: tuple[RedeliveryDecision, ...]
    not_found: tuple[str, ...] = ()  # why named offsets are not letters

    @property
    def ready(self) -> list[Letter]:
        return [d.letter for d in self.decisions if d.refusal is None]

    @property
    def refused(self) -> list[RedeliveryDecision]:
        return [d for d in self.decisions if d.refusal is not None]

    @property
    def blocked(self) -> bool:
        return self.named and bool(self.not_found or self.refused)

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "blocked": self.blocked,
            "not_found": list(self.not_found),
            "letters": [
                {
                    "offset": d.letter.offset,
                    "target": d.target,
                    "consent_id": d.letter.consent_id,
                    "replay": d.refusal is None,
                    "refusal": d.refusal,
                }
                for d in self.decisions
            ],
        }


@dataclass(frozen=True, slots=True)
class RedeliveryResult:
    """One letter redelivered (``offset`` in its source topic), or the error that stopped it."""

    letter: Letter
    offset: int | None
    error: str | None = None
    marked: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "letter": self.letter.offset,
            "topic": self.letter.redelivery_topic,
            "partition": self.letter.source_partition,
            "offset": self.offset,
            "error": self.error,
            "marked": self.marked,
        }


async def plan_redelivery(
    settings: Settings,
    bootstrap: str,
    selection: Selection,
    *,
    force: bool = False,
    again: bool = False,
    timeout_s: float = 10.0,
) -> RedeliveryPlan:
    """Select the letters and decide, for each, whether it can be redelivered."""
    async with DeadLetterTopic(settings, bootstrap, timeout_s) as topic:
        scan = await topic.read()
        letters, not_found = _select(scan, selection)
        sources = {letter.redelivery_topic for letter in letters if letter.redelivery_topic}
        async with Inspector(bootstrap, timeout_s) as inspector:
            layouts = await inspector.layouts(sources)
    decisions = tuple(
        RedeliveryDecision(letter, _refusal(letter, layouts, force=force, again=again))
        for letter in letters
    )
    return RedeliveryPlan(scan.topic, not selection.all_matching, decisions, tuple(not_found))


def _select(scan: Scan, selection: Selection) -> tuple[list[Letter], list[str]]:
    if selection.all_matching:
        return [ltr for ltr in scan.letters if selection.letter_filter.matches(ltr)], []
    letters: list[Letter] = []
    not_found: list[str] = []
    for offset in dict.fromkeys(selection.offsets):
        letter = scan.find(offset)
        if letter is None:
            not_found.append(scan.not_a_letter(offset))
        else:
            letters.append(letter)
    return letters, not_found


def _refusal(
    letter: Letter, layouts: Mapping[str, TopicLayout], *, force: bool, again: bool
) -> str | None:
    """Why ``letter`` must not be redelivered, with what would change that; None if it may."""
    topic, partition = letter.redelivery_topic, letter.source_partition
    if letter.source_topic is None or partition is None:
        return "its headers do not name a source topic and partition (not a pipeline letter)"
    if topic is None:
        return (
            f"it comes from {letter.source_topic} and its value does not decode, so whether "
            "it was a delivery or a notification, and where to replay it, is unknown"
        )
    layout = layouts.get(topic)
    if layout is None:
        return f"its source topic {topic} does not exist (create it: portability topics create)"
    if partition not in layout.partitions:
        return f"{topic} has no partition {partition} (it has {len(layout.partitions)})"
    if not letter.decoded.ok and not force:
        return (
            f"its value does not decode, so it would only be dead-lettered again "
            f"(--force replays it anyway): {letter.decoded.error}"
        )
    if letter.was_redelivered and not again:
        return f"already replayed ({_redelivery_note(letter)}); --again replays it once more"
    return None


def _redelivery_note(letter: Letter) -> str:
    notes = [f"to {m.topic}[{m.partition}]@{m.target} at {m.at}" for m in letter.redeliveries]
    notes += [f"dead-lettered again as letter {offset}" for offset in letter.followups]
    return "; ".join(notes)


async def execute_redelivery(
    settings: Settings,
    bootstrap: str,
    letters: Sequence[Letter],
    timeout_s: float = 10.0,
) -> list[RedeliveryResult]:
    """Re-produce each letter to its source partition, then record a marker for each.

    Letters are sent in dead-letter order through one producer, so two letters of one
    consent keep their order in its partition. A marker is written only once the
    redelivery is acknowledged.
    """
    dead_letters = TopicNames.with_prefix(settings.topic_prefix).dead_letters
    # The client id is what the broker's operators see: it keeps its published name.
    producer = KafkaClients(bootstrap, settings).producer("portability-dlq-replay", linger_ms=0)
    try:
        await bounded(producer.start(), bootstrap, timeout_s, "connect")
        ordered = sorted(letters, key=lambda x: x.offset)
        results = await _produce_redeliveries(producer, ordered)
        return await _write_markers(producer, dead_letters, results)
    finally:
        await producer.stop()


async def _produce_redeliveries(
    producer: AIOKafkaProducer, letters: Sequence[Letter]
) -> list[RedeliveryResult]:
    now = iso_time(datetime.now(UTC)).encode()
    pending: list[tuple[Letter, asyncio.Future[Any] | BaseException]] = []
    for letter in letters:
        headers = [(REPLAYED_FROM_HEADER, str(letter.offset).encode()), (REPLAYED_AT_HEADER, now)]
        try:
            future = await producer.send(
                letter.redelivery_topic,
                letter.value,
                key=letter.key,
                partition=letter.source_partition,
                headers=headers,
            )
        except KafkaError as error:
            pending.append((letter, error))
            continue
        pending.append((letter, future))
    results = []
    for letter, sent in pending:
        results.append(await _redelivery_result(letter, sent))
    return results


async def _redelivery_result(
    letter: Letter, sent: asyncio.Future[Any] | BaseException
) -> RedeliveryResult:
    if isinstance(sent, BaseException):
        return RedeliveryResult(letter, None, f"{type(sent).__name__}: {sent}")
    try:
        metadata = await sent
    except KafkaError as error:
        return RedeliveryResult(letter, None, f"{type(error).__name__}: {error}")
    log.info(
        "redelivered dead letter %d to %s[%d]@%d",
        letter.offset,
        letter.redelivery_topic,
        letter.source_partition,
        metadata.offset,
        extra={"consent": letter.consent_id, "app": letter.app_id, "letter": letter.offset},
    )
    return RedeliveryResult(letter, int(metadata.offset))


async def _write_markers(
    producer: AIOKafkaProducer, topic: str, results: list[RedeliveryResult]
) -> list[RedeliveryResult]:
    at = iso_time(datetime.now(UTC)).encode()
    marked: list[RedeliveryResult] = []
    for result in results:
        if result.offset is None:
            marked.append(result)
            continue
        letter = result.letter
        headers = [
            (MARKER_HEADER, REDELIVERY_MARKER.encode()),
            (REPLAYED_FROM_HEADER, str(letter.offset).encode()),
            (REPLAYED_TO_TOPIC_HEADER, (letter.redelivery_topic or "").encode()),
            (REPLAYED_TO_PARTITION_HEADER, str(letter.source_partition).encode()),
            (REPLAYED_TO_OFFSET_HEADER, str(result.offset).encode()),
            (MARKED_AT_HEADER, at),
        ]
        try:
            await producer.send_and_wait(topic, None, key=letter.key, headers=headers)
        except KafkaError:
            log.exception(
                "redelivered dead letter %d but could not record the redelivery",
                letter.offset,
                extra={"consent": letter.consent_id, "letter": letter.offset},
            )
            marked.append(result)
            continue
        marked.append(RedeliveryResult(letter, result.offset, marked=True))
    return marked
