"""The matcher's side of the audience figures: counting activity, applying updates.

Activity on another user's post counts, as figures only, toward that post's creator, whose
user lives on another partition (:mod:`portability.privacy.audience`). The matcher of the
actor's partition counts each account once (its :class:`ActivityLedger`) and sends what changed
to the creator's partition as an audience update; the matcher of that partition applies the
update to its :class:`AudienceFigures` and sends the creator's consents a delta of each figure
the policy releases. Both the ledger and the figures are per partition and go into the
partition's checkpoint with its sequences.
"""

from __future__ import annotations

import asyncio
import functools

from aiokafka import ConsumerRecord

from portability.matching.consent_index import ConsentIndex
from portability.matching.output import MatcherOutput, Outgoing
from portability.matching.stats import MatcherStats
from portability.privacy import (
    ActivityLedger,
    AudienceFigures,
    PrivacyPolicy,
    Release,
    figures_change,
)
from portability.wire.codec import AvroCodec
from portability.wire.errors import WireFormatError
from portability.wire.records import (
    AccountChange,
    AudienceCheckpoint,
    CountedActivity,
    MatcherCheckpoint,
    to_millis,
)
from portability.wire.schemas import SchemaName
from portability.wire.topics import partition_for_user

__all__ = ["AudienceBook"]


class AudienceBook:
    """The audience figures and activity ledgers of the partitions a matcher holds.

    Attributes:
        policy: The privacy policy in force; the matcher sets it between batches.
    """

    def __init__(
        self,
        codec: AvroCodec,
        output: MatcherOutput,
        partitions: int,
        stats: MatcherStats,
        policy: PrivacyPolicy,
    ) -> None:
        self._codec = codec
        self._output = output
        self._partitions = partitions
        self._stats = stats
        self.policy = policy
        self._figures: dict[int, AudienceFigures] = {}
        # The actor side of the figures, per source partition: which of its users' activity
        # records count, so that an account is counted once (see count_activity).
        self._ledgers: dict[int, ActivityLedger] = {}

    def figures(self, partition: int) -> AudienceFigures | None:
        """The audience figures of a held partition (for inspection and tests)."""
        return self._figures.get(partition)

    def count_activity(
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
        entry = ledger.apply(self.policy, change, record_offset)
        if entry is not None:
            destination = _partition_of(entry["post_owner_id"], self._partitions)
            outgoing.setdefault(destination, []).append(entry)

    async def apply_update(
        self,
        record: ConsumerRecord[bytes, bytes],
        index: ConsentIndex,
        sequences: dict[str, int],
    ) -> list[asyncio.Future[object]]:
        """Count an audience update's entries; send creators the figures it changed."""
        try:
            change: AccountChange = await self._codec.decode_fetching(
                SchemaName.ACCOUNT_CHANGE, record.value
            )
        except WireFormatError as error:
            return [await self._output.dead_letter(record, str(error))]
        update = change.get("audience")
        if update is None:
            missing = "an audience update (by its header) without its entries"
            return [await self._output.dead_letter(record, missing)]
        figures = self._figures.setdefault(record.partition, AudienceFigures())
        duplicates = figures.duplicates
        releases = figures.apply(self.policy, update["source_partition"], update["entries"])
        self._stats.audience_duplicates += figures.duplicates - duplicates
        self._stats.audience_updates_applied += 1
        for release in releases:
            self._emit_figures(release, change["change_id"], record.offset, index, sequences)
        return []  # the figures go with the batch's other deltas (MatcherOutput.flush)

    def _emit_figures(
        self,
        release: Release,
        update_id: str,
        update_offset: int,
        index: ConsentIndex,
        sequences: dict[str, int],
    ) -> None:
        consents = index.get(release.post_owner_id.encode())
        if consents is None:
            return
        change = figures_change(release, update_id)
        occurred_ms = to_millis(change["occurred_at"])
        matched = [c for c in consents if c.covers(change["category"], occurred_ms)]
        if matched:
            self._stats.audience_deltas += self._output.emit(
                change, self.policy.version, update_offset, matched, sequences
            )

    def checkpoint(
        self, partition: int
    ) -> tuple[AudienceCheckpoint | None, list[CountedActivity] | None]:
        """The partition's figures and ledger as its checkpoint carries them (None if none)."""
        figures = self._figures.get(partition)
        ledger = self._ledgers.get(partition)
        return (
            None if figures is None else figures.checkpoint(),
            None if ledger is None else ledger.checkpoint(),
        )

    def restore(self, partition: int, checkpoint: MatcherCheckpoint | None) -> None:
        """Take the partition's figures and ledger from its checkpoint; none without one."""
        if checkpoint is None:
            self.forget(partition)
            return
        self._figures[partition] = AudienceFigures.restore(checkpoint.get("audience"))
        self._ledgers[partition] = ActivityLedger.restore(checkpoint.get("counted_activity"))

    def forget(self, partition: int) -> None:
        """Drop a partition no longer held (or held afresh, without a checkpoint)."""
        self._figures.pop(partition, None)
        self._ledgers.pop(partition, None)


@functools.lru_cache(maxsize=65_536)
def _partition_of(user_id: str, partitions: int) -> int:
    """A creator's partition; cached, as creators recur and murmur2 is pure Python here."""
    return partition_for_user(user_id, partitions)
