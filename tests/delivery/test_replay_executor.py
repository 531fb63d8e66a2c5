"""The replay executor on a real broker, posting to the reference receiver over HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from portability.broker import EmbeddedBroker
from portability.consent.errors import NotFoundError
from portability.consent.replays import ReplayInProgressError, ReplayStore
from portability.consent.transfer_requests import SnapshotFacts, TransferStore
from portability.delivery.errors import ReplayRefusedError, ReplayUnavailableError
from portability.delivery.replay import INTERRUPTED_BY_RESTART, Replayer
from replay_harness import FAST_RETRY, WAIT_S, ReplayStack, delivery, replay_stack, wait_until


@pytest.fixture
async def stack(broker: EmbeddedBroker, tmp_path: Path) -> AsyncIterator[ReplayStack]:
    async with replay_stack(broker, tmp_path, delivery_max_batch=2) as running:
        yield running


async def test_replays_the_consents_deltas_from_a_sequence_in_batches(stack: ReplayStack) -> None:
    app = stack.register("app-r1")
    consent = stack.grant("app-r1")
    neighbour = stack.grant_in_partition("app-r1", stack.partition_of(consent), same=True)
    elsewhere = stack.grant_in_partition("app-r1", stack.partition_of(consent), same=False)
    wanted = [delivery(consent, app.app_id, sequence) for sequence in range(1, 8)]
    for sequence in range(1, 8):
        await stack.produce([wanted[sequence - 1], delivery(neighbour, app.app_id, sequence)])
    await stack.produce([delivery(elsewhere, app.app_id, 1)])
    # A change matched again after a matcher restart (same id and sequence), and a record
    # that cannot be decoded (the worker dead-lettered it): neither is posted.
    await stack.produce([wanted[4]])
    await stack.produce_raw(consent, b"\x00\x00\x00\x00\x63not avro")

    view = await stack.replayer.submit(consent, "app", from_sequence=3)
    done = await stack.replayer.wait(view.replay_id)

    assert (done.state, done.last_error) == ("done", None)
    assert stack.sequences(consent) == [3, 4, 5, 6, 7]
    assert {d.id for d in stack.receiver.deltas(consent)} == {
        record["delta_id"] for record in wanted[2:]
    }
    assert stack.receiver.consent_ids() == [consent]
    assert (done.deltas_found, done.deltas_sent, done.requests) == (5, 5, 3)  # batches of 2
    assert (done.first_sequence, done.last_sequence) == (3, 7)
    assert done.started_at is not None
    assert done.finished_at is not None
    stats = stack.receiver.stats()
    assert (stats.verification_failures, stats.duplicates) == (0, 0)


async def test_since_replays_what_was_produced_from_that_time(stack: ReplayStack) -> None:
    app = stack.register("app-r2")
    consent = stack.grant("app-r2")
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    old = [delivery(consent, app.app_id, s, matched_at=hour_ago) for s in (1, 2, 3)]
    await stack.produce(old, timestamp_ms=int(hour_ago.timestamp() * 1000) + 5)
    await stack.produce([delivery(consent, app.app_id, s) for s in (4, 5)])

    view = await stack.replayer.submit(
        consent, "operator", since=datetime.now(UTC) - timedelta(minutes=30)
    )
    done = await stack.replayer.wait(view.replay_id)

    assert done.state == "done"
    assert stack.sequences(consent) == [4, 5]
    assert done.deltas_found == 2


async def test_nothing_to_replay_is_done_with_nothing_found(stack: ReplayStack) -> None:
    app = stack.register("app-r3")
    empty = stack.grant("app-r3")
    consent = stack.grant("app-r3")
    await stack.produce([delivery(consent, app.app_id, s) for s in (1, 2)])

    nothing_yet = await stack.replayer.wait(
        (await stack.replayer.submit(empty, "app", from_sequence=1)).replay_id
    )
    beyond = await stack.replayer.wait(
        (await stack.replayer.submit(consent, "app", from_sequence=9)).replay_id
    )

    for view in (nothing_yet, beyond):
        assert (view.state, view.deltas_found, view.requests) == ("done", 0, 0)
    assert stack.receiver.stats().requests == 0


async def test_a_refusing_endpoint_fails_the_replay_with_the_reason(stack: ReplayStack) -> None:
    # The webhook path names an app the receiver does not know: it answers 404, retried as
    # every non-2xx is (FAST_RETRY: 3 attempts), then the replay fails with the reason.
    app = stack.register("app-r4", webhook_app_id="nobody")
    consent = stack.grant(app.app_id)
    await stack.produce([delivery(consent, app.app_id, s) for s in (1, 2, 3)])

    done = await stack.replayer.wait(
        (await stack.replayer.submit(consent, "app", from_sequence=1)).replay_id
    )

    assert done.state == "failed"
    assert done.last_error is not None
    assert "HTTP 404" in done.last_error
    assert "sequences 1-2" in done.last_error
    assert (done.deltas_found, done.deltas_sent, done.requests) == (2, 0, FAST_RETRY.attempts)


async def test_retriable_failures_are_retried_and_one_replay_runs_per_consent(
    stack: ReplayStack,
) -> None:
    app = stack.register("app-r5")
    consent = stack.grant(app.app_id)
    await stack.produce([delivery(consent, app.app_id, s) for s in (1, 2)])
    stack.receiver.fail_next(2, 503, retry_after=0.3)

    view = await stack.replayer.submit(consent, "app", from_sequence=1)
    with pytest.raises(ReplayInProgressError) as refused:
        await stack.replayer.submit(consent, "app", from_sequence=1)
    done = await stack.replayer.wait(view.replay_id)

    assert refused.value.replay_id == view.replay_id
    assert (done.state, done.requests, done.deltas_sent) == ("done", 3, 2)
    assert done.last_error is not None
    assert "HTTP 503" in done.last_error  # the failure it retried past
    assert stack.sequences(consent) == [1, 2]


async def test_a_revocation_during_the_replay_stops_it(stack: ReplayStack) -> None:
    app = stack.register("app-r6")
    consent = stack.grant(app.app_id)
    await stack.produce([delivery(consent, app.app_id, s) for s in range(1, 7)])
    # The first batch waits out a 503; the consent is revoked meanwhile.
    stack.receiver.fail_next(1, 503, retry_after=0.5)

    view = await stack.replayer.submit(consent, "app", from_sequence=1)
    await wait_until(lambda: stack.receiver.stats().injected_failures == 1, "first attempt", WAIT_S)
    stack.service.revoke(consent)
    done = await stack.replayer.wait(view.replay_id)

    assert done.state == "failed"
    assert done.last_error is not None
    assert "revoked" in done.last_error
    assert stack.sequences(consent) == [1, 2]  # the batch already on its way, nothing after


async def test_inactive_consents_and_disabled_apps_are_refused(stack: ReplayStack) -> None:
    app = stack.register("app-r7")
    revoked = stack.grant(app.app_id)
    stack.service.revoke(revoked)
    other = stack.grant(app.app_id)
    stack.service.set_app_enabled(app.app_id, False)  # ends its consents (app_disabled)

    with pytest.raises(ReplayRefusedError) as inactive:
        await stack.replayer.submit(revoked, "app", from_sequence=1)
    with pytest.raises(ReplayRefusedError) as disabled:
        await stack.replayer.submit(other, "app", from_sequence=1)
    with pytest.raises(NotFoundError):
        await stack.replayer.submit("cns_unknown", "app", from_sequence=1)

    assert inactive.value.code == "consent_not_active"
    assert "revoked" in str(inactive.value)
    assert disabled.value.code == "consent_not_active"
    assert "app_disabled" in str(disabled.value)


async def test_without_kafka_nothing_is_replayed(stack: ReplayStack) -> None:
    app = stack.register("app-r8")
    consent = stack.grant(app.app_id)
    offline = Replayer(stack.settings, stack.engine, None)
    await offline.start()
    try:
        with pytest.raises(ReplayUnavailableError, match="replay needs Kafka"):
            await offline.submit(consent, "app", from_sequence=1)
    finally:
        await offline.stop()


async def test_a_restart_fails_what_was_left_unfinished(stack: ReplayStack) -> None:
    app = stack.register("app-r9")
    consent = stack.grant(app.app_id)
    store = ReplayStore(stack.engine)
    left = store.create(consent, "app", from_sequence=1)
    store.start(left.replay_id)

    restarted = Replayer(stack.settings, stack.engine, None)
    started = time.monotonic()
    await restarted.start()
    await restarted.stop()

    view = store.get(left.replay_id)
    assert (view.state, view.last_error) == ("failed", INTERRUPTED_BY_RESTART)
    assert view.finished_at is not None
    assert time.monotonic() - started < 5


async def test_stopping_fails_the_replays_it_was_running(stack: ReplayStack) -> None:
    app = stack.register("app-r10")
    consent, bystander = stack.grant(app.app_id), stack.grant(app.app_id)
    await stack.produce([delivery(consent, app.app_id, 1)])
    stack.receiver.fail_next(1, 503, retry_after=30)  # holds the replay in its retry wait
    running = await stack.replayer.submit(consent, "app", from_sequence=1)
    # Another process's replay (same store): stopping this one must leave it alone.
    elsewhere = ReplayStore(stack.engine).create(bystander, "app", from_sequence=1)
    await wait_until(lambda: stack.receiver.stats().injected_failures == 1, "first attempt", WAIT_S)

    await stack.replayer.stop()

    stopped = stack.replayer.store.get(running.replay_id)
    assert stopped.state == "failed"
    assert stopped.last_error is not None
    assert "the API stopped" in stopped.last_error
    assert stack.replayer.store.get(elsewhere.replay_id).state == "pending"


async def test_a_replay_leaves_out_what_the_consents_snapshot_holds(stack: ReplayStack) -> None:
    app = stack.register("app-r9")
    consent = stack.service.grant(
        "u9", "app-r9", ["all"], user_region="DE", initial_snapshot=True
    ).consent_id
    transfers = TransferStore(stack.engine)
    [snapshot] = transfers.claim()
    published = SnapshotFacts(
        position=5, partition=0, last_page_offset=0, record_count=4, pages=1, policy_version="v"
    )
    transfers.mark_snapshot_published(snapshot.transfer_id, published)
    # Deltas of changes at source offsets 2..8: the snapshot holds those before 5.
    records = []
    for sequence, source_offset in enumerate(range(2, 9), start=1):
        record = delivery(consent, app.app_id, sequence, user_id="u9")
        record.update({"source_offset": source_offset, "snapshot_epoch": 1})
        records.append(record)
    await stack.produce(records)

    view = await stack.replayer.submit(consent, "app", from_sequence=1)
    done = await stack.replayer.wait(view.replay_id)

    assert done.state == "done"
    assert stack.sequences(consent) == [4, 5, 6, 7]  # source offsets 5, 6, 7, 8
