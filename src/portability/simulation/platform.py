"""A simulated platform: users making account changes, published to ``account.changes``.

Used by the demo, the tests and the benchmarks. Changes are random but reproducible from a
seed, and every one is kept (optionally) so that a check can compute what should arrive.

Like the real platform, every change carries the context the privacy rules need (the user's
privacy settings when the record was made; for a removed activity, what it was), and activity
on another user's post carries the audience header (:func:`portability.privacy.platform_headers`).
By default every account is public with visible shares and no share is made off the platform;
:class:`PrivacyMix` makes some accounts private, some hide their shares, and some shares
off-platform.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from portability.privacy import platform_headers
from portability.runtime import Runtime
from portability.wire.records import (
    CATEGORIES,
    AccountChange,
    ActivityRef,
    Category,
    ChangeContext,
    with_record_type,
)
from portability.wire.schemas import SchemaName
from portability.wire.topics import partition_for_user

__all__ = ["ChangeFactory", "PlatformPublisher", "PrivacyMix", "UserSettings", "user_ids"]

_ACTIVITY_KINDS = ("like", "comment", "view", "share")
_SHARE_TARGETS = ("feed", "story", "chat", "group")


@dataclass(frozen=True, slots=True)
class PrivacyMix:
    """Shares of a population with each privacy setting (all zero: everyone public)."""

    private: float = 0.0
    hidden_shares: float = 0.0
    off_platform_shares: float = 0.0  # of shares: made outside the platform


@dataclass(frozen=True, slots=True)
class UserSettings:
    """One user's privacy settings on the platform."""

    private: bool = False
    shares_visible: bool = True


def user_ids(count: int) -> list[str]:
    """Deterministic user ids ``u00000001``..."""
    return [f"u{i:08d}" for i in range(1, count + 1)]


