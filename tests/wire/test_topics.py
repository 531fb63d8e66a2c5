"""Topic layout and the user-to-partition mapping that co-partitioning rests on."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner

from portability.wire import TopicNames, TopicSpec, consent_key, partition_for_user, pipeline_topics
from portability.wire.topics import partition_for_app

_USERS = [
    "u-1",
    "u-2",
    "",
    "21",
    "user-with-a-rather-long-identifier-0123456789abcdef",
    "ünïcødé-用户",
    "00000000-0000-4000-8000-000000000000",
    *(f"user-{n}" for n in range(200)),
]
_PARTITION_COUNTS = [1, 2, 3, 6, 7, 12, 64, 100]


@pytest.mark.parametrize("partitions", _PARTITION_COUNTS)
def test_partition_for_user_matches_kafkas_default_partitioner(partitions: int) -> None:
    """What any Kafka producer would pick for the key ``user_id`` (all partitions available)."""
    partitioner = DefaultPartitioner()
    every = list(range(partitions))
    for user_id in _USERS:
        expected = partitioner(user_id.encode(), every, every)
        assert partition_for_user(user_id, partitions) == expected, user_id


# Kafka's own murmur2 test vectors (org.apache.kafka.common.utils.UtilsTest#testMurmur2), so the
# mapping is pinned independently of aiokafka: partition = (murmur2(key) & 0x7fffffff) % n.
_KAFKA_MURMUR2 = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


@pytest.mark.parametrize(("key", "hashed"), sorted(_KAFKA_MURMUR2.items()))
@pytest.mark.parametrize("partitions", [3, 6, 10])
def test_partition_for_user_matches_the_java_client(key: str, hashed: int, partitions: int) -> None:
    assert partition_for_user(key, partitions) == (hashed & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize("partitions", _PARTITION_COUNTS)
def test_partition_for_user_is_stable_and_in_range(partitions: int) -> None:
    first = [partition_for_user(u, partitions) for u in _USERS]
    again = [partition_for_user(u, partitions) for u in _USERS]

    assert first == again
    assert all(0 <= p < partitions for p in first)


def test_partition_for_user_spreads_users() -> None:
    partitions = 6
    used = {partition_for_user(f"user-{n}", partitions) for n in range(200)}
    assert used == set(range(partitions))


def test_one_partition_takes_every_user() -> None:
    assert {partition_for_user(u, 1) for u in _USERS} == {0}


def test_topic_names_with_prefix() -> None:
    names = TopicNames.with_prefix("t1.")

    assert names == TopicNames(
        account_changes="t1.account.changes",
        consents="t1.consents",
        apps="t1.apps",
        deliveries="t1.deliveries",
        matcher_checkpoints="t1.matcher.checkpoints",
        dead_letters="t1.dead-letters",
        delivery_status="t1.delivery.status",
        notifications="t1.notifications",
        deliveries_retry="t1.deliveries.retry",
        state_changelog="t1.state.changelog",
        delivery_log="t1.delivery.log",
        delivery_ledger="t1.delivery.ledger",
        feed="t1.feed",
    )
    assert TopicNames.with_prefix().account_changes == "account.changes"


def test_pipeline_topics_layout() -> None:
    names = TopicNames.with_prefix("p.")
    specs = {spec.name: spec for spec in pipeline_topics(names, partitions=6)}
    day_ms = 24 * 3600 * 1000

    assert len(specs) == 13, "every topic once"
    assert specs == {
        "p.account.changes": TopicSpec("p.account.changes", 6, "delete", 7 * day_ms),
        "p.consents": TopicSpec("p.consents", 6, "compact"),
        "p.matcher.checkpoints": TopicSpec("p.matcher.checkpoints", 6, "compact"),
        "p.apps": TopicSpec("p.apps", 1, "compact"),
        "p.deliveries": TopicSpec("p.deliveries", 6, "delete", 7 * day_ms),
        "p.dead-letters": TopicSpec("p.dead-letters", 1, "delete", 30 * day_ms),
        "p.delivery.status": TopicSpec("p.delivery.status", 6, "compact"),
        "p.notifications": TopicSpec("p.notifications", 6, "delete", 7 * day_ms),
        "p.deliveries.retry": TopicSpec("p.deliveries.retry", 6, "delete", 7 * day_ms),
        "p.state.changelog": TopicSpec("p.state.changelog", 6, "compact"),
        "p.delivery.log": TopicSpec("p.delivery.log", 6, "delete", 7 * day_ms),
        "p.delivery.ledger": TopicSpec("p.delivery.ledger", 6, "compact"),
        "p.feed": TopicSpec("p.feed", 6, "delete", 7 * day_ms),
    }


def test_the_feed_keeps_events_for_its_setting() -> None:
    names = TopicNames.with_prefix()
    specs = {s.name: s for s in pipeline_topics(names, 3, feed_retention_days=2)}

    assert specs[names.feed].configs() == {
        "cleanup.policy": "delete",
        "retention.ms": str(2 * 24 * 3600 * 1000),
    }


def test_an_apps_feed_events_share_one_partition() -> None:
    """Keyed by app id with Kafka's partitioner, as a producer given the key would place them."""
    assert partition_for_app("app_1", 6) == partition_for_user("app_1", 6)
    assert {partition_for_app(f"app_{n}", 6) for n in range(100)} == set(range(6))


@pytest.mark.parametrize("partitions", [1, 3, 12])
def test_co_partitioned_topics_share_the_partition_count(partitions: int) -> None:
    names = TopicNames.with_prefix()
    specs = {spec.name: spec for spec in pipeline_topics(names, partitions)}

    co_partitioned = [
        names.account_changes,
        names.consents,
        names.matcher_checkpoints,
        names.deliveries,
        names.notifications,
        names.deliveries_retry,
        names.state_changelog,
        names.delivery_ledger,
    ]
    assert {specs[name].partitions for name in co_partitioned} == {partitions}
    compacted = {name for name, spec in specs.items() if spec.cleanup_policy == "compact"}
    assert compacted == {
        names.consents,
        names.apps,
        names.matcher_checkpoints,
        names.delivery_status,
        names.state_changelog,
        names.delivery_ledger,
    }


def test_topic_spec_configs() -> None:
    assert TopicSpec("a", 3, "compact").configs() == {"cleanup.policy": "compact"}
    assert TopicSpec("b", 3, "delete", 1000).configs() == {
        "cleanup.policy": "delete",
        "retention.ms": "1000",
    }


def test_compacted_topics_keep_everything() -> None:
    for spec in pipeline_topics(TopicNames.with_prefix(), 3):
        if spec.cleanup_policy == "compact":
            assert "retention.ms" not in spec.configs(), spec.name


def test_consent_key() -> None:
    assert consent_key("u-1", "cs-9") == b"u-1/cs-9"
    assert consent_key("ü", "c") == "ü/c".encode()
