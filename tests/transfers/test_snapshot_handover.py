"""An ongoing consent's snapshot hands over to its deltas: nothing missed, nothing doubled.

The whole pipeline runs (real broker, SQLite consent store and relay, matcher, delivery worker,
current-state view and transfer builder, the reference receiver over HTTP). A user's changes
stream while the consent is granted (or a resync asked); the receiver's copy, rebuilt from the
snapshot's records then the deltas in sequence, must equal the platform's state record by
record, and no change may arrive both in the snapshot and as a delta, or twice as a delta.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
import pytest_asyncio

from pipeline_harness import APP_A, Pipeline, pipeline_settings, running_pipeline
from portability.broker import EmbeddedBroker
from portability.consent import ConsentView
from portability.consent.transfer_requests import TransferStore, TransferView
from portability.demo.copies import Copy, deltas_after_snapshot, received_copy
from portability.privacy import current_policy, for_subject
from portability.transfers.builder import TransferBuilder
from portability.wire.records import AccountChange, Category
from portability.wire.schemas import SchemaName
from portability.wire.topics import partition_for_user
from transfers.helpers import expected_state, of_user, running_view

# One worker runs the whole module (pytest -n): its tests share the module's pipeline.
pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.xdist_group("test_snapshot_handover"),
]

GRANTED: list[Category] = ["profile", "post", "follow"]
STREAM_BATCHES = 30
BATCH_SIZE = 8


class Builder:
    """The module's transfer builder, which a test may stop and start again."""

    def __init__(self, pipeline: Pipeline, builder: TransferBuilder) -> None:
        self._pipeline = pipeline
        self._builder = builder
        self._stop = asyncio.Event()

    def start(self) -> None:
        self._stop = asyncio.Event()
        self._pipeline.tasks["transfer builder"] = asyncio.create_task(
            self._builder.run(self._stop, poll_interval_s=0.05), name="transfer builder"
        )

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(self._pipeline.tasks.pop("transfer builder"), 10)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Pipeline, Builder]]:
    settings = pipeline_settings(tmp_path_factory.mktemp("snapshots")).model_copy(
        update={"snapshot_page_max_records": 7}  # several pages even for a small user
    )
    async with running_pipeline(settings, broker.bootstrap) as pipeline:
        partitions = range(settings.partitions)
        async with running_view(pipeline.runtime, list(partitions)) as view:
            builder = Builder(pipeline, TransferBuilder(pipeline.runtime, pipeline.engine, view))
            builder.start()
            try:
                yield pipeline, builder
            finally:
                await builder.stop()


@pytest.fixture
def pipeline(running: tuple[Pipeline, Builder]) -> Pipeline:
    return running[0]


@pytest.fixture
def builder(running: tuple[Pipeline, Builder]) -> Builder:
    return running[1]


class Stream:
    """A user's changes published in small batches, with a hook between two batches."""

    def __init__(self, pipeline: Pipeline, user: str) -> None:
        self._pipeline = pipeline
        self.user = user
        self.published: list[AccountChange] = []

    async def grant_with_snapshot(self) -> ConsentView:
        consent = await asyncio.to_thread(
            self._pipeline.service.grant, self.user, APP_A, list(GRANTED), initial_snapshot=True
        )
        self._pipeline.active_consents.add(consent.consent_id)
        return consent

    def batch(self) -> list[AccountChange]:
        categories: Sequence[Category] = [*GRANTED, "activity", "direct_message"]
        return [
            self._pipeline.factory.random_change(self.user, categories[i % len(categories)])
            for i in range(BATCH_SIZE)
        ]

    async def run(self, batches: int) -> None:
        for _ in range(batches):
            await self._publish_batch()

    async def run_while(self, going_on: Callable[[], bool], limit: int = 2_000) -> int:
        """Publish batches as long as ``going_on()`` (at most ``limit``); how many it took."""
        for number in range(limit):
            if not going_on():
                return number
            await self._publish_batch()
        raise AssertionError(f"still going on after {limit} batches")

    async def _publish_batch(self) -> None:
        changes = self.batch()
        await self._pipeline.publish(changes)
        self.published.extend(changes)
        await asyncio.sleep(0.01)  # pacing the platform's traffic, not waiting for a result


