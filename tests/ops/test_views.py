"""How the topics and lag commands render what they read (no Kafka involved)."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition
from rich.console import Console, RenderableType

from portability.ops.lag import GroupLag, LagReport, PartitionLag
from portability.ops.lag_rules import ParkedHold, PartitionSample, Status, Verdict
from portability.ops.lag_view import format_age, lag_table
from portability.ops.topics_view import (
    PartitionState,
    TopicListing,
    TopicState,
    listing_table,
    topic_detail,
)
from portability.wire.topics import TopicSpec

_SPEC = TopicSpec("p.deliveries", 2, "delete", 604_800_000)
_PARTITIONS = (
    PartitionState(0, 0, 12, 1, (1,)),
    PartitionState(1, None, 30, 1, (1,)),
)


def _text(renderable: RenderableType) -> str:
    console = Console(width=250)
    with console.capture() as captured:
        console.print(renderable)
    return captured.get()


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "?"), (0.0, "0"), (4.25, "4.2 s"), (185.0, "3m 05s"), (7_380.0, "2h 03m")],
)
def test_format_age(seconds: float | None, shown: str) -> None:
    assert format_age(seconds) == shown


def test_a_topic_without_reported_configs_says_so() -> None:
    topic = TopicState("p.deliveries", _SPEC, True, _PARTITIONS, configs=None)

    listed = _text(listing_table(TopicListing("k:9092", (topic,))))
    detail = _text(topic_detail(topic))

    assert "604800000 *" in listed
    assert "the broker did not report this config" in listed
    assert "did not answer DescribeConfigs" in detail
    assert "cleanup.policy=delete" in detail
    assert topic.as_dict()["configs"] is None
    assert topic.as_dict()["retention_ms"] == 604_800_000


def test_a_topic_as_the_broker_reports_it() -> None:
    topic = TopicState(
        "p.deliveries", _SPEC, True, _PARTITIONS, {"cleanup.policy": "compact", "x": "1"}
    )

    document = topic.as_dict()

    assert (document["cleanup_policy"], document["end_offset"]) == ("compact", 42)
    assert document["partition_offsets"][1] == {
        "partition": 1,
        "earliest_offset": None,
        "end_offset": 30,
        "records": None,
        "leader": 1,
        "replicas": [1],
    }
    assert "compact" in _text(topic_detail(topic))


def test_a_partition_count_other_than_configured_is_shown() -> None:
    topic = TopicState("p.deliveries", _SPEC, True, _PARTITIONS[:1], {})

    assert "1 (configured 2)" in _text(listing_table(TopicListing("k:9092", (topic,))))


def test_lag_table_shows_groups_partitions_and_missing_topics() -> None:
    sample = PartitionSample(at=0.0, committed=None, start=0, end=7, lag_seconds=None)
    partition = PartitionLag(
        TopicPartition("p.deliveries", 1), sample, Verdict(Status.STALLED, "standing")
    )
    groups = (
        GroupLag(
            "delivery", Verdict(Status.STALLED, "p.deliveries[1]: standing"), None, (partition,)
        ),
        GroupLag("nosuch", Verdict(Status.UNKNOWN, "group not found"), 0),
    )
    report = LagReport(0.0, "k:9092", 2, groups, ("p.notifications",))

    text = _text(lag_table(report))

    assert "members: ?" in text
    assert "STALLED" in text
    assert "UNKNOWN" in text
    assert "missing topics: p.notifications" in text
    assert report.as_dict()["groups"][0]["lag_seconds"] is None
    assert report.as_dict()["groups"][1]["lag"] is None


def test_lag_table_shows_parked_records_apart_and_why() -> None:
    hold = ParkedHold(3, "cns_1", 1, 600.0)
    parked = PartitionLag(
        TopicPartition("p.deliveries.retry", 0),
        PartitionSample(at=0.0, committed=3, start=0, end=8, lag_seconds=900.0, parked=hold),
        Verdict(Status.PARKED, "parked record of consent cns_1: retry 2 due in 10m 00s"),
    )
    behind = PartitionLag(
        TopicPartition("p.deliveries", 0),
        PartitionSample(at=0.0, committed=4, start=0, end=6, lag_seconds=2.0),
        Verdict(Status.OK, "consuming, lag 2 not growing"),
    )
    group = GroupLag(
        "delivery", Verdict(Status.PARKED, "p.deliveries.retry[0]: ..."), 1, (parked, behind)
    )
    report = LagReport(0.0, "k:9092", 2, (group,))

    text = _text(lag_table(report))
    document = report.as_dict()

    assert "2 (+5 parked)" in text
    assert "retry 2 due in 10m 00s" in text
    assert "PARKED" in text
    assert (group.lag, group.parked, group.lag_seconds, group.next_retry_at) == (2, 5, 2.0, 600.0)
    assert document["status"] == "PARKED"
    assert document["groups"][0]["next_retry_at"] == "1970-01-01T00:10:00.000+00:00"
    assert document["groups"][0]["partitions"][0]["parked"]["offset"] == 3
    assert document["groups"][0]["partitions"][1]["parked"] is None
