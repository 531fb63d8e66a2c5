"""Audience figures: other people's activity on a creator's posts, reaching the creator only
as counts.

A figure says how many *accounts* (other than the creator) shared or viewed the post, not how
many shares or views: an account that viewed a post three times counts once, and stops
counting only when its last view is removed.

A share or view is a change of the *sharer's* account, in the sharer's partition; the creator's
consents are held by whichever matcher owns the creator's partition. So the matcher that sees
the activity decides there whether an *account* starts or stops counting (its
:class:`~portability.privacy.ledger.ActivityLedger` knows the actor's other activity on the
post), and sends an **audience update** onto ``account.changes`` itself, in the creator's
partition: one record per batch and destination partition, listing each account that starts
or stops counting as an entry (creator, post, kind, +1 or -1, its source partition and offset)
and nothing about who it is. The owner of that partition reads it in order with the creator's
own changes, sums each post's entries, and sends each consent of the creator granting ``post``
one upsert of the record ``<post_id>/audience`` per update that changes a released figure:
coalesced per update, never one delta per share.

Why this way:

* **One ordered input.** Sequences are numbered per consent from one partition's order; an
  update in ``account.changes`` is numbered like any change, so after a crash the same update
  yields the same deltas with the same sequences.
* **Counts survive crashes exactly.** The figures of a partition, and its users' ledger (the
  actor side), are part of the matcher's checkpoint (``matcher.checkpoints``), written with the
  sequences at the same offset.
* **At least once upstream, counted once.** A sharer's partition matched again after a crash
  resumes with the ledger of its checkpoint, so it sends the same entries again; each
  partition keeps, per source partition, the highest source offset applied, and entries at
  or below it are skipped. Entries from one source partition
  reach a destination partition in source order (one producer per source partition at a
  time, ordered per destination partition).
* **Cheap on the hot path.** The platform marks activity on another user's post with the
  header ``portability.audience: <kind>``, and the matcher marks its updates with
  ``portability.audience: update``; records without the header are never decoded for this
  (a consenting user's change, decoded anyway, is counted whatever its headers).
* **Harmless to others.** An update is a change with an empty ``user_id`` deleting the reserved
  record ``audience`` of category ``post``: a consumer that does not know updates (the
  current-state view) does nothing with it.

A figure is released while at least ``min_group_size`` accounts count toward it; below, it is
null (withheld), and a post whose figures were never released yields no delta at all. The
accounts are those with at least one live counted activity of the kind on the post: made on
the platform, by a public account (unless the policy counts private ones), for a share by a
user showing their shares (unless the policy counts hidden ones), as the settings were when
the activity was made.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from portability.privacy.model import FIGURE_KINDS, PrivacyPolicy
from portability.wire.headers import AUDIENCE_HEADER
from portability.wire.records import (
    AccountChange,
    AudienceCheckpoint,
    AudienceEntry,
    PostFigures,
)

__all__ = [
    "AUDIENCE_RECORD_TYPE",
    "UPDATE_MARKER",
    "AudienceFigures",
    "Release",
    "audience_marker",
    "audience_record_id",
    "figures_change",
    "platform_headers",
    "update_change",
]

UPDATE_MARKER: Final = b"update"
AUDIENCE_RECORD_TYPE: Final = "portability.v1.PostAudience"
# The reserved record id an audience update "deletes" (nothing has it).
UPDATE_RECORD_ID: Final = "audience"
UPDATE_KEY: Final = b"audience"
_AUDIENCE_SUFFIX: Final = "/audience"

Headers = Sequence[tuple[str, bytes]]


def audience_marker(headers: Headers) -> bytes | None:
    """The value of the audience header (an activity kind, or ``update``), if present."""
    for key, value in headers:
        if key == AUDIENCE_HEADER:
            return value
    return None


def platform_headers(change: AccountChange) -> list[tuple[str, bytes]]:
    """The headers the platform sets on a change: the audience hint on activity on someone
    else's post (made or removed), so that the matcher decodes it even when the actor has no
    consent. Every other change gets none."""
    if change["category"] != "activity":
        return []
    record = change["record"]
    if record is not None:
        kind, owner = str(record["kind"]), str(record["post_owner_id"])
    else:
        context = change.get("context")
        reference = None if context is None else context["activity"]
        if reference is None:
            return []
        kind, owner = reference["kind"], reference["post_owner_id"]
    if owner == change["user_id"]:
        return []
    return [(AUDIENCE_HEADER, kind.encode())]


def audience_record_id(post_id: str) -> str:
    """The record id of a post's audience figures (category ``post``)."""
    return post_id + _AUDIENCE_SUFFIX


def is_audience_record_id(record_id: str) -> bool:
    """Whether ``record_id`` names a post's audience figures: derived counts, not a record
    of the user's (no snapshot or archive holds them)."""
    return record_id.endswith(_AUDIENCE_SUFFIX)


def update_change(source_partition: int, entries: Sequence[AudienceEntry]) -> AccountChange:
    """The audience update carrying ``entries`` (in source order) to their partition."""
    offsets = ",".join(str(entry["source_offset"]) for entry in entries)
    digest = hashlib.blake2b(
        f"{source_partition}\n{offsets}\n{entries[0]['post_owner_id']}".encode(), digest_size=16
    ).hexdigest()
    return {
        "change_id": f"aud_{digest}",
        "user_id": "",
        "category": "post",
        "operation": "delete",
        "record_id": UPDATE_RECORD_ID,
        "occurred_at": max(entry["occurred_at"] for entry in entries),
        "record": None,
        "context": None,
        "audience": {"source_partition": source_partition, "entries": list(entries)},
    }


