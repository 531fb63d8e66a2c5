"""The current-state view against the real broker: built, restarted, restored, read."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

from portability.privacy.audience import update_change
from portability.runtime import Runtime
from portability.simulation import ChangeFactory, PlatformPublisher
from portability.transfers import (
    PartitionNotHeldError,
    PartitionStore,
    StateNotReadyError,
    StateView,
    StoredRecord,
    state_path,
)
from portability.transfers.changelog import changelog_key
from portability.wire.headers import SOURCE_OFFSET_HEADER
from portability.wire.records import CATEGORIES, AccountChange, AudienceEntry, ChangeContext
from portability.wire.topics import partition_for_user
from waiting import wait_until

from .helpers import (
    ends_per_partition,
    expected_state,
    of_user,
    publish,
    running_view,
    snapshot_state,
    wait_applied,
)

USERS = [f"user{i:02d}" for i in range(8)]
ALL = list(CATEGORIES)


def stream(factory: ChangeFactory, rounds: int) -> list[AccountChange]:
    """Changes of every category for every user; the factory deletes about one in ten."""
    return [
        factory.random_change(user, category)
        for _ in range(rounds)
        for user in USERS
        for category in CATEGORIES
    ]


def profile_delete(user: str) -> AccountChange:
    """The factory never deletes a profile; the platform can (an account's profile wiped)."""
    return {
        "change_id": f"chg-delete-profile-{user}",
        "user_id": user,
        "category": "profile",
        "operation": "delete",
        "record_id": "profile",
        "occurred_at": datetime.now(UTC),
        "record": None,
    }


def view_state(view: StateView, users: list[str]) -> dict[Any, Any]:
    state: dict[Any, Any] = {}
    for user in users:
        with view.snapshot(user, ALL) as snapshot:
            state.update(snapshot_state(snapshot))
    return state


async def test_view_in_its_group_holds_the_platform_state_record_by_record(
    runtime: Runtime,
) -> None:
    factory = ChangeFactory(USERS, seed=11)
    changes = stream(factory, rounds=6)
    changes += [profile_delete(USERS[0]), profile_delete(USERS[1])]
    changes += stream(factory, rounds=2)  # a deleted profile comes back for some users
    deletes = {c["category"] for c in changes if c["operation"] == "delete"}
    assert deletes == set(CATEGORIES), "the stream deletes records of every category"
    await publish(runtime, changes)
    publisher = PlatformPublisher(runtime)
    await publisher.start()
    await publisher.publish_raw(USERS[2], b"not avro at all")
    await publisher.stop()
    ends = ends_per_partition(changes, runtime.settings.partitions)
    ends[_partition(runtime, USERS[2])] += 1

    async with running_view(runtime) as view:
        await wait_applied(view, ends, timeout_s=60)
        await wait_until(lambda: view.caught_up, "view caught up")

        assert view_state(view, USERS) == expected_state(changes)
        # Not framed: the matcher's to dead-letter; the view skips it without a second letter.
        assert view.intake.stats.skipped_at_door == {"not_framed": 1}
        assert view.intake.stats.dead_lettered == 0
        assert view.stats.source_records_read == len(changes) + 1
        assert view.held_partitions == list(range(runtime.settings.partitions))
    committed = await _committed(runtime, runtime.settings.state_group)
    assert committed == ends, "the group's offsets follow the view (for lag monitoring)"


def _partition(runtime: Runtime, user: str) -> int:
    return partition_for_user(user, runtime.settings.partitions)


async def _committed(runtime: Runtime, group: str) -> dict[int, int | None]:
    consumer = runtime.kafka.group_consumer(group, "test-committed")
    await consumer.start()
    try:
        result: dict[int, int | None] = {}
        for partition in range(runtime.settings.partitions):
            tp = TopicPartition(runtime.topics.account_changes, partition)
            result[partition] = await consumer.committed(tp)
        return result
    finally:
        await consumer.stop()


async def test_restart_resumes_from_the_stored_offset_without_rereading(
    runtime: Runtime,
) -> None:
    partitions = list(range(runtime.settings.partitions))
    factory = ChangeFactory(USERS, seed=12)
    first = stream(factory, rounds=4)
    await publish(runtime, first)
    async with running_view(runtime, partitions) as view:
        await wait_applied(view, ends_per_partition(first, len(partitions)))
        assert view.stats.source_records_read == len(first)

    second = stream(factory, rounds=2)
    await publish(runtime, second)
    async with running_view(runtime, partitions) as view:
        await wait_applied(view, ends_per_partition(first + second, len(partitions)))

        # Only the new changes were read, and nothing from the changelog.
        assert view.stats.source_records_read == len(second)
        assert view.stats.changelog_records_read == 0
        assert view_state(view, USERS) == expected_state(first + second)


async def test_new_instance_without_files_restores_from_the_changelog(
    runtime: Runtime, tmp_path: Path
) -> None:
    partitions = list(range(runtime.settings.partitions))
    factory = ChangeFactory(USERS, seed=13)
    first = stream(factory, rounds=4)
    await publish(runtime, first)
    async with running_view(runtime, partitions, data_dir=tmp_path / "a") as view:
        await wait_applied(view, ends_per_partition(first, len(partitions)))
        written = view.stats.changelog_records_written

    async with running_view(runtime, partitions, data_dir=tmp_path / "b") as view:
        await wait_until(lambda: view.ready, "restored view ready")

        assert view.stats.changelog_records_read == written
        assert view.stats.source_records_read == 0, "account.changes was not re-read"
        assert view_state(view, USERS) == expected_state(first)

        second = stream(factory, rounds=1)
        await publish(runtime, second)
        await wait_applied(view, ends_per_partition(first + second, len(partitions)))
        assert view.stats.source_records_read == len(second)
        assert view_state(view, USERS) == expected_state(first + second)


async def test_crash_after_the_changelog_write_catches_up_from_the_changelog(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch acknowledged by the changelog but never committed to the file is not lost."""
    partitions = [0]
    user = next(u for u in USERS if _partition(runtime, u) == 0)
    factory = ChangeFactory([user], seed=14)
    first = [factory.random_change(user, c) for _ in range(3) for c in CATEGORIES]
    await publish(runtime, first)
    async with running_view(runtime, partitions) as view:
        await view.wait_applied(0, len(first), 30)

    second = [factory.random_change(user, c) for c in CATEGORIES]
    await publish(runtime, second)

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("simulated crash before the file's commit")

    view = StateView(runtime, "test-state", partitions=partitions)
    monkeypatch.setattr(PartitionStore, "apply", crash)
    await view.start()
    task = asyncio.create_task(view.run())
    waiter = asyncio.create_task(view.wait_applied(0, 10**6, 60))
    with pytest.raises(RuntimeError, match="simulated crash"):
        await asyncio.wait_for(task, 30)
    with pytest.raises(StateNotReadyError, match="simulated crash"):
        await asyncio.wait_for(waiter, 5)  # told at once, not at its timeout
    written = view.stats.changelog_records_written
    assert written == len(second) + 1, "the batch and its checkpoint reached the changelog"
    await view.stop()
    monkeypatch.undo()

    async with running_view(runtime, partitions) as view:
        await wait_until(lambda: view.ready, "view ready")
        # The file caught up with the batch from the changelog, not from account.changes.
        assert view.stats.changelog_records_read == written
        assert view.position(0) is not None
        assert view.position(0).offset == len(first) + len(second)  # type: ignore[union-attr]
        assert view.stats.source_records_read == 0
        assert view_state(view, [user]) == expected_state(first + second)


async def test_unfinished_changelog_batch_is_ignored_until_the_source_passes_it(
    runtime: Runtime, tmp_path: Path
) -> None:
    """Records after the last checkpoint (a writer died mid-batch) are never applied."""
    user = next(u for u in USERS if _partition(runtime, u) == 0)
    factory = ChangeFactory([user], seed=15)
    first = [factory.random_change(user, c) for c in CATEGORIES]
    await publish(runtime, first)
    async with running_view(runtime, [0], data_dir=tmp_path / "a") as view:
        await view.wait_applied(0, len(first), 30)

    # The dead writer got one record of the next batch (source offset len(first)) out.
    producer = runtime.kafka.producer("test-dead-writer")
    await producer.start()
    await producer.send_and_wait(
        runtime.topics.state_changelog,
        b'{"occurred_at":"2020-01-01T00:00:00.000Z","change_id":"ghost","record":{"x":1}}',
        key=changelog_key(user, "post", "post_ghost"),
        partition=0,
        headers=[(SOURCE_OFFSET_HEADER, str(len(first)).encode())],
    )
    await producer.stop()

    async with running_view(runtime, [0], data_dir=tmp_path / "b") as view:
        await wait_until(lambda: view.held_partitions == [0], "partition restored")
        assert not view.ready, "not consistent before the source passes the unfinished batch"
        with pytest.raises(StateNotReadyError):
            view.snapshot(user, ALL)

        second = [factory.random_change(user, "post")]
        await publish(runtime, second)
        await view.wait_applied(0, len(first) + 1, 30)

        assert view.ready
        assert view_state(view, [user]) == expected_state(first + second)


async def test_a_file_ahead_of_a_recreated_changelog_is_rebuilt(
    runtime: Runtime, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    user = next(u for u in USERS if _partition(runtime, u) == 0)
    factory = ChangeFactory([user], seed=16)
    changes = [factory.random_change(user, c) for c in CATEGORIES]
    await publish(runtime, changes)
    async with running_view(runtime, [0], data_dir=tmp_path / "a") as view:
        await view.wait_applied(0, len(changes), 30)
    # A file from another life of the changelog: confirmed far beyond its end, holding a
    # record no change of this history ever made.
    path = state_path(tmp_path / "b", runtime.topics.account_changes, 0)
    store = PartitionStore.open(path, runtime.topics.account_changes, 0)
    ghost = StoredRecord(user, "post", "post_ghost", "{}", "2020-01-01T00:00:00.000Z", "g", 0)
    store.apply([ghost], next_offset=0, changelog_offset=10_000)
    store.close()

    async with running_view(runtime, [0], data_dir=tmp_path / "b") as view:
        await view.wait_applied(0, len(changes), 30)

        assert view_state(view, [user]) == expected_state(changes)
    assert "rebuilding it from the changelog" in caplog.text


async def test_snapshot_is_exactly_the_changes_before_its_position(runtime: Runtime) -> None:
    """An open snapshot keeps its state and position while later changes are applied."""
    user = next(u for u in USERS if _partition(runtime, u) == 1)
    factory = ChangeFactory([user], seed=17)
    changes = [factory.random_change(user, c) for _ in range(5) for c in CATEGORIES]
    await publish(runtime, changes)
    async with running_view(runtime, [1]) as view:
        await view.wait_applied(1, len(changes), 30)
        older = view.snapshot(user, ALL)
        more = [factory.random_change(user, c) for _ in range(3) for c in CATEGORIES]
        await publish(runtime, more)
        await view.wait_applied(1, len(changes) + len(more), 30)

        with older:
            assert older.position.offset == len(changes)
            # Offsets of a fresh partition count its changes: those before the position.
            assert snapshot_state(older) == expected_state(changes[: older.position.offset])
        with view.snapshot(user, ALL) as newer:
            assert newer.position.offset == len(changes) + len(more)
            assert snapshot_state(newer) == expected_state(changes + more)
        with view.snapshot(user, ["post", "follow"]) as granted:
            assert snapshot_state(granted) == of_user(
                expected_state(changes + more), user, ["post", "follow"]
            )


async def test_partition_held_elsewhere_and_waits_that_time_out(runtime: Runtime) -> None:
    elsewhere = next(u for u in USERS if _partition(runtime, u) != 0)
    async with running_view(runtime, [0]) as view:
        await wait_until(lambda: view.ready, "view ready")
        with pytest.raises(PartitionNotHeldError) as raised:
            view.snapshot(elsewhere, ALL)
        assert raised.value.partition == _partition(runtime, elsewhere)
        assert view.position(1) is None

        with pytest.raises(TimeoutError, match=r"not applied up to offset 5 .* at offset 0"):
            await view.wait_applied(0, 5, 0.3)


async def test_what_is_no_users_record_is_left_out_and_context_is_kept(runtime: Runtime) -> None:
    """The matcher's audience updates and off-platform shares never become records."""
    user = USERS[0]
    now = datetime.now(UTC)
    activity = {"kind": "share", "post_id": "post_9", "post_owner_id": USERS[1], "text": None}
    private: ChangeContext = {
        "actor_private": True,
        "shares_visible": False,
        "off_platform": False,
        "activity": None,
    }
    kept: AccountChange = {
        "change_id": "chg-kept",
        "user_id": user,
        "category": "activity",
        "operation": "upsert",
        "record_id": "activity_kept",
        "occurred_at": now,
        "record": {**activity, "share_target": "chat"},
        "context": private,
    }
    off_platform: AccountChange = {
        **kept,
        "change_id": "chg-off",
        "record_id": "activity_off",
        "record": {**activity, "share_target": None},
        "context": {**private, "off_platform": True},
    }
    entry: AudienceEntry = {
        "post_owner_id": USERS[1],
        "post_id": "post_9",
        "kind": "share",
        "delta": 1,
        "source_offset": 0,
        "occurred_at": now,
    }
    changes = [kept, off_platform, update_change(0, [entry])]
    await publish(runtime, changes)

    async with running_view(runtime, list(range(runtime.settings.partitions))) as view:
        await wait_applied(view, ends_per_partition(changes, runtime.settings.partitions))

        with view.snapshot(user, ALL) as snapshot:
            records = list(snapshot)
        assert [r.record_id for r in records] == ["activity_kept"]
        assert records[0].context() == private
        assert view.stats.changes_ignored == 1  # the off-platform share
        # The update, published here like a platform change (keyed by its empty user id,
        # without the matcher's header), fails the door: the matcher letters it.
        assert view.intake.stats.skipped_at_door == {"no_key": 1}
        assert view.stats.changes_applied == 1


async def test_source_end_is_the_exact_end_so_a_wait_covers_every_published_change(
    runtime: Runtime,
) -> None:
    user = next(u for u in USERS if _partition(runtime, u) == 2)
    factory = ChangeFactory([user], seed=19)
    # One produce batch: the embedded broker's ListOffsets answers its start + 1, not its end.
    changes = [factory.random_change(user, c) for _ in range(4) for c in CATEGORIES]
    async with running_view(runtime, [0, 2]) as view:
        assert await view.source_end(0) == 0
        await publish(runtime, changes)

        end = await view.source_end(2)
        assert end == len(changes)
        await view.wait_applied(2, end, 30)
        with view.snapshot(user, ALL) as snapshot:
            assert snapshot_state(snapshot) == expected_state(changes)