def platform_state(changes: Sequence[AccountChange], user: str) -> Copy:
    """The user's granted records as the privacy policy lets them leave, after ``changes``:
    computed by the transfers tests' own model, independently of the demo's."""
    policy = current_policy()
    shaped = [s for c in changes if (s := for_subject(policy, c)) is not None]
    granted = of_user(expected_state(shaped), user, GRANTED)
    return {(category, record_id): value for (_, category, record_id), value in granted.items()}


def rebuilt_state(pipeline: Pipeline, consent_id: str) -> Copy:
    """The receiver's copy: the latest snapshot's records, then the deltas after it."""
    copy = received_copy(pipeline.receiver, consent_id)
    assert copy is not None, "the snapshot is not complete"
    return copy


async def source_offsets(pipeline: Pipeline, user: str) -> dict[str, int]:
    """Each change id of ``user`` with its offset in the user's account.changes partition."""
    runtime = pipeline.runtime
    records = await pipeline.read_topic(runtime.topics.account_changes, 1)
    partition = partition_for_user(user, runtime.settings.partitions)
    offsets: dict[str, int] = {}
    for record in records:
        if record.partition != partition or record.key != user.encode():
            continue
        change: Any = runtime.codec.decode(SchemaName.ACCOUNT_CHANGE, record.value)
        offsets[change["change_id"]] = record.offset
    return offsets


def published_snapshot(pipeline: Pipeline, consent_id: str, epoch: int) -> TransferView | None:
    return next(
        (
            t
            for t in TransferStore(pipeline.engine).list_for_consent(consent_id)
            if t.kind == "snapshot" and t.snapshot_epoch == epoch and t.state == "ready"
        ),
        None,
    )


async def snapshot_transfer(pipeline: Pipeline, consent_id: str, epoch: int) -> TransferView:
    await pipeline.wait_until(
        lambda: published_snapshot(pipeline, consent_id, epoch) is not None,
        f"snapshot {epoch} published",
        60,
    )
    found = published_snapshot(pipeline, consent_id, epoch)
    assert found is not None
    return found


async def assert_handed_over_exactly(
    pipeline: Pipeline, stream: Stream, consent_id: str, epoch: int
) -> None:
    transfer = await snapshot_transfer(pipeline, consent_id, epoch)
    expected = platform_state(stream.published, stream.user)
    await pipeline.wait_until(
        lambda: (
            _complete(pipeline, consent_id, epoch)
            and rebuilt_state(pipeline, consent_id) == expected
        ),
        f"receiver's copy of consent {consent_id} equal to the platform's state",
        60,
    )
    assert rebuilt_state(pipeline, consent_id) == expected
    snapshot = pipeline.receiver.snapshot(consent_id)
    assert snapshot is not None
    assert snapshot.pages > 1  # paged, as asked for
    assert snapshot.record_count == transfer.record_count

    # Nothing doubled: every delta after the snapshot comes from its position on (the
    # snapshot holds everything before), none twice. Nothing missed: they are exactly the
    # changes of the granted categories from that position on.
    position = int((transfer.position or "").split(":")[1])
    offsets = await source_offsets(pipeline, stream.user)
    after_ids = [d.change_id for d in deltas_after_snapshot(pipeline.receiver, consent_id)]
    assert min((offsets[c] for c in after_ids), default=position) >= position
    assert len(after_ids) == len(set(after_ids))
    in_snapshot = {record["change_id"] for record in snapshot.records}
    assert not in_snapshot & set(after_ids)
    policy = current_policy()
    granted_from_position = {
        c["change_id"]
        for c in stream.published
        if c["category"] in GRANTED
        and offsets[c["change_id"]] >= position
        and for_subject(policy, c) is not None
    }
    assert set(after_ids) == granted_from_position
    status = pipeline.worker.status.get(consent_id)
    assert status is not None
    assert status.get("snapshot_epoch_delivered") == epoch
    stats = pipeline.receiver.stats()
    assert stats.duplicates == 0
    assert stats.gaps_detected == 0
    assert stats.missing_sequences == 0


async def stamped_with(pipeline: Pipeline, consent_id: str, epoch: int) -> bool:
    """Whether a delta of the consent stamped with snapshot ``epoch`` was matched."""
    records = await pipeline.read_topic(pipeline.runtime.topics.deliveries, 1)
    heads = (pipeline.runtime.codec.delivery_head(record.value) for record in records)
    return any(
        head is not None and head["consent_id"] == consent_id and head["snapshot_epoch"] == epoch
        for head in heads
    )


