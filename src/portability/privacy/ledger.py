"""The actor's side of audience figures: an account counts once, however often it acted.

A post's ``share_count`` and ``view_count`` say how many *accounts* shared and viewed it,
and a figure is released only while at least ``min_group_size`` accounts stand behind it.
The creator's partition (:class:`portability.privacy.audience.AudienceFigures`) only sums
the entries it receives, and the entries must not say who acted. So the counting of accounts
happens where an actor's activity lives: in the actor's partition, whose matcher sees every
activity change of the actor, in order.

There, an :class:`ActivityLedger` keeps, per (actor, post owner, post, kind), the ids of the
actor's live activity records that count. An entry +1 leaves only when that set goes from
empty to not empty (the actor's first counted view of the post), -1 only when it becomes
empty (the last one removed). Why a set of record ids rather than a number:

* **Idempotent.** Re-upserting a record (an edit), or reading a change again, adds an id
  that is already there: nothing is sent twice.
* **Edits follow the rules.** A record edited under settings that no longer count it (the
  account turned private) leaves the set, and the account stops counting if it was its last.
* **Removals are exact.** A removal takes out exactly the record it names; a removal of a
  record that never counted changes nothing.

The ledger is part of the matcher's checkpoint of the source partition, written with the
sequences at the same offset: a batch matched again after a crash sees the ledger as it was
before that batch, so it sends the same entries at the same source offsets, and the creator's
partition skips them as duplicates. Empty sets are never kept, so the checkpoint holds only
accounts that count. An activity record's kind, post and post owner never change (the
platform makes a new record for activity on another post), so a record id is looked for only
under the post its change names.
"""

from __future__ import annotations

from datetime import datetime

from portability.privacy.engine import contribution
from portability.privacy.model import PrivacyPolicy
from portability.wire.records import AccountChange, AudienceEntry, CountedActivity

__all__ = ["ActivityLedger"]

# (actor, post owner, post id, kind)
_Key = tuple[str, str, str, str]


class ActivityLedger:
    """Which live activity records of one partition's users count toward others' figures."""

    def __init__(self) -> None:
        self._live: dict[_Key, set[str]] = {}

    def __len__(self) -> int:
        """How many (actor, post, kind) currently count: one per account and figure."""
        return len(self._live)

    def counted(self, actor_id: str, post_owner_id: str, post_id: str, kind: str) -> frozenset[str]:
        """The actor's live records counted toward the post's ``kind`` figure."""
        return frozenset(self._live.get((actor_id, post_owner_id, post_id, kind), ()))

    def apply(
        self, policy: PrivacyPolicy, change: AccountChange, source_offset: int
    ) -> AudienceEntry | None:
        """Take ``change`` (of one of the partition's users) into account.

        Returns:
            The entry to send to the post's creator's partition: +1 when the actor starts
            counting toward a figure, -1 when it stops; None when no figure changes (a repeat,
            an edit, a record that does not count, or anything but activity on another's post).
        """
        found = contribution(policy, change)
        if found is None:
            return None
        key = (change["user_id"], found.post_owner_id, found.post_id, found.kind)
        records = self._live.get(key)
        record_id = change["record_id"]
        if found.counts:
            if records is not None:
                records.add(record_id)  # a repeat or an edit: the actor already counts
                return None
            self._live[key] = {record_id}
            delta = 1
        else:
            if records is None or record_id not in records:
                return None  # never counted: its removal changes nothing
            records.discard(record_id)
            if records:
                return None  # the actor still counts through another record
            del self._live[key]
            delta = -1
        return _entry(key, delta, source_offset, change["occurred_at"])

    def checkpoint(self) -> list[CountedActivity] | None:
        """The state for the matcher's checkpoint; None when nobody counts."""
        if not self._live:
            return None
        return [
            {
                "actor_id": actor,
                "post_owner_id": owner,
                "post_id": post_id,
                "kind": kind,
                # Sorted so that the same state always writes the same bytes.
                "record_ids": sorted(records),
            }
            for (actor, owner, post_id, kind), records in self._live.items()
        ]

    @classmethod
    def restore(cls, checkpoint: list[CountedActivity] | None) -> ActivityLedger:
        """The state a checkpoint holds (empty for None, as from a writer that predates it)."""
        ledger = cls()
        for item in checkpoint or ():
            if item["record_ids"]:
                key = (item["actor_id"], item["post_owner_id"], item["post_id"], item["kind"])
                ledger._live[key] = set(item["record_ids"])
        return ledger


def _entry(key: _Key, delta: int, source_offset: int, occurred_at: datetime) -> AudienceEntry:
    # The actor (key[0]) stays here: the entry says which figure changed, never whose doing.
    _actor, owner, post_id, kind = key
    return {
        "post_owner_id": owner,
        "post_id": post_id,
        "kind": kind,
        "delta": delta,
        "source_offset": source_offset,
        "occurred_at": occurred_at,
    }
