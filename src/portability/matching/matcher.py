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

This module decides, record by record; the rest of the role sits beside it:
:mod:`~portability.matching.output` sends what it decides (deltas, audience updates, dead
letters), :mod:`~portability.matching.audience` keeps the audience figures and activity
ledgers, and :mod:`~portability.matching.partitions` sets up, checkpoints and drops the
partitions it holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from portability.broker import stop_consumer
from portability.matching.audience import AudienceBook
from portability.matching.change_reader import change_reader
from portability.matching.checkpoints import CheckpointStore
from portability.matching.consent_index import ConsentIndex
from portability.matching.output import MatcherOutput, Outgoing
from portability.matching.partitions import HeldPartitions, RecentChanges, Records
from portability.matching.stats import MatcherStats
from portability.privacy import (
    AudienceFigures,
    PolicySource,
    PrivacyPolicy,
    audience_marker,
    for_subject,
    policy_source,
)
from portability.privacy.audience import UPDATE_MARKER
from portability.runtime import Runtime
from portability.wire.errors import WireFormatError
from portability.wire.ingress import Door, Fault, Rejection
from portability.wire.records import AccountChange, ConsentRecord, to_millis
from portability.wire.schemas import SchemaName

__all__ = ["Matcher"]

log = logging.getLogger(__name__)


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
        self._producer: AIOKafkaProducer = runtime.kafka.producer(client_id, linger_ms=0)
        self._checkpoints = CheckpointStore(
            runtime.topics.matcher_checkpoints,
            runtime.codec,
            runtime.kafka.reader(f"{client_id}-checkpoints"),
        )
        self._lock = asyncio.Lock()  # a batch and a rebalance never interleave
        self._stopping = asyncio.Event()
        self.stats = MatcherStats()
        self._counted_kinds = _kinds_as_header_values(self._policy)
        self._output = MatcherOutput(
            self._producer, runtime.codec, runtime.topics, self._partitions, self.stats
        )
        self._audience = AudienceBook(
            runtime.codec, self._output, self._partitions, self.stats, self._policy
        )
        self._held = HeldPartitions(
            self._consumer,
            self._producer,
            runtime.topics,
            self._checkpoints,
            self._audience,
            self._lock,
            self._stopping,
        )
        # The held partitions' dicts themselves (never replaced), and the sends, bound once:
        # the per-record loop reaches them without a further attribute lookup.
        self._indexes = self._held.indexes
        self._sequences = self._held.sequences
        self._recent = self._held.recent
        self._emit = self._output.emit
        self._dead_letter = self._output.dead_letter
        self._count_activity = self._audience.count_activity
        self._door = Door(runtime.codec, self._partitions, runtime.settings.ingress_window())
        self._read_change = change_reader(runtime.codec)

    async def start(self) -> None:
        await self._producer.start()
        await self._checkpoints.start()
        await self._consumer.start()
        self._consumer.subscribe(
            [self._topics.account_changes, self._topics.consents], listener=self._held.listener()
        )

    async def stop(self) -> None:
        self._stopping.set()
        async with self._lock:
            pass  # a batch in progress ends first: it still needs the producer
        # Not under the lock: stopping the consumer waits for a rebalance in progress, whose
        # listener takes the lock (held here, that hung the process on SIGTERM for good).
        await stop_consumer(self._consumer)  # a broker gone mid-fetch must not abort the stop
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
        return bool(self._indexes) and not self._held.loading

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
        return self._audience.figures(partition)

    def _refresh_policy(self) -> None:
        """Take a new policy version into force between batches, if its file has one."""
        policy = self._policy_source.poll()
        if policy is not self._policy:
            self._policy = policy
            self._audience.policy = policy
            self._counted_kinds = _kinds_as_header_values(policy)
            self.stats.policy_reloads += 1

    async def process(self, batch: Records) -> None:
        """Match one batch, then checkpoint and commit it."""
        self._refresh_policy()
        self._door.expire_unknown()
        batch = self._held.current(batch)
        if not batch:
            await self._held.resume_loaded()
            return
        started = time.perf_counter()
        consent_batch = {tp: r for tp, r in batch.items() if tp.topic == self._topics.consents}
        change_batch = {tp: r for tp, r in batch.items() if tp.topic != self._topics.consents}
        pending = [*await self._apply_consents(consent_batch)]
        pending += await self._match_changes(change_batch)
        pending += await self._output.flush()
        await asyncio.gather(*pending)
        await asyncio.gather(
            *[await self._held.checkpoint(tp, r) for tp, r in change_batch.items()]
        )
        await self._commit({tp: records[-1].offset + 1 for tp, records in batch.items()})
        self.stats.batches += 1
        self.stats.last_batch_seconds = time.perf_counter() - started
        await self._held.resume_loaded()

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
                    consent: ConsentRecord = await self._codec.decode_fetching(
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
            consents_of = index.lookup
            no_consent = 0
            for record in records:
                # Only audience hints and updates carry headers: one cheap test per record.
                if record.headers:
                    pending += await self._marked(record, index, sequences, outgoing)
                    continue
                # No coroutine per record: the door is awaited only for a schema id it has
                # not seen.
                rejection = check(record)
                if rejection is not None:
                    if rejection is Door.UNRESOLVED:
                        rejection = await self._door.verdict(record)
                    if rejection is not None:
                        pending.append(await self._reject(record, rejection))
                        continue
                consents = consents_of(record.key)
                if consents is None:
                    no_consent += 1  # counted once per batch: this is the hottest line
                    continue
                await self._match_one(record, consents, sequences, outgoing)
            self.stats.dropped["no_consent"] += no_consent
            pending += await self._output.send_audience(tp.partition, outgoing)
            # The partition's deltas go now (a consent's are all of its user's partition),
            # and the producer sends them at once: the broker acknowledges them while the
            # matcher matches the next partition, instead of all of them after the last.
            pending += await self._output.flush()
            await asyncio.sleep(0)
        return pending

    async def _marked(
        self,
        record: ConsumerRecord[bytes, bytes],
        index: ConsentIndex,
        sequences: dict[str, int],
        outgoing: Outgoing,
    ) -> list[asyncio.Future[object]]:
        """A record with headers: by its audience header (if any), an update to apply (the
        matcher's own, past the door), activity to count, or a change as any other."""
        marker = audience_marker(record.headers)
        if marker != UPDATE_MARKER:
            rejection = await self._door.verdict(record)
            if rejection is not None:
                return [await self._reject(record, rejection)]
        if marker is not None:
            return await self._audience_record(record, marker, index, sequences, outgoing)
        consents = index.get(record.key)
        if consents is None:
            self.stats.dropped["no_consent"] += 1
            return []
        await self._match_one(record, consents, sequences, outgoing)
        return []

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
    ) -> None:
        change = await self._decode_checked(record)
        if change is None:
            return
        recent = self._recent.get(record.partition)
        if recent is None:
            recent = self._recent[record.partition] = RecentChanges()
        if recent.seen_before(change["change_id"]):
            self.stats.dropped["duplicate_change"] += 1  # nor counted toward figures again
            return
        # Decoded anyway: its activity counts toward the creator's figures even when the
        # producer forgot the audience header.
        self._count_activity(change, record.offset, record.partition, outgoing)
        self.stats.changes_decoded += 1
        self._deliver(change, record.offset, consents, sequences)

    async def _decode_checked(self, record: ConsumerRecord[bytes, bytes]) -> AccountChange | None:
        """The change ``record`` carries, or None if its body breaks the contract (refused)."""
        change = self._read_change(record.value)  # None: not by the fast path (see there)
        if change is None:
            try:
                change = await self._codec.decode_fetching(SchemaName.ACCOUNT_CHANGE, record.value)
            except WireFormatError as error:
                self._refuse(record, Rejection(Fault.UNDECODABLE, str(error)))
                return None
        rejection = self._door.body_fault(record, change)
        if rejection is not None:
            self._refuse(record, rejection)
            return None
        return change

    def _deliver(
        self,
        change: AccountChange,
        source_offset: int,
        consents: Sequence[Any],
        sequences: dict[str, int],
    ) -> None:
        """Emit ``change`` of the consents' user, as the policy shapes it, to those it covers
        (sent with the batch's other deltas, before it is checkpointed: see :meth:`process`)."""
        occurred_ms = to_millis(change["occurred_at"])
        matched = [c for c in consents if c.covers(change["category"], occurred_ms)]
        if not matched:
            self.stats.dropped["not_granted"] += 1
            return
        shaped = for_subject(self._policy, change, tagged=True)
        if shaped is None:
            self.stats.dropped["withheld"] += 1
            return
        self._emit(shaped, self._policy.version, source_offset, matched, sequences)
        self.stats.changes_matched += 1

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
            return await self._audience.apply_update(record, index, sequences)
        consents = index.get(record.key)
        if consents is None and marker not in self._counted_kinds:
            self.stats.dropped["no_consent"] += 1
            return []  # no consent of the actor, and a kind the policy does not count
        if consents is not None:
            await self._match_one(record, consents, sequences, outgoing)
            return []
        change = await self._decode_checked(record)
        if change is None:
            return []
        self._count_activity(change, record.offset, record.partition, outgoing)
        self.stats.audience_decoded += 1
        self.stats.dropped["no_consent"] += 1
        return []


def _record_fields(record: ConsumerRecord[bytes, bytes]) -> dict[str, object]:
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}


def _kinds_as_header_values(policy: PrivacyPolicy) -> frozenset[bytes]:
    """The activity kinds the policy counts, as the platform's audience header spells them."""
    return frozenset(kind.encode() for kind in policy.audience.kinds)
