"""Dead-lettering: records the delivery worker gives up on, written to ``dead_letters``.

Two kinds: a record that cannot be read at all (undecodable, dead-lettered as read), and a
lane's head whose attempts ran out or whose failure is not retriable (with its attempt
history, and, for a record an operator replayed, the letter it came from, so a second failure
stays tied to the first).
"""

from __future__ import annotations

import json
import logging

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from portability.delivery.lane_book import LaneBook
from portability.delivery.lanes import Item, Lane
from portability.delivery.parking import Attempt
from portability.delivery.sender import Outcome
from portability.delivery.stats import DeliveryStats
from portability.wire.dead_letters import DeadLetter
from portability.wire.headers import LetterField
from portability.wire.topics import TopicNames

__all__ = ["DeadLettering"]

# The role's logger, whichever part of the worker writes: operators filter its lines by one name.
log = logging.getLogger("portability.delivery.worker")


class DeadLettering:
    """Writes the worker's dead letters; the lane driver finishes the records after."""

    def __init__(
        self, producer: AIOKafkaProducer, topics: TopicNames, book: LaneBook, stats: DeliveryStats
    ) -> None:
        self._producer = producer
        self._topics = topics
        self._trackers = book.trackers
        self._stats = stats

    async def record(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes], reason: str
    ) -> None:
        """A record that cannot be read: dead-lettered as it is, its offset done."""
        letter = DeadLetter(
            topic=tp.topic,
            partition=tp.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            reason=reason,
            stage="delivery",
        )
        await self.send(letter)
        tracker = self._trackers.get(tp)
        if tracker is not None:
            tracker.done(record.offset)

    async def give_up(
        self,
        lane: Lane,
        items: list[Item],
        outcome: Outcome,
        failures: int,
        history: tuple[Attempt, ...],
    ) -> None:
        """Dead-letter a lane's head after its last failure, each record as first written."""
        reason = f"{outcome.reason} after {failures} attempt(s): {outcome.body_excerpt[:200]}"
        extra: dict[str, str] = {
            LetterField.ATTEMPTS: str(failures),
            LetterField.HISTORY: json.dumps([attempt.as_json() for attempt in history]),
            LetterField.CONSENT_ID: lane.consent_id,
            LetterField.APP_ID: items[0].app_id,
        }
        for item in items:
            source = self._topics.deliveries if item.delivery else self._topics.notifications
            letter = DeadLetter(
                topic=source,
                partition=item.tp.partition,
                offset=item.offset,
                key=lane.consent_id.encode(),
                value=item.raw,
                reason=reason,
                stage="delivery",
                extra=extra | _where(item),
            )
            await self.send(letter)

    async def send(self, letter: DeadLetter) -> None:
        await self._producer.send_and_wait(
            self._topics.dead_letters, letter.value, key=letter.key, headers=letter.headers()
        )
        self._stats.dead_lettered += 1
        log.error(
            "dead-lettered %s[%d]@%d: %s",
            letter.topic,
            letter.partition,
            letter.offset,
            letter.reason,
            extra={"topic": letter.topic, "partition": letter.partition, "offset": letter.offset},
        )


def _where(item: Item) -> dict[str, str]:
    where: dict[str, str] = {
        LetterField.STORED_AT: f"{item.tp.topic}[{item.tp.partition}]@{item.offset}"
    }
    if item.replayed_from is not None:
        where[LetterField.REPLAYED_FROM] = item.replayed_from.decode(errors="replace")
    return where
