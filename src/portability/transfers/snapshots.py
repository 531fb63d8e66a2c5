"""Snapshots of ongoing consents: the user's current records, paged, ahead of the deltas.

How the hand-over is made exact (nothing missed, nothing doubled):

1. The matcher matches a consent with a snapshot from the moment it holds it, whatever the
   change's timestamp (see :meth:`~portability.matching.consent_index.ActiveConsent.covers`),
   and stamps each delta with the consent's snapshot epoch and the change's source offset.
2. Here, before reading the view, the builder waits until the matcher's consumer group has
   committed the ``consents`` partition past the consent's new state: from then on every
   change at or after the matcher's committed ``account.changes`` offset ``M`` is a delta.
3. It waits until the view has applied the partition at least up to ``M`` (and up to the
   end of the partition when it started), and reads the snapshot at the view's position
   ``Y >= M``: every change before ``Y`` is in the snapshot.
4. The delivery worker holds the consent's deltas of this epoch until the snapshot's last
   page is delivered, then drops those whose source offset is below ``Y`` (the snapshot has
   them) and delivers the rest, which are exactly the changes from ``Y`` on.

Pages are ``portability.snapshot`` notifications on the ``notifications`` topic, in the
partition of the consent's deliveries, so they join the consent's delivery lane. Each holds
at most ``snapshot_page_max_records`` records and about ``delivery_max_batch_bytes``; the
last is flagged (a snapshot of nothing is one empty last page). Records are the archive's
records (:mod:`portability.transfers.archive`), shaped by the same privacy policy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer, TopicPartition

from portability.broker.inspector import Inspector
from portability.consent.transfer_requests import SnapshotFacts, TransferStore, TransferView
from portability.privacy import PrivacyPolicy, current_policy
from portability.runtime import Runtime
from portability.transfers.archive import shipped_record_json
from portability.transfers.errors import TransfersError
from portability.transfers.state import StateView
from portability.transfers.store import Snapshot
from portability.wire.notifications import SnapshotPage, snapshot_page
from portability.wire.schemas import SchemaName
from portability.wire.topics import partition_for_consent

__all__ = ["SnapshotNotReadyError", "SnapshotPublisher"]

log = logging.getLogger(__name__)

_POLL_S = 0.1


class SnapshotNotReadyError(TransfersError):
    """The snapshot cannot be taken yet (the matcher has not caught up); it is retried."""

    retriable = True


class SnapshotPublisher:
    """Takes and publishes snapshots for one builder; ``close`` when done."""

    def __init__(
        self, runtime: Runtime, store: TransferStore, view: StateView, wait_s: float = 60.0
    ) -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        self._store = store
        self._view = view
        self._wait_s = wait_s
        self._producer: AIOKafkaProducer | None = None

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, transfer: TransferView) -> SnapshotFacts:
        """Take the snapshot of ``transfer`` and publish its pages; the facts to record.

        Raises:
            SnapshotNotReadyError: The matcher did not take the consent's new state in time.
            TransfersError, TimeoutError: The view is not where it must be.
            BrokerError, KafkaError: Kafka failed.
        """
        partition = self._view.partition_of(transfer.user_id)
        matcher_at = await self._matcher_position(transfer, partition)
        target = max(matcher_at, await self._view.source_end(partition))
        await self._view.wait_applied(partition, target, self._wait_s)
        policy = current_policy(self._settings)
        with self._view.snapshot(transfer.user_id, transfer.categories) as snapshot:
            return await self._send_pages(transfer, snapshot, policy)

    async def _matcher_position(self, transfer: TransferView, partition: int) -> int:
        """The matcher's committed ``account.changes`` offset once it holds the new state."""
        deadline = time.monotonic() + self._wait_s
        while not await asyncio.to_thread(self._store.consent_published, transfer.consent_id):
            if time.monotonic() > deadline:
                raise SnapshotNotReadyError(
                    f"the outbox relay has not published consent {transfer.consent_id}'s "
                    f"state within {self._wait_s:g} s: is the relay running?"
                )
            await asyncio.sleep(_POLL_S)
        topics = self._runtime.topics
        consents = TopicPartition(topics.consents, partition)
        changes = TopicPartition(topics.account_changes, partition)
        group = self._settings.matcher_group
        async with Inspector(self._runtime.kafka.bootstrap) as inspector:
            consents_end = (await inspector.read({consents: None}))[consents].end
            while True:  # bounded by the deadline
                committed = await inspector.committed(group, [consents, changes])
                if (committed[consents] or 0) >= consents_end:
                    return committed[changes] or 0
                if time.monotonic() > deadline:
                    raise SnapshotNotReadyError(
                        f"matcher group {group} has not read {consents.topic}[{partition}] "
                        f"up to offset {consents_end} (consent {transfer.consent_id}'s new "
                        f"state) within {self._wait_s:g} s: is the matcher running?"
                    )
                await asyncio.sleep(_POLL_S)

    async def _send_pages(
        self, transfer: TransferView, snapshot: Snapshot, policy: PrivacyPolicy
    ) -> SnapshotFacts:
        producer = await self._started_producer()
        epoch = transfer.snapshot_epoch or 0
        partition, position = snapshot.position.partition, snapshot.position.offset
        destination = partition_for_consent(transfer.consent_id, self._settings.partitions)
        taken_at = datetime.now(UTC)
        pages = _pages(
            snapshot,
            policy,
            self._settings.snapshot_page_max_records,
            self._settings.delivery_max_batch_bytes,
        )
        # One page of look-ahead: a page is sent once it is known whether it is the last.
        current: tuple[bytes, int] | None = await asyncio.to_thread(next, pages)
        number, total, last_offset = 0, 0, -1
        while current is not None:
            following = await asyncio.to_thread(next, pages, None)
            number += 1
            body, count = current
            total += count
            where = SnapshotPage(
                transfer.transfer_id, epoch, number, following is None, partition, position
            )
            record = snapshot_page(
                consent_id=transfer.consent_id,
                app_id=transfer.app_id,
                user_id=transfer.user_id,
                page=where,
                categories=transfer.categories,
                policy_version=policy.version,
                records=body,
                record_count=count,
                taken_at=taken_at,
            )
            value = self._runtime.codec.encode(SchemaName.NOTIFICATION, dict(record))
            sent = await producer.send_and_wait(
                self._runtime.topics.notifications,
                value,
                key=transfer.consent_id.encode(),
                partition=destination,
            )
            last_offset = sent.offset
            current = following
        log.info(
            "snapshot %s of consent %s (epoch %d): %d records in %d pages, hands over at %s[%d]@%d",
            transfer.transfer_id,
            transfer.consent_id,
            epoch,
            total,
            number,
            self._runtime.topics.account_changes,
            partition,
            position,
            extra={"transfer_id": transfer.transfer_id, "consent_id": transfer.consent_id},
        )
        return SnapshotFacts(
            position=position,
            partition=partition,
            last_page_offset=last_offset,
            record_count=total,
            pages=number,
            policy_version=policy.version,
        )

    async def _started_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = self._runtime.kafka.producer("portability-snapshots")
            await producer.start()
            self._producer = producer
        return self._producer


def _pages(
    snapshot: Snapshot, policy: PrivacyPolicy, max_records: int, max_bytes: int
) -> Iterator[tuple[bytes, int]]:
    """The snapshot's records as JSON arrays of at most ``max_records`` and ~``max_bytes``.

    Streams: one page in memory at a time. Yields at least one (possibly empty) page.
    """
    texts: list[bytes] = []
    size = 0
    for category in snapshot.categories:
        for record in snapshot.records(category):
            text = shipped_record_json(record, policy, snapshot.categories)
            if text is None:
                continue
            encoded = text.encode()
            if texts and (len(texts) >= max_records or size + len(encoded) > max_bytes):
                yield b"[" + b",".join(texts) + b"]", len(texts)
                texts, size = [], 0
            texts.append(encoded)
            size += len(encoded) + 1
    yield b"[" + b",".join(texts) + b"]", len(texts)