class ChangeFactory:
    """Makes plausible account changes for a population of users."""

    def __init__(self, users: list[str], seed: int = 7, privacy: PrivacyMix | None = None) -> None:
        self._users = users
        self._random = random.Random(seed)
        self._records: dict[tuple[str, str], list[str]] = {}
        self._privacy = privacy or PrivacyMix()
        self._settings: dict[str, UserSettings] = {}
        # Each live activity record: what it was and the context it was made in, so that its
        # removal can say so (a delete carries no record).
        self._activities: dict[str, tuple[ActivityRef, ChangeContext]] = {}

    def settings(self, user_id: str) -> UserSettings:
        """The user's privacy settings (drawn once from the :class:`PrivacyMix`)."""
        found = self._settings.get(user_id)
        if found is None:
            mix, rnd = self._privacy, self._random
            found = UserSettings(
                private=bool(mix.private) and rnd.random() < mix.private,
                shares_visible=not (bool(mix.hidden_shares) and rnd.random() < mix.hidden_shares),
            )
            self._settings[user_id] = found
        return found

    def set_settings(self, user_id: str, settings: UserSettings) -> None:
        """Change the user's privacy settings; later records are made under them."""
        self._settings[user_id] = settings

    def activity(
        self,
        user_id: str,
        kind: str,
        post_id: str,
        post_owner_id: str,
        *,
        off_platform: bool = False,
        share_target: str | None = None,
    ) -> AccountChange:
        """The user likes, comments on, views or shares the post (an upsert of a new record)."""
        record_id = f"activity_{uuid.UUID(int=self._random.getrandbits(128)).hex[:12]}"
        self._records.setdefault((user_id, "activity"), []).append(record_id)
        record = {
            "kind": kind,
            "post_id": post_id,
            "post_owner_id": post_owner_id,
            "text": "nice" if kind == "comment" else None,
            "share_target": (share_target or "feed") if kind == "share" else None,
        }
        change = self._change(user_id, "activity", "upsert", record_id, record)
        context = self._context(user_id, off_platform)
        change["context"] = context
        ref: ActivityRef = {"kind": kind, "post_id": post_id, "post_owner_id": post_owner_id}
        self._activities[record_id] = (ref, context)
        return change

    def remove_activity(self, user_id: str, record_id: str) -> AccountChange:
        """The user removes one of their activity records (unshares, clears a view...)."""
        existing = self._records.get((user_id, "activity"), [])
        if record_id in existing:
            existing.remove(record_id)
        return self._change(user_id, "activity", "delete", record_id, None)

    def edit_activity(self, user_id: str, record_id: str) -> AccountChange:
        """The user edits one of their live activity records (a comment's text, a share's
        target): an upsert of the same record id, on the same post.

        The platform describes the record as it is now: made under the user's settings now,
        and its removal will say so.

        Raises:
            KeyError: ``record_id`` is not a live activity record made by this factory.
        """
        ref, made = self._activities[record_id]
        record = {
            "kind": ref["kind"],
            "post_id": ref["post_id"],
            "post_owner_id": ref["post_owner_id"],
            "text": "edited" if ref["kind"] == "comment" else None,
            "share_target": "story" if ref["kind"] == "share" else None,
        }
        change = self._change(user_id, "activity", "upsert", record_id, record)
        context = self._context(user_id, made["off_platform"])
        change["context"] = context
        self._activities[record_id] = (ref, context)
        return change

    def _context(self, user_id: str, off_platform: bool = False) -> ChangeContext:
        settings = self.settings(user_id)
        return {
            "actor_private": settings.private,
            "shares_visible": settings.shares_visible,
            "off_platform": off_platform,
            "activity": None,
        }

    def random_change(
        self, user_id: str | None = None, category: Category | None = None
    ) -> AccountChange:
        """One change; about one in ten of a category's existing records is deleted."""
        rnd = self._random
        user = user_id or rnd.choice(self._users)
        cat: Category = category if category is not None else rnd.choice(CATEGORIES)
        existing = self._records.setdefault((user, cat), [])
        if existing and cat != "profile" and rnd.random() < 0.1:
            record_id = existing.pop(rnd.randrange(len(existing)))
            return self._change(user, cat, "delete", record_id, None)
        record_id = (
            "profile"
            if cat == "profile"
            else f"{cat}_{uuid.UUID(int=rnd.getrandbits(128)).hex[:12]}"
        )
        if cat != "profile":
            existing.append(record_id)
        record = self._record(user, cat)
        change = self._change(user, cat, "upsert", record_id, record)
        if cat == "activity":
            change["context"] = self._made_activity(user, record_id, record)
        return change

    def _made_activity(self, user: str, record_id: str, record: dict[str, Any]) -> ChangeContext:
        """The context of a new activity record, remembered for its removal."""
        mix = self._privacy
        off_platform = bool(
            record["kind"] == "share"
            and mix.off_platform_shares
            and self._random.random() < mix.off_platform_shares
        )
        context = self._context(user, off_platform)
        ref: ActivityRef = {
            "kind": record["kind"],
            "post_id": record["post_id"],
            "post_owner_id": record["post_owner_id"],
        }
        self._activities[record_id] = (ref, context)
        return context

    def _change(
        self,
        user: str,
        category: Category,
        operation: str,
        record_id: str,
        record: dict[str, Any] | None,
    ) -> AccountChange:
        made = self._activities.pop(record_id, None) if operation == "delete" else None
        if made is not None:
            # A removal is described by the context its record was made in.
            context: ChangeContext = {**made[1], "activity": made[0]}
        else:
            context = self._context(user)
        return {
            "change_id": str(uuid.UUID(int=self._random.getrandbits(128))),
            "user_id": user,
            "category": category,
            "operation": operation,  # type: ignore[typeddict-item]
            "record_id": record_id,
            "occurred_at": datetime.now(UTC),
            "record": record,
            "context": context,
        }

    def _record(self, user: str, category: Category) -> dict[str, Any]:
        rnd = self._random
        other = rnd.choice(self._users)
        if category == "profile":
            return {
                "username": f"user_{user}",
                "display_name": f"User {user[-4:]}",
                "bio": rnd.choice(["", "hello", "dancing", "cooking"]),
                "region": rnd.choice(["FR", "DE", "IE", "GB", "NL"]),
                "is_private": False,
            }
        if category == "post":
            return {
                "caption": f"post {rnd.randrange(10**6)}",
                "media_url": f"https://cdn.example/{rnd.randrange(10**9)}.mp4",
                "visibility": "public",
                "created_at": datetime.now(UTC),
            }
        if category == "follow":
            return {
                "direction": rnd.choice(["following", "follower"]),
                "other_user_id": other,
                "other_username": f"user_{other}",
            }
        if category == "activity":
            kind = rnd.choice(_ACTIVITY_KINDS)
            return {
                "kind": kind,
                "post_id": f"post_{rnd.randrange(10**6)}",
                "post_owner_id": other,
                "text": "nice" if kind == "comment" else None,
                "share_target": rnd.choice(_SHARE_TARGETS) if kind == "share" else None,
            }
        return {
            "conversation_id": f"conv_{rnd.randrange(10**6)}",
            "direction": rnd.choice(["sent", "received"]),
            "other_user_id": other,
            "text": "hi",
        }


class PlatformPublisher:
    """Publishes account changes, keyed and partitioned by user id."""

    def __init__(self, runtime: Runtime, linger_ms: int = 5) -> None:
        self._runtime = runtime
        self._producer: AIOKafkaProducer = runtime.kafka.producer("portability-platform", linger_ms)

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, changes: Iterable[AccountChange]) -> int:
        """Send changes and wait until the broker acknowledged all of them."""
        topic = self._runtime.topics.account_changes
        partitions = self._runtime.settings.partitions
        acks = []
        for change in changes:
            value = self._runtime.codec.encode(
                SchemaName.ACCOUNT_CHANGE, dict(with_record_type(change))
            )
            acks.append(
                await self._producer.send(
                    topic,
                    value,
                    key=change["user_id"].encode(),
                    partition=partition_for_user(change["user_id"], partitions),
                    headers=platform_headers(change) or None,
                )
            )
        await asyncio.gather(*acks)
        return len(acks)

    async def publish_raw(self, user_id: str, value: bytes) -> None:
        """Send arbitrary bytes as a change of ``user_id`` (for fault tests and the demo)."""
        await self._producer.send_and_wait(
            self._runtime.topics.account_changes,
            value,
            key=user_id.encode(),
            partition=partition_for_user(user_id, self._runtime.settings.partitions),
        )