def _complete(pipeline: Pipeline, consent_id: str, epoch: int) -> bool:
    snapshot = pipeline.receiver.snapshot(consent_id)
    return snapshot is not None and snapshot.epoch == epoch and snapshot.complete


async def test_a_consent_granted_while_changes_stream_gets_snapshot_then_exact_deltas(
    pipeline: Pipeline,
) -> None:
    stream = Stream(pipeline, "snapshot-user-1")
    # The user has history before the grant; changes keep coming while the snapshot is
    # taken and after it.
    await stream.run(STREAM_BATCHES // 2)
    consent = await stream.grant_with_snapshot()
    during = await stream.run_while(
        lambda: published_snapshot(pipeline, consent.consent_id, 1) is None
    )
    await stream.run(STREAM_BATCHES // 2)

    assert during > 0
    await assert_handed_over_exactly(pipeline, stream, consent.consent_id, epoch=1)
    # Deltas dropped because the snapshot held them were counted, not lost.
    assert pipeline.worker.stats.snapshots_delivered >= 1


async def test_a_resync_replaces_the_copy_and_continues_exactly(pipeline: Pipeline) -> None:
    stream = Stream(pipeline, "snapshot-user-2")
    await stream.run(5)
    consent = await stream.grant_with_snapshot()
    await stream.run(5)
    await assert_handed_over_exactly(pipeline, stream, consent.consent_id, epoch=1)

    async def resync() -> None:
        await asyncio.to_thread(TransferStore(pipeline.engine).request_snapshot, consent.consent_id)

    await stream.run(STREAM_BATCHES // 3)
    await resync()
    await stream.run_while(lambda: published_snapshot(pipeline, consent.consent_id, 2) is None)
    await stream.run(STREAM_BATCHES // 2)
    await assert_handed_over_exactly(pipeline, stream, consent.consent_id, epoch=2)


async def test_a_resync_asked_again_before_its_snapshot_is_built_loses_nothing(
    pipeline: Pipeline, builder: Builder
) -> None:
    # An app retrying its resync while no builder has taken it yet, with changes in between:
    # before, the second request cancelled the first snapshot for a new epoch, and the deltas
    # stamped with the first epoch held the consent's lane for pages that never came.
    stream = Stream(pipeline, "snapshot-user-4")
    await stream.run(5)
    consent = await stream.grant_with_snapshot()
    await stream.run(5)
    await assert_handed_over_exactly(pipeline, stream, consent.consent_id, epoch=1)
    store = TransferStore(pipeline.engine)

    await builder.stop()
    try:
        first = await asyncio.to_thread(store.request_snapshot, consent.consent_id)
        # Until deltas stamped with the first resync's epoch are on the deliveries topic.
        for _ in range(100):
            await stream.run(1)
            if await stamped_with(pipeline, consent.consent_id, first.snapshot_epoch or 0):
                break
        else:
            raise AssertionError("no delta stamped with the first resync's epoch")
        again = await asyncio.to_thread(store.request_snapshot, consent.consent_id)
        await stream.run(STREAM_BATCHES // 3)
    finally:
        builder.start()

    epoch = again.snapshot_epoch or 0
    await stream.run_while(lambda: published_snapshot(pipeline, consent.consent_id, epoch) is None)
    await stream.run(STREAM_BATCHES // 3)
    await assert_handed_over_exactly(pipeline, stream, consent.consent_id, epoch=epoch)
    # Asked again while pending, the resync was the pending snapshot itself.
    assert (again.transfer_id, epoch) == (first.transfer_id, 2)


async def test_a_restarted_worker_knows_the_snapshot_was_delivered(pipeline: Pipeline) -> None:
    stream = Stream(pipeline, "snapshot-user-3")
    await stream.run(5)
    consent = await stream.grant_with_snapshot()
    await stream.run(5)
    await assert_handed_over_exactly(pipeline, stream, consent.consent_id, epoch=1)

    # The new worker never saw the pages: the consent's published hand-over and the group's
    # committed offset past the last page tell it the snapshot was delivered.
    await pipeline.restart_worker()
    await stream.run(10)

    await assert_handed_over_exactly(pipeline, stream, consent.consent_id, epoch=1)
    assert pipeline.worker.stats.snapshots_delivered == 0
    assert pipeline.worker.stats.deltas_delivered > 0
