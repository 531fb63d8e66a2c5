"""Lag read from the session's Tansu while real consumers commit offsets.

Each test drives a group through a story (stops, falls behind, catches up, is rewound) and
samples between steps; the monitor's clock is the wall clock plus what a test adds, so a
"five minutes later" needs no sleeping.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from portability.broker import BrokerError, EmbeddedBroker, free_port
from portability.broker.inspector import Inspector
from portability.ops.errors import MissingTopicsError
from portability.ops.lag import GroupLag, LagMonitor, LagReport, PartitionLag, pipeline_groups
from portability.ops.lag_rules import Status
from portability.wire.topics import pipeline_topics

from .scene import PARTITIONS, Scene, SkippableClock

# Joining a group on Tansu takes about 5 s.
_JOIN_DEADLINE_S = 30.0


def _monitor(
    inspector: Inspector,
    scene: Scene,
    groups: Mapping[str, Sequence[str]] | None = None,
    *,
    window: int = 3,
    clock: SkippableClock | None = None,
) -> LagMonitor:
    topics = [spec.name for spec in pipeline_topics(scene.names, PARTITIONS)]
    return LagMonitor(
        inspector,
        groups if groups is not None else pipeline_groups(scene.settings),
        topics,
        window=window,
        stop_after_s=300.0,
        clock=clock or SkippableClock(),
    )


def _group(report: LagReport, name: str) -> GroupLag:
    return next(group for group in report.groups if group.group == name)


def _partition(group: GroupLag, topic: str, partition: int) -> PartitionLag:
    return next(p for p in group.partitions if p.tp == TopicPartition(topic, partition))


# --- reading the broker --------------------------------------------------------------------------


async def test_read_finds_the_end_of_multi_record_batches(
    scene: Scene, inspector: Inspector
) -> None:
    """Tansu's ListOffsets answers the last batch's base offset + 1; the fetch is right."""
    tp = TopicPartition(scene.names.deliveries, 0)
    first = await scene.produce(tp.topic, 0, 10, age_s=60)
    await scene.produce(tp.topic, 0, 10)

    reads = await inspector.read({tp: None})
    at_three = await inspector.read({tp: 3})
    at_end = await inspector.read({tp: 20})
    beyond = await inspector.read({tp: 25})

    assert first == list(range(10))
    assert reads[tp].end == 20
    assert (at_three[tp].end, at_three[tp].first_offset) == (20, 3)
    stamp = at_three[tp].first_timestamp_ms
    assert stamp is not None
    assert 60 <= time.time() - stamp / 1000 < 90
    assert (at_end[tp].end, at_end[tp].first_offset) == (20, None)
    assert (beyond[tp].end, beyond[tp].first_offset) == (20, None)


async def test_committed_offsets_are_read_per_partition(scene: Scene, inspector: Inspector) -> None:
    tps = [TopicPartition(scene.names.deliveries, p) for p in range(PARTITIONS)]
    group = scene.settings.delivery_group
    await scene.commit(group, {tps[0]: 5})

    assert await inspector.committed(group, tps) == {tps[0]: 5, tps[1]: None}
    assert await inspector.committed(f"nosuch-{uuid.uuid4().hex[:8]}", tps) == dict.fromkeys(tps)
    assert await inspector.member_count(group) == 0


async def test_layouts_leave_missing_topics_out_without_creating_them(
    scene: Scene, inspector: Inspector
) -> None:
    missing = f"missing-{uuid.uuid4().hex[:8]}"

    layouts = await inspector.layouts([scene.names.deliveries, missing])

    assert list(layouts) == [scene.names.deliveries]
    assert layouts[scene.names.deliveries].partitions == tuple(range(PARTITIONS))
    assert missing not in await inspector.topic_names()


async def test_an_unreachable_broker_is_a_broker_error_at_once() -> None:
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()

    with pytest.raises(BrokerError, match=f"cannot reach Kafka at {address}"):
        async with Inspector(address, timeout_s=5.0):
            pass

    assert time.monotonic() - started < 5.0


# --- a group's story -------------------------------------------------------------------------


async def test_lag_and_status_follow_a_consumer_that_stops_falls_behind_catches_up_and_rewinds(
    scene: Scene, inspector: Inspector
) -> None:
    group = scene.settings.delivery_group
    topic = scene.names.deliveries
    tp = TopicPartition(topic, 0)
    monitor = _monitor(inspector, scene)

    async def sample() -> tuple[GroupLag, PartitionLag]:
        report = await monitor.sample()
        judged = _group(report, group)
        return judged, _partition(judged, topic, 0)

    # Consumed everything: caught up.
    await scene.produce(topic, 0, 5, age_s=30)
    await scene.commit(group, {tp: 5})
    judged, partition = await sample()
    assert judged.verdict.status is Status.OK
    assert (partition.sample.committed, partition.sample.end, partition.sample.lag) == (5, 5, 0)
    assert partition.sample.lag_seconds == 0.0
    assert judged.members == 0

    # The consumer stops; records keep coming: nobody will read them.
    await scene.produce(topic, 0, 4, age_s=20)
    judged, partition = await sample()
    assert (partition.sample.lag, partition.verdict.status) == (4, Status.STOPPED)
    assert partition.sample.lag_seconds is not None
    assert 20 <= partition.sample.lag_seconds < 50
    assert judged.verdict.status is Status.STOPPED
    assert judged.verdict.reason.startswith(f"{topic}[0]: ")
    assert "no members" in judged.verdict.reason

    # It consumes again, but slower than records arrive: falling behind.
    for committed in (6, 7):
        await scene.produce(topic, 0, 3)
        await scene.commit(group, {tp: committed})
        judged, partition = await sample()
        assert partition.verdict.status is Status.WARNING, partition.verdict
    assert (partition.sample.committed, partition.sample.end, partition.sample.lag) == (7, 15, 8)
    assert judged.verdict.status is Status.WARNING
    assert judged.lag == 8

    # It catches up.
    await scene.commit(group, {tp: 15})
    judged, partition = await sample()
    assert (partition.sample.lag, judged.verdict.status) == (0, Status.OK)

    # An operator rewinds it to replay.
    await scene.commit(group, {tp: 10})
    judged, partition = await sample()
    assert (partition.sample.lag, partition.verdict.status) == (5, Status.REWOUND)
    assert judged.verdict.reason == f"{topic}[0]: committed offset went back from 15 to 10"

    # The replay completes.
    await scene.commit(group, {tp: 15})
    judged, _ = await sample()
    assert judged.verdict.status is Status.OK


@pytest.fixture
async def member(scene: Scene) -> AsyncIterator[AIOKafkaConsumer]:
    """A real member of the matcher's group, holding every account.changes partition."""
    consumer = AIOKafkaConsumer(
        scene.names.account_changes,
        bootstrap_servers=scene.bootstrap,
        group_id=scene.settings.matcher_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + _JOIN_DEADLINE_S
        while len(consumer.assignment()) < PARTITIONS:
            assert time.monotonic() < deadline, "the consumer did not join its group"
            await consumer.getmany(timeout_ms=100)
        yield consumer
    finally:
        await consumer.stop()


async def test_a_member_that_does_not_commit_is_stalled_then_stopped(
    scene: Scene, inspector: Inspector, member: AIOKafkaConsumer
) -> None:
    group = scene.settings.matcher_group
    topic = scene.names.account_changes
    tp = TopicPartition(topic, 0)
    clock = SkippableClock()
    monitor = _monitor(inspector, scene, clock=clock)
    await scene.produce(topic, 0, 6)
    await member.commit({tp: 2})

    first = _group(await monitor.sample(), group)
    second = _group(await monitor.sample(), group)
    clock.skipped = 301.0
    third = _group(await monitor.sample(), group)
    await member.commit({tp: 6})
    fourth = _group(await monitor.sample(), group)

    assert first.members == 1
    assert _partition(first, topic, 0).verdict.status is Status.WARNING  # one sample: no trend
    assert _partition(second, topic, 0).verdict.status is Status.STALLED
    assert second.verdict.status is Status.STALLED
    assert _partition(second, topic, 1).verdict.status is Status.OK
    assert third.verdict.status is Status.STOPPED
    assert "stop threshold 300 s" in third.verdict.reason
    assert (_partition(fourth, topic, 0).sample.lag, fourth.verdict.status) == (0, Status.OK)


async def test_lag_seconds_is_the_age_of_the_record_at_the_committed_offset(
    scene: Scene, inspector: Inspector
) -> None:
    group = scene.settings.delivery_group
    topic = scene.names.deliveries
    await scene.produce(topic, 1, 1, age_s=600)
    await scene.produce(topic, 1, 2, age_s=120)
    await scene.commit(group, {TopicPartition(topic, 1): 1})

    partition = _partition(_group(await _monitor(inspector, scene).sample(), group), topic, 1)

    assert partition.sample.lag == 2
    assert partition.sample.lag_seconds is not None
    assert 120 <= partition.sample.lag_seconds < 150


async def test_a_partition_without_commits_counts_from_the_log_start(
    scene: Scene, inspector: Inspector
) -> None:
    """Topics beyond the known ones are found from the group's commits."""
    group = f"custom-{uuid.uuid4().hex[:8]}"
    topic = scene.names.account_changes
    await scene.produce(topic, 0, 3)
    await scene.produce(topic, 1, 7)
    await scene.commit(group, {TopicPartition(topic, 0): 3})

    judged = _group(await _monitor(inspector, scene, {group: ()}).sample(), group)

    assert [p.tp for p in judged.partitions] == [TopicPartition(topic, p) for p in (0, 1)]
    unread = _partition(judged, topic, 1)
    assert (unread.sample.committed, unread.sample.lag) == (None, 7)
    assert judged.lag == 7


async def test_a_committed_offset_beyond_the_end_is_no_lag(
    scene: Scene, inspector: Inspector
) -> None:
    group = scene.settings.delivery_group
    topic = scene.names.deliveries
    await scene.produce(topic, 0, 2)
    await scene.commit(group, {TopicPartition(topic, 0): 100})

    partition = _partition(_group(await _monitor(inspector, scene).sample(), group), topic, 0)

    assert (partition.sample.end, partition.sample.lag) == (2, 0)
    assert partition.verdict.status is Status.OK


async def test_an_unknown_group_is_unknown(scene: Scene, inspector: Inspector) -> None:
    report = await _monitor(inspector, scene).sample()

    for name in (scene.settings.matcher_group, scene.settings.delivery_group):
        judged = _group(report, name)
        assert judged.verdict.status is Status.UNKNOWN
        assert (judged.partitions, judged.lag, judged.lag_seconds) == ((), None, None)


async def test_missing_topics_are_reported(scene: Scene, inspector: Inspector) -> None:
    gone = f"gone-{uuid.uuid4().hex[:8]}"
    group = scene.settings.delivery_group
    topics = [scene.names.deliveries, gone]
    monitor = LagMonitor(inspector, {group: (gone,)}, topics)

    report = await monitor.sample()

    assert report.missing_topics == (gone,)
    with pytest.raises(MissingTopicsError, match="portability topics create"):
        await LagMonitor(inspector, {group: ()}, [gone]).sample()
    assert gone not in await inspector.topic_names()


async def test_every_samples_at_the_interval_and_fills_the_window(
    scene: Scene, inspector: Inspector
) -> None:
    monitor = _monitor(inspector, scene, window=2)
    started = time.monotonic()

    reports = [report async for report in monitor.every(0.2, 3)]

    assert [report.window for report in reports] == [1, 2, 2]
    # Samples start an interval apart (their reading times vary, so their ``at`` do too).
    assert time.monotonic() - started >= 0.4


async def test_sampling_is_bounded_when_the_broker_goes_away(scene: Scene) -> None:
    async with EmbeddedBroker() as short_lived:
        inspector = Inspector(short_lived.bootstrap, timeout_s=2.0)
        await inspector.__aenter__()
    try:
        with pytest.raises(BrokerError):
            await asyncio.wait_for(_monitor(inspector, scene).sample(), 30)
    finally:
        await inspector.close()
