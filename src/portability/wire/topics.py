"""Topic names, their layout, and how keys map to partitions.

Co-partitioning is what lets the matcher scale out: ``account.changes``, ``consents`` and
``matcher.checkpoints`` have the same partition count, and a user's records land in the same
partition number of each, because every producer places them with :func:`partition_for_user`
(Kafka's own murmur2 partitioner over the user id).
"""

from __future__ import annotations

from dataclasses import dataclass

import murmurhash2

__all__ = [
    "TopicNames",
    "TopicSpec",
    "consent_key",
    "partition_for_app",
    "partition_for_consent",
    "partition_for_user",
    "pipeline_topics",
]

_DAY_MS = 24 * 3600 * 1000
# The seed of Kafka's murmur2 partitioner (Java's Utils.murmur2, librdkafka's murmur2_random).
_MURMUR2_SEED = 0x9747B28C


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The pipeline's topic names, with an optional prefix."""

    account_changes: str
    consents: str
    apps: str
    deliveries: str
    matcher_checkpoints: str
    dead_letters: str
    delivery_status: str
    notifications: str
    deliveries_retry: str
    state_changelog: str
    delivery_log: str
    delivery_ledger: str
    feed: str

    @classmethod
    def with_prefix(cls, prefix: str = "") -> TopicNames:
        return cls(
            account_changes=f"{prefix}account.changes",
            consents=f"{prefix}consents",
            apps=f"{prefix}apps",
            deliveries=f"{prefix}deliveries",
            matcher_checkpoints=f"{prefix}matcher.checkpoints",
            dead_letters=f"{prefix}dead-letters",
            delivery_status=f"{prefix}delivery.status",
            notifications=f"{prefix}notifications",
            deliveries_retry=f"{prefix}deliveries.retry",
            state_changelog=f"{prefix}state.changelog",
            delivery_log=f"{prefix}delivery.log",
            delivery_ledger=f"{prefix}delivery.ledger",
            feed=f"{prefix}feed",
        )


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """How a topic is created: partitions and the configs that matter."""

    name: str
    partitions: int
    cleanup_policy: str  # "delete" or "compact"
    retention_ms: int | None = None

    def configs(self) -> dict[str, str]:
        configs = {"cleanup.policy": self.cleanup_policy}
        if self.retention_ms is not None:
            configs["retention.ms"] = str(self.retention_ms)
        return configs


def pipeline_topics(
    names: TopicNames, partitions: int, *, feed_retention_days: int = 7
) -> list[TopicSpec]:
    """Every topic the pipeline needs, created explicitly before any worker starts.

    Creating them up front matters: a broker auto-creates a topic a client merely names,
    with its default partition count, which would break co-partitioning.

    Args:
        names: The topic names.
        partitions: The pipeline's partition count.
        feed_retention_days: How long the pull feed keeps events
            (``PORTABILITY_FEED_RETENTION_DAYS``): an iterator older than that is stale.
    """
    return [
        TopicSpec(names.account_changes, partitions, "delete", 7 * _DAY_MS),
        TopicSpec(names.consents, partitions, "compact"),
        TopicSpec(names.matcher_checkpoints, partitions, "compact"),
        # Apps are few; one partition gives every worker one ordered view of them.
        TopicSpec(names.apps, 1, "compact"),
        TopicSpec(names.deliveries, partitions, "delete", 7 * _DAY_MS),
        TopicSpec(names.dead_letters, 1, "delete", 30 * _DAY_MS),
        TopicSpec(names.delivery_status, partitions, "compact"),
        # Partitioned by consent like deliveries: see partition_for_consent.
        TopicSpec(names.notifications, partitions, "delete", 7 * _DAY_MS),
        # Parked deliveries wait here up to the retry schedule's total (about 33 h).
        TopicSpec(names.deliveries_retry, partitions, "delete", 7 * _DAY_MS),
        # The current-state view's changelog: same partition numbers as account.changes, kept
        # for good (compaction may shrink it; correctness does not depend on it).
        TopicSpec(names.state_changelog, partitions, "compact"),
        # Attempts at webhook messages, keyed by message id, until the message log's writer
        # has stored them (its own retention, PORTABILITY_MESSAGE_RETENTION_DAYS, is longer).
        TopicSpec(names.delivery_log, partitions, "delete", 7 * _DAY_MS),
        # Each consent's ledger head, partitioned by consent like deliveries: a worker reads
        # its partitions' heads before delivering, to continue their chains.
        TopicSpec(names.delivery_ledger, partitions, "compact"),
        # The pull feed of poll-mode apps: the webhook bodies, keyed by app id (one app's
        # events in one partition, in order: see partition_for_app).
        TopicSpec(names.feed, partitions, "delete", feed_retention_days * _DAY_MS),
    ]


def partition_for_user(user_id: str, partitions: int) -> int:
    """The partition of every record about ``user_id`` (Kafka's default partitioner)."""
    hashed: int = murmurhash2.murmurhash2(user_id.encode(), _MURMUR2_SEED)
    return (hashed & 0x7FFFFFFF) % partitions


def partition_for_consent(consent_id: str, partitions: int) -> int:
    """The partition of a consent's deliveries and notifications (keyed by consent id).

    Both topics have the same partition count, so the range assignor gives one worker the
    same partition number of each, and a consent's events share its delivery lane.
    """
    return partition_for_user(consent_id, partitions)


def partition_for_app(app_id: str, partitions: int) -> int:
    """The feed partition of a poll-mode app's events (keyed by app id, Kafka's partitioner).

    One partition per app keeps its events in the order they were appended; the feed's
    reader reads that partition only.
    """
    return partition_for_user(app_id, partitions)


def consent_key(user_id: str, consent_id: str) -> bytes:
    """Key of a consent record: compaction keeps the latest state of each consent."""
    return f"{user_id}/{consent_id}".encode()