@dataclass(frozen=True, slots=True)
class Release:
    """New released figures of one post, to be sent to its creator's consents."""

    post_owner_id: str
    post_id: str
    figures: dict[str, int | None]
    occurred_at: datetime


def figures_change(release: Release, update_change_id: str) -> AccountChange:
    """The change a creator's recipient receives: the post's figures, no one's identity.

    Its id derives from the update and the post, so the same update always gives the same
    change (and so the same delta id).
    """
    digest = hashlib.blake2b(
        f"{update_change_id}\n{release.post_id}".encode(), digest_size=16
    ).hexdigest()
    record: dict[str, Any] = {"-type": AUDIENCE_RECORD_TYPE, "post_id": release.post_id}
    for kind in FIGURE_KINDS:
        record[f"{kind}_count"] = release.figures.get(kind)
    return {
        "change_id": f"fig_{digest}",
        "user_id": release.post_owner_id,
        "category": "post",
        "operation": "upsert",
        "record_id": audience_record_id(release.post_id),
        "occurred_at": release.occurred_at,
        "record": record,
        "context": None,
        "audience": None,
    }


@dataclass(slots=True)
class _Post:
    counts: dict[str, int] = field(default_factory=dict)
    released: dict[str, int] = field(default_factory=dict)


class AudienceFigures:
    """The audience figures of the posts of one partition's users, and what was released."""

    def __init__(self) -> None:
        self._posts: dict[tuple[str, str], _Post] = {}
        self._sources: dict[int, int] = {}
        self.duplicates = 0

    def __len__(self) -> int:
        return len(self._posts)

    def count(self, post_owner_id: str, post_id: str, kind: str) -> int:
        """The true count (released or not) of ``kind`` on the post: accounts, not activity."""
        post = self._posts.get((post_owner_id, post_id))
        return 0 if post is None else post.counts.get(kind, 0)

    def released(self, post_owner_id: str, post_id: str) -> dict[str, int]:
        """The figures last released for the post (a kind absent: withheld)."""
        post = self._posts.get((post_owner_id, post_id))
        return {} if post is None else dict(post.released)

    def apply(
        self, policy: PrivacyPolicy, source_partition: int, entries: Iterable[AudienceEntry]
    ) -> list[Release]:
        """Apply one update's entries; the posts whose released figures changed, in order.

        Each entry is an account starting (+1) or stopping (-1) to count, as its partition's
        :class:`~portability.privacy.ledger.ActivityLedger` decided. Entries at or below the
        highest source offset already applied from their source partition are duplicates (a
        source batch matched again) and are skipped.
        """
        applied = self._sources.get(source_partition, -1)
        touched: dict[tuple[str, str], datetime] = {}
        for entry in entries:
            if entry["source_offset"] <= applied:
                self.duplicates += 1
                continue
            applied = entry["source_offset"]
            key = (entry["post_owner_id"], entry["post_id"])
            post = self._posts.setdefault(key, _Post())
            kind = entry["kind"]
            # Never below zero: a removal whose making was never counted changes nothing.
            post.counts[kind] = max(0, post.counts.get(kind, 0) + entry["delta"])
            previous = touched.get(key)
            if previous is None or entry["occurred_at"] > previous:
                touched[key] = entry["occurred_at"]
        if applied >= 0:
            self._sources[source_partition] = applied
        return [r for key, at in touched.items() if (r := self._release(policy, key, at))]

    def _release(
        self, policy: PrivacyPolicy, key: tuple[str, str], occurred_at: datetime
    ) -> Release | None:
        post = self._posts[key]
        rule = policy.audience
        figures = {kind: rule.release(post.counts.get(kind, 0)) for kind in sorted(rule.kinds)}
        now = {kind: value for kind, value in figures.items() if value is not None}
        changed = now != post.released
        post.released = now
        if not any(post.counts.values()) and not post.released:
            del self._posts[key]  # nothing counted, nothing shown: no state to keep
        if not changed:
            return None
        return Release(key[0], key[1], figures, occurred_at)

    def checkpoint(self) -> AudienceCheckpoint | None:
        """The state for the matcher's checkpoint; None when there is none."""
        if not self._posts and not self._sources:
            return None
        posts: list[PostFigures] = [
            {
                "post_owner_id": owner,
                "post_id": post_id,
                "counts": dict(post.counts),
                "released": dict(post.released),
            }
            for (owner, post_id), post in self._posts.items()
        ]
        sources = {str(partition): offset for partition, offset in self._sources.items()}
        return {"sources": sources, "posts": posts}

    @classmethod
    def restore(cls, checkpoint: AudienceCheckpoint | None) -> AudienceFigures:
        """The state a checkpoint holds (empty for None)."""
        figures = cls()
        if checkpoint is None:
            return figures
        figures._sources = {int(p): offset for p, offset in checkpoint["sources"].items()}
        for post in checkpoint["posts"]:
            figures._posts[(post["post_owner_id"], post["post_id"])] = _Post(
                dict(post["counts"]), dict(post["released"])
            )
        return figures
