"""The matcher: account changes in, deltas for consenting users' apps out.

It consumes ``account.changes`` and ``consents`` in one consumer group. Both topics are
partitioned by user id with the same count, and the range assignor gives a member the same
partition numbers of both, so each instance holds only the consents of its own users.

The hot loop works in batches (``getmany``) and decides on the record key before touching the
value: a change of a user without an active consent is dropped undecoded. Offsets are
committed only after every delta and the checkpoint of the batch are acknowledged.

Every delta leaves through the privacy policy (:mod:`portability.privacy`), whose version it
carries: the file is checked for a new version between batches, so one batch follows one
version. Activity on another user's post also travels, as counts only, to the creator's
partition (an audience update on ``account.changes``, marked by a header; see
:mod:`portability.privacy.audience`), whose figures are checkpointed with the sequences.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError

from portability.matching.checkpoints import CheckpointStore
from portability.matching.consent_index import ConsentIndex
from portability.matching.stats import MatcherStats
from portability.privacy import (
    AUDIENCE_HEADER,
    ActivityLedger,
    AudienceFigures,
    PolicySource,
    PrivacyPolicy,
    Release,
    audience_marker,
    figures_change,
    for_subject,
    policy_source,
    update_change,
)
from portability.privacy.audience import UPDATE_KEY, UPDATE_MARKER
from portability.runtime import Runtime
from portability.webhooks.payload import render_change, render_delta
from portability.wire.dead_letters import DeadLetter
from portability.wire.errors import WireFormatError
from portability.wire.ingress import Door, Fault, Rejection
from portability.wire.records import (
    AccountChange,
    AudienceEntry,
    ConsentRecord,
    DeliveryRecord,
    to_millis,
)
from portability.wire.schemas import SchemaName
from portability.wire.topics import partition_for_consent, partition_for_user

__all__ = ["Matcher", "delta_id"]

log = logging.getLogger(__name__)

Records = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
# Audience entries of one batch of one source partition, per destination partition.
Outgoing = dict[int, list[AudienceEntry]]
_UPDATE_HEADERS = [(AUDIENCE_HEADER, UPDATE_MARKER)]


def delta_id(consent_id: str, change_id: str) -> str:
    """The stable id of the delta of ``change_id`` for ``consent_id``."""
    digest = hashlib.blake2b(f"{consent_id}\n{change_id}".encode(), digest_size=16).hexdigest()
    return f"dlt_{digest}"


class Matcher:
    """One matcher instance; ``start``, then ``run`` until ``stop``."""

    def __init__(self, runtime: Runtime, client_id: str = "portability-matcher") -> None:
        # First, so that a matcher with an unusable policy file never starts, nor makes Kafka
        # clients it would leave unclosed. The process's source of the file: with the
        # transfers role beside it (``portability pipeline``) the file is checked, and a new
        # version or a refused edit logged, once.
        self._policy_source: PolicySource = policy_source(runtime.settings)
        self._policy = self._policy_source.policy
        self._runtime = runtime
        self._topics = runtime.topics
        self._partitions = runtime.settings.partitions
        self._codec = runtime.codec
        self._consumer: AIOKafkaConsumer = runtime.kafka.group_consumer(
            runtime.settings.matcher_group, client_id
        )
        self._producer: AIOKafkaProducer = runtime.kafka.producer(client_id)
        self._checkpoints = CheckpointStore(
            runtime.topics.matcher_checkpoints,
            runtime.codec,
            runtime.kafka.reader(f"{client_id}-checkpoints"),
        )
        self._indexes: dict[int, ConsentIndex] = {}
        self._sequences: dict[int, dict[str, int]] = {}
        self._loading: set[int] = set()  # partitions whose consents are still being read
        self._resume_at: dict[int, int | None] = {}  # where a loading partition resumes
        self._lock = asyncio.Lock()  # a batch and a rebalance never interleave
        self._stopping = asyncio.Event()
        self.stats = MatcherStats()
        self._counted_kinds = _kinds_as_header_values(self._policy)
        self._audience: dict[int, AudienceFigures] = {}
        # The actor side of the figures, per source partition: which of its users' activity
        # records count, so that an account is counted once (see _count_activity).
        self._ledgers: dict[int, ActivityLedger] = {}
        self._door = Door(runtime.codec, self._partitions, runtime.settings.ingress_window())

    async def start(self) -> None:
        await self._producer.start()
        await self._checkpoints.start()
        await self._consumer.start()
        self._consumer.subscribe(
            [self._topics.account_changes, self._topics.consents], listener=_Rebalance(self)
        )

    async def stop(self) -> None:
        self._stopping.set()
        async with self._lock:
            pass  # a batch in progress ends first: it still needs the producer
        # Not under the lock: stopping the consumer waits for a rebalance in progress, whose
        # listener takes the lock (held here, that hung the process on SIGTERM for good).
        await self._consumer.stop()
        async with self._lock:
            await self._producer.stop()
            await self._checkpoints.stop()

    async def run(self) -> None:
        """Process batches until :meth:`stop`."""
        while not self._stopping.is_set():
            batch = await self._consumer.getmany(timeout_ms=200)
            async with self._lock:
                if self._stopping.is_set():
                    return
                await self.process(batch)

    @property
    def ready(self) -> bool:
        """True once partitions are assigned and their consents are loaded."""
        return bool(self._indexes) and not self._loading

    @property
    def consents_held(self) -> int:
        return sum(len(index) for index in self._indexes.values())

    @property
    def policy(self) -> PrivacyPolicy:
        """The privacy policy the next batch follows."""
        return self._policy

    @property
    def policy_source(self) -> PolicySource:
        """Where the policy comes from: its file, reloads and refused edits."""
        return self._policy_source

    def audience_figures(self, partition: int) -> AudienceFigures | None:
        """The audience figures of a held partition (for inspection and tests)."""
        return self._audience.get(partition)

    def _refresh_policy(self) -> None:
        """Take a new policy version into force between batches, if its file has one."""
        policy = self._policy_source.poll()
        if policy is not self._policy:
            self._policy = policy
            self._counted_kinds = _kinds_as_header_values(policy)
            self.stats.policy_reloads += 1

    async def process(self, batch: Records) -> None:
        """Match one batch, then checkpoint and commit it."""
        self._refresh_policy()
        self._door.expire_unknown()
        batch = self._current(batch)
        if not batch:
            await self._resume_loaded()
            return
        started = time.perf_counter()
        consent_batch = {tp: r for tp, r in batch.items() if tp.topic == self._topics.consents}
        change_batch = {tp: r for tp, r in batch.items() if tp.topic != self._topics.consents}
        pending = [*await self._apply_consents(consent_batch)]
        pending += await self._match_changes(change_batch)
        await asyncio.gather(*pending)
        await asyncio.gather(*[await self._checkpoint(tp, r) for tp, r in change_batch.items()])
        await self._commit({tp: records[-1].offset + 1 for tp, records in batch.items()})
        self.stats.batches += 1
        self.stats.last_batch_seconds = time.perf_counter() - started
        await self._resume_loaded()

    def _current(self, batch: Records) -> Records:
        """Drop records fetched before a rebalance moved or reset their partition.

        A change may be matched only against the complete consents of its partition: records
        of a partition still re-reading its consents are fetched again after it resumes.
        """
        assigned = self._consumer.assignment()
        return {
            tp: records
            for tp, records in batch.items()
            if tp in assigned
            and (tp.topic == self._topics.consents or tp.partition not in self._loading)
        }

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:
            # The partitions moved to another member mid-batch. Nothing is lost: the new owner
            # resumes from the checkpoint written above, with the same sequences.
            log.warning("matcher commit skipped after a rebalance: %s", error)

    async def _apply_consents(self, batch: Records) -> list[asyncio.Future[object]]:
        dead: list[asyncio.Future[object]] = []
        for tp, records in batch.items():
            index = self._indexes.setdefault(tp.partition, ConsentIndex())
            for record in records:
                try:
                    consent: ConsentRecord = await self._codec.decode_fetching(  # type: ignore[assignment]
                        SchemaName.CONSENT, record.value
                    )
                except WireFormatError as error:
                    dead.append(await self._dead_letter(record, str(error)))
                    continue
                index.apply(consent)
                self.stats.consent_updates += 1
        return dead

    async def _match_changes(self, batch: Records) -> list[asyncio.Future[object]]:
        pending: list[asyncio.Future[object]] = []
        for tp, records in batch.items():
            index = self._indexes.get(tp.partition)
            sequences = self._sequences.setdefault(tp.partition, {})
            self.stats.changes_seen += len(records)
            if index is None:
                continue
            outgoing: Outgoing = {}
            check = self._door.check
            no_consent = 0
            for record in records:
                # Only audience hints and updates carry headers: one cheap test per record.
                marker = audience_marker(record.headers) if record.headers else None
                # The matcher's own updates skip the door. No coroutine per record: the door
                # is awaited only for a schema id it has not seen.
                if marker != UPDATE_MARKER and (rejection := check(record)) is not None:
                    if rejection is Door.UNRESOLVED:
                        rejection = await self._door.verdict(record)
                    if rejection is not None:
                        pending.append(await self._reject(record, rejection))
                        continue
                if marker is not None:
                    pending += await self._audience_record(
                        record, marker, index, sequences, outgoing
                    )
                    continue
                consents = index.get(record.key)
                if consents is None:
                    no_consent += 1  # counted once per batch: this is the hottest line
                    continue
                pending += await self._match_one(record, consents, sequences, outgoing)
            self.stats.dropped["no_consent"] += no_consent
            pending += await self._send_audience(tp.partition, outgoing)
        return pending

    async def _reject(
        self, record: ConsumerRecord[bytes, bytes], rejection: Rejection
    ) -> asyncio.Future[object]:
        """Dead-letter a record that breaks the producer contract at the door."""
        self.stats.dead_lettered_by_fault[rejection.fault] += 1
        return await self._dead_letter(record, rejection.reason, rejection.fault)

    def _refuse(self, record: ConsumerRecord[bytes, bytes], rejection: Rejection) -> None:
        """Never deliver a change whose body breaks the contract; the current-state view,
        which decodes every change, is the stage that dead-letters it (once)."""
        self.stats.refused_by_fault[rejection.fault] += 1
        log.warning(
            "matcher refuses %s[%d]@%d (the state view dead-letters it): %s",
            record.topic,
            record.partition,
            record.offset,
            rejection.detail,
            extra={
                **_record_fields(record),
                "fault": str(rejection.fault),
            },
        )

    async def _match_one(
        self,
        record: ConsumerRecord[bytes, bytes],
        consents: Sequence[Any],
        sequences: dict[str, int],
        outgoing: Outgoing,
    ) -> list[asyncio.Future[object]]:
        change = await self._decode_checked(record)
        if change is None:
            return []
        # Decoded anyway: its activity counts toward the creator's figures even when the
        # producer forgot the audience header.
        self._count_activity(change, record.offset, record.partition, outgoing)
        self.stats.changes_decoded += 1
        return await self._deliver(change, record.offset, consents, sequences)

    async def _decode_checked(self, record: ConsumerRecord[bytes, bytes]) -> AccountChange | None:
        """The change ``record`` carries, or None if its body breaks the contract (refused)."""
        try:
            change: AccountChange = await self._codec.decode_fetching(  # type: ignore[assignment]
                SchemaName.ACCOUNT_CHANGE, record.value
            )
        except WireFormatError as error:
            self._refuse(record, Rejection(Fault.UNDECODABLE, str(error)))
            return None
        rejection = self._door.body_fault(record, change)
        if rejection is not None:
            self._refuse(record, rejection)
            return None
        return change

    async def _deliver(
        self,
        change: AccountChange,
        source_offset: int,
        consents: Sequence[Any],
        sequences: dict[str, int],
    ) -> list[asyncio.Future[object]]:
        """Send ``change`` of the consents' user, as the policy shapes it, to those it covers."""
        occurred_ms = to_millis(change["occurred_at"])
        matched = [c for c in consents if c.covers(change["category"], occurred_ms)]
        if not matched:
            self.stats.dropped["not_granted"] += 1
            return []
        shaped = for_subject(self._policy, change, tagged=True)
        if shaped is None:
            self.stats.dropped["withheld"] += 1
            return []
        sends = await self._emit(shaped, source_offset, matched, sequences)
        self.stats.changes_matched += 1
        return sends

    async def _emit(
        self,
        change: AccountChange,
        source_offset: int,
        matched: Sequence[Any],
        sequences: dict[str, int],
    ) -> list[asyncio.Future[object]]:
        """One delivery per consent in ``matched``, each with the next sequence of its consent.

        ``source_offset`` is the offset in the user's ``account.changes`` partition of the
        record the delta comes from: where a snapshot hands over to the deltas.
        """
        now = datetime.now(UTC)
        version = self._policy.version
        # Rendered here, once per change, so that the delivery worker never decodes the change.
        change_json = render_change(change, version)
        sends: list[asyncio.Future[object]] = []
        for consent in matched:
            sequence = sequences.get(consent.consent_id, 0) + 1
            sequences[consent.consent_id] = sequence
            identity = delta_id(consent.consent_id, change["change_id"])
            delivery: DeliveryRecord = {
                "delta_id": identity,
                "consent_id": consent.consent_id,
                "app_id": consent.app_id,
                "user_id": consent.user_id,
                "sequence": sequence,
                "change": change,
                "matched_at": now,
                "policy_version": version,
                "source_offset": source_offset,
                "snapshot_epoch": consent.snapshot_epoch,
                "rendered": render_delta(identity, sequence, change_json),
            }
            value = self._codec.encode(SchemaName.DELIVERY, dict(delivery))
            sends.append(
                await self._producer.send(
                    self._topics.deliveries,
                    value,
                    key=consent.consent_id.encode(),
                    partition=partition_for_consent(consent.consent_id, self._partitions),
                )
            )
        self.stats.deltas_emitted += len(sends)
        return sends

    async def _audience_record(
        self,
        record: ConsumerRecord[bytes, bytes],
        marker: bytes,
        index: ConsentIndex,
        sequences: dict[str, int],
        outgoing: Outgoing,
    ) -> list[asyncio.Future[object]]:
        """A record with the audience header: an update to apply, or activity to count."""
        if marker == UPDATE_MARKER:
            return await self._apply_update(record, index, sequences)
        consents = index.get(record.key)
        if consents is None and marker not in self._counted_kinds:
            self.stats.dropped["no_consent"] += 1
            return []  # no consent of the actor, and a kind the policy does not count
        if consents is not None:
            return await self._match_one(record, consents, sequences, outgoing)
        change = await self._decode_checked(record)
        if change is None:
            return []
        self._count_activity(change, record.offset, record.partition, outgoing)
        self.stats.audience_decoded += 1
        self.stats.dropped["no_consent"] += 1
        return []

    async def _send_audience(
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
            self.stats.audience_entries_sent += len(entries)
        return sends

    async def _apply_update(
        self,
        record: ConsumerRecord[bytes, bytes],
        index: ConsentIndex,
        sequences: dict[str, int],
    ) -> list[asyncio.Future[object]]:
        """Count an audience update's entries; send creators the figures it changed."""
        try:
            change: AccountChange = await self._codec.decode_fetching(  # type: ignore[assignment]
                SchemaName.ACCOUNT_CHANGE, record.value
            )
        except WireFormatError as error:
            return [await self._dead_letter(record, str(error))]
        update = change.get("audience")
        if update is None:
            missing = "an audience update (by its header) without its entries"
            return [await self._dead_letter(record, missing)]
        figures = self._audience.setdefault(record.partition, AudienceFigures())
        duplicates = figures.duplicates
        releases = figures.apply(self._policy, update["source_partition"], update["entries"])
        self.stats.audience_duplicates += figures.duplicates - duplicates
        self.stats.audience_updates_applied += 1
        sends: list[asyncio.Future[object]] = []
        for release in releases:
            sends += await self._send_figures(
                release, change["change_id"], record.offset, index, sequences
            )
        return sends

    async def _send_figures(
        self,
        release: Release,
        update_id: str,
        update_offset: int,
        index: ConsentIndex,
        sequences: dict[str, int],
    ) -> list[asyncio.Future[object]]:
        consents = index.get(release.post_owner_id.encode())
        if consents is None:
            return []
        change = figures_change(release, update_id)
        occurred_ms = to_millis(change["occurred_at"])
        matched = [c for c in consents if c.covers(change["category"], occurred_ms)]
        if not matched:
            return []
        sends = await self._emit(change, update_offset, matched, sequences)
        self.stats.audience_deltas += len(sends)
        return sends

    async def _checkpoint(
        self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]
    ) -> asyncio.Future[object]:
        sequences = self._sequences.setdefault(tp.partition, {})
        figures = self._audience.get(tp.partition)
        ledger = self._ledgers.get(tp.partition)
        # The ledger goes with the same next_offset as the sequences: a batch matched again
        # after a crash starts from the ledger before it, and so sends the same entries.
        return await self._checkpoints.send(
            self._producer,
            tp.partition,
            records[-1].offset + 1,
            dict(sequences),
            None if figures is None else figures.checkpoint(),
            None if ledger is None else ledger.checkpoint(),
        )

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], reason: str, fault: str | None = None
    ) -> asyncio.Future[object]:
        extra = None if fault is None else {"fault": str(fault)}
        letter = DeadLetter.of(record, reason=reason, stage="matcher", extra=extra)
        log.warning(
            "dead-lettering %s[%d]@%d: %s",
            record.topic,
            record.partition,
            record.offset,
            reason,
            extra=letter.log_fields(),
        )
        self.stats.dead_lettered += 1
        ack: asyncio.Future[object] = await self._producer.send(
            self._topics.dead_letters, letter.value, key=letter.key, headers=letter.headers()
        )
        return ack

    async def _resume_loaded(self) -> None:
        """Resume the changes of partitions whose consents are now read to the end."""
        for partition in list(self._loading):
            tp = TopicPartition(self._topics.consents, partition)
            highwater = self._consumer.highwater(tp)
            if highwater is None or await self._consumer.position(tp) < highwater:
                continue
            self._loading.discard(partition)
            changes = TopicPartition(self._topics.account_changes, partition)
            offset = self._resume_at.pop(partition, None)
            if offset is None:
                await self._consumer.seek_to_beginning(changes)
            else:
                self._consumer.seek(changes, offset)
            self._consumer.resume(changes)
            log.info(
                "matcher partition %d ready with %d consents",
                partition,
                len(self._indexes.get(partition, ())),
            )

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Re-read consents and load checkpoints of newly assigned partitions.

        aiokafka may fetch a new assignment before this listener returns, so the change
        partitions are paused and marked loading before the first ``await``; records fetched
        meanwhile are dropped by :meth:`_current`, and each partition is positioned at its
        checkpoint (or committed offset) when it resumes.
        """
        changes = [tp for tp in assigned if tp.topic == self._topics.account_changes]
        consents = [tp for tp in assigned if tp.topic == self._topics.consents]
        self._consumer.pause(*changes)
        self._loading.update(tp.partition for tp in changes)
        for tp in consents:
            self._indexes[tp.partition] = ConsentIndex()
        log.info(
            "matcher assigned %s",
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned)),
        )
        async with self._lock:
            if self._stopping.is_set():
                return  # the consumer is stopping and waits for this listener: nothing to load
            if consents:
                await self._consumer.seek_to_beginning(*consents)
            await self._restore(changes)

    async def _restore(self, changes: list[TopicPartition]) -> None:
        checkpoints = await self._checkpoints.load([tp.partition for tp in changes])
        for tp in changes:
            checkpoint = checkpoints.get(tp.partition)
            if checkpoint is None:
                self._sequences[tp.partition] = {}
                self._audience.pop(tp.partition, None)
                self._ledgers.pop(tp.partition, None)
                self._resume_at[tp.partition] = await self._consumer.committed(tp)
                continue
            self._sequences[tp.partition] = dict(checkpoint["sequences"])
            self._audience[tp.partition] = AudienceFigures.restore(checkpoint.get("audience"))
            self._ledgers[tp.partition] = ActivityLedger.restore(checkpoint.get("counted_activity"))
            self._resume_at[tp.partition] = checkpoint["next_offset"]
            log.info(
                "matcher partition %d resumes at offset %d from its checkpoint",
                tp.partition,
                checkpoint["next_offset"],
            )

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        log.info(
            "matcher revoked %s",
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(revoked)) or "nothing",
        )
        async with self._lock:
            for tp in revoked:
                self._indexes.pop(tp.partition, None)
                self._sequences.pop(tp.partition, None)
                self._audience.pop(tp.partition, None)
                self._ledgers.pop(tp.partition, None)
                self._loading.discard(tp.partition)
                self._resume_at.pop(tp.partition, None)

    def _count_activity(
        self, change: AccountChange, record_offset: int, partition: int, outgoing: Outgoing
    ) -> None:
        """Count ``change`` toward another user's post figures: each account once.

        The partition's ledger knows the actor's other activity, so only an account starting
        or stopping to count toward a figure is appended to ``outgoing`` (for the creator's
        partition), and without the actor. Harmless for any other decoded change of the
        partition (only activity on another user's post counts), and for a change counted
        twice (an activity record counts once).

        Args:
            change: A decoded change of ``partition``, whatever its headers.
            record_offset: Its offset in ``account.changes``.
            partition: Its (the actor's) ``account.changes`` partition.
            outgoing: The batch's audience entries of ``partition``, per destination.
        """
        if change["category"] != "activity":
            return  # the common case on the hot path: skip the ledger lookup
        ledger = self._ledgers.get(partition)
        if ledger is None:
            ledger = self._ledgers[partition] = ActivityLedger()
        entry = ledger.apply(self._policy, change, record_offset)
        if entry is not None:
            destination = _partition_of(entry["post_owner_id"], self._partitions)
            outgoing.setdefault(destination, []).append(entry)


@functools.lru_cache(maxsize=65_536)
def _partition_of(user_id: str, partitions: int) -> int:
    """A creator's partition; cached, as creators recur and murmur2 is pure Python here."""
    return partition_for_user(user_id, partitions)


def _record_fields(record: ConsumerRecord[bytes, bytes]) -> dict[str, object]:
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}


def _kinds_as_header_values(policy: PrivacyPolicy) -> frozenset[bytes]:
    """The activity kinds the policy counts, as the platform's audience header spells them."""
    return frozenset(kind.encode() for kind in policy.audience.kinds)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, matcher: Matcher) -> None:
        self._matcher = matcher

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._matcher.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._matcher.on_assigned(assigned)
