"""A simulated platform: users making account changes, published to ``account.changes``.

Used by the demo, the tests and the benchmarks. Changes are random but reproducible from a
seed, and every one is kept (optionally) so that a check can compute what should arrive.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from portability.runtime import Runtime
from portability.wire.records import CATEGORIES, AccountChange, Category, with_record_type
from portability.wire.schemas import SchemaName
from portability.wire.topics import partition_for_user

__all__ = ["ChangeFactory", "PlatformPublisher", "user_ids"]

_ACTIVITY_KINDS = ("like", "comment", "view", "share")


def user_ids(count: int) -> list[str]:
    """Deterministic user ids ``u00000001``..."""
    return [f"u{i:08d}" for i in range(1, count + 1)]


class ChangeFactory:
    """Makes plausible account changes for a population of users."""

    def __init__(self, users: list[str], seed: int = 7) -> None:
        self._users = users
        self._random = random.Random(seed)
        self._records: dict[tuple[str, str], list[str]] = {}

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
        return self._change(user, cat, "upsert", record_id, self._record(user, cat))

    def _change(
        self,
        user: str,
        category: Category,
        operation: str,
        record_id: str,
        record: dict[str, Any] | None,
    ) -> AccountChange:
        return {
            "change_id": str(uuid.UUID(int=self._random.getrandbits(128))),
            "user_id": user,
            "category": category,
            "operation": operation,  # type: ignore[typeddict-item]
            "record_id": record_id,
            "occurred_at": datetime.now(UTC),
            "record": record,
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
                "share_target": None,
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
