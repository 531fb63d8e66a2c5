"""Everything the matcher produces: deltas, audience updates and dead letters.

The matcher decides (in :mod:`portability.matching.matcher`) and this module sends: a delta
per consent a change matches (a Delivery record on ``deliveries``, keyed and partitioned by
its consent, with the next sequence of that consent), the batch's counted activity toward the
creators' partitions of ``account.changes`` (an audience update, see
:mod:`portability.privacy.audience`), and the records that break the contract to
``dead-letters``. Each send returns the broker's acknowledgement, which the matcher awaits
before it checkpoints and commits the batch. Deltas are many: they wait in the output until
the matcher has matched a source partition's records of its batch, then go in one producer
batch per partition (:meth:`MatcherOutput.flush`), in order within each consent.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord

from portability.broker.batches import batch_sends
from portability.matching.stats import MatcherStats
from portability.privacy import update_change
from portability.privacy.audience import UPDATE_KEY, UPDATE_MARKER
from portability.webhooks.ledger import change_digest_of_rendered, delta_digest
from portability.webhooks.payload import render_change, render_delta
from portability.wire.codec import AvroCodec
from portability.wire.dead_letters import DeadLetter
from portability.wire.headers import AUDIENCE_HEADER, LetterField
from portability.wire.records import AccountChange, AudienceEntry, to_millis
from portability.wire.schemas import SchemaName
from portability.wire.topics import TopicNames, partition_for_consent

__all__ = ["MatcherOutput", "Outgoing", "delta_id"]

log = logging.getLogger(__name__)

# Audience entries of one batch of one source partition, per destination partition.
Outgoing = dict[int, list[AudienceEntry]]
_UPDATE_HEADERS = [(AUDIENCE_HEADER, UPDATE_MARKER)]
_PLACES_LIMIT = 1_000_000  # consents remembered with their partition and key


def delta_id(consent_id: str, change_id: str) -> str:
    """The stable id of the delta of ``change_id`` for ``consent_id``."""
    digest = hashlib.blake2b(f"{consent_id}\n{change_id}".encode(), digest_size=16).hexdigest()
    return f"dlt_{digest}"


class MatcherOutput:
    """The matcher's sends through its producer, counted in its stats."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        codec: AvroCodec,
        topics: TopicNames,
        partitions: int,
        stats: MatcherStats,
    ) -> None:
        self._producer = producer
        self._codec = codec
        self._topics = topics
        self._partitions = partitions
        self._stats = stats
        self._deltas: list[tuple[int, bytes, bytes]] = []  # (partition, key, value) to flush
        # consent id -> its partition of deliveries and its key (murmur2 is pure Python here)
        self._places: dict[str, tuple[int, bytes]] = {}

    def emit(
        self,
        change: AccountChange,
        version: str,
        source_offset: int,
        matched: Sequence[Any],
        sequences: dict[str, int],
    ) -> int:
        """One delivery per consent in ``matched``, each with the next sequence of its consent,
        waiting for :meth:`flush`; returns how many.

        ``version`` is the version of the privacy policy that shaped ``change``.
        ``source_offset`` is the offset in the user's ``account.changes`` partition of the
        record the delta comes from: where a snapshot hands over to the deltas.
        """
        matched_at_ms = to_millis(datetime.now(UTC))
        # Rendered and encoded here, once per change: the delivery worker never decodes the
        # change, and each consent's delivery is its own fields and these bytes.
        change_json = render_change(change, version)
        change_bytes = self._codec.encode_body(SchemaName.ACCOUNT_CHANGE, change)
        digest = change_digest_of_rendered(change_json)  # each consent's ledger chains it
        encode = self._codec.delivery_encoder.encode
        deltas = self._deltas
        places = self._places
        for consent in matched:
            consent_id = consent.consent_id
            sequence = sequences.get(consent_id, 0) + 1
            sequences[consent_id] = sequence
            identity = delta_id(consent_id, change["change_id"])
            value = encode(
                delta_id=identity,
                consent_id=consent_id,
                app_id=consent.app_id,
                user_id=consent.user_id,
                sequence=sequence,
                matched_at_ms=matched_at_ms,
                policy_version=version,
                source_offset=source_offset,
                snapshot_epoch=consent.snapshot_epoch,
                rendered=render_delta(identity, sequence, change_json),
                ledger_digest=delta_digest(identity, sequence, digest),
                change=change_bytes,
            )
            place = places.get(consent_id)
            if place is None:
                place = self._place(consent_id)
            deltas.append((place[0], place[1], value))
        self._stats.deltas_emitted += len(matched)
        return len(matched)

    def _place(self, consent_id: str) -> tuple[int, bytes]:
        """A consent's partition of ``deliveries`` and its key, remembered."""
        if len(self._places) >= _PLACES_LIMIT:
            self._places.clear()  # consents recur; a rare rebuild beats an LRU per delta
        place = self._places[consent_id] = (
            partition_for_consent(consent_id, self._partitions),
            consent_id.encode(),
        )
        return place

    async def flush(self) -> list[asyncio.Future[Any]]:
        """Produce the deltas :meth:`emit` made since the last flush; their acks' futures."""
        deltas, self._deltas = self._deltas, []
        if not deltas:
            return []
        return await batch_sends(self._producer, self._topics.deliveries, deltas)

    async def send_audience(
        self, source_partition: int, outgoing: Outgoing
    ) -> list[asyncio.Future[object]]:
        """Send one batch's counted activity of a source partition to the creators' partitions."""
        sends: list[asyncio.Future[object]] = []
        for destination, entries in outgoing.items():
            value = self._codec.encode(
                SchemaName.ACCOUNT_CHANGE, dict(update_change(source_partition, entries))
            )
            sends.append(
                await self._producer.send(
                    self._topics.account_changes,
                    value,
                    key=UPDATE_KEY,
                    partition=destination,
                    headers=_UPDATE_HEADERS,
                )
            )
            self._stats.audience_entries_sent += len(entries)
        return sends

    async def dead_letter(
        self, record: ConsumerRecord[bytes, bytes], reason: str, fault: str | None = None
    ) -> asyncio.Future[object]:
        extra: dict[str, str] | None = None if fault is None else {LetterField.FAULT: str(fault)}
        letter = DeadLetter.of(record, reason=reason, stage="matcher", extra=extra)
        log.warning(
            "dead-lettering %s[%d]@%d: %s",
            record.topic,
            record.partition,
            record.offset,
            reason,
            extra=letter.log_fields(),
        )
        self._stats.dead_lettered += 1
        ack: asyncio.Future[object] = await self._producer.send(
            self._topics.dead_letters, letter.value, key=letter.key, headers=letter.headers()
        )
        return ack
