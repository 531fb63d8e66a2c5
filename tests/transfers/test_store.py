"""The view's storage and changelog format, without a broker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from portability.simulation import ChangeFactory
from portability.transfers import (
    Deletion,
    PartitionStore,
    Snapshot,
    StateStoreError,
    StoredRecord,
    state_path,
)
from portability.transfers.changelog import (
    CHECKPOINT_KEY,
    ChangelogCheckpoint,
    ChangelogFormatError,
    changelog_key,
    decode_changelog,
    encode_change,
    encode_checkpoint,
)
from portability.transfers.render import render_record, state_change
from portability.transfers.store import Position
from portability.wire.records import CATEGORIES, ChangeContext, with_record_type

from .helpers import expected_state, snapshot_state

TOPIC = "t.account.changes"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PartitionStore]:
    opened = PartitionStore.open(state_path(tmp_path, TOPIC, 0), TOPIC, 0)
    yield opened
    opened.close()


def record(record_id: str, offset: int, user: str = "u1", category: str = "post") -> StoredRecord:
    text = json.dumps({"n": offset})
    return StoredRecord(
        user, category, record_id, text, "2026-01-01T00:00:00.000Z", f"chg{offset}", offset
    )


def test_changes_apply_in_order_with_their_position(store: PartitionStore) -> None:
    factory = ChangeFactory(["u1", "u2"], seed=3)
    users = ("u1", "u2")
    changes = [factory.random_change(u, c) for _ in range(20) for u in users for c in CATEGORIES]
    store.apply([state_change(c, i) for i, c in enumerate(changes)], len(changes), 7)

    assert (store.next_offset, store.changelog_offset) == (len(changes), 7)
    for user in ("u1", "u2"):
        with Snapshot(store.path, user, list(CATEGORIES)) as snapshot:
            assert snapshot.position == Position(TOPIC, 0, len(changes))
            assert snapshot_state(snapshot) == {
                key: value for key, value in expected_state(changes).items() if key[0] == user
            }


def test_within_one_batch_the_last_change_of_a_record_wins(store: PartitionStore) -> None:
    store.apply([record("a", 0), Deletion("u1", "post", "a", 1), record("b", 2)], 3, 1)
    store.apply([record("b", 3), Deletion("u1", "post", "b", 4), record("a", 5)], 6, 2)

    with Snapshot(store.path, "u1", ["post"]) as snapshot:
        assert [(r.record_id, r.source_offset) for r in snapshot] == [("a", 5)]


def test_an_open_snapshot_keeps_its_state_while_batches_are_applied(
    store: PartitionStore,
) -> None:
    store.apply([record("a", 0), record("b", 1)], 2, 1)
    older = Snapshot(store.path, "u1", ["post"])
    store.apply([Deletion("u1", "post", "a", 2), record("c", 3)], 4, 2)

    with older:
        assert older.position.offset == 2
        assert [r.record_id for r in older] == ["a", "b"]
    with Snapshot(store.path, "u1", ["post"]) as newer:
        assert newer.position.offset == 4
        assert [r.record_id for r in newer] == ["b", "c"]


def test_uncommitted_writes_are_invisible_and_rolled_back(store: PartitionStore) -> None:
    store.apply([record("a", 0)], 1, 1)
    store.write([record("b", 1)])
    with Snapshot(store.path, "u1", ["post"]) as snapshot:
        assert [r.record_id for r in snapshot] == ["a"]
    store.rollback()
    store.commit(2, 2)

    with Snapshot(store.path, "u1", ["post"]) as snapshot:
        assert [r.record_id for r in snapshot] == ["a"]
        assert snapshot.position.offset == 2


def test_position_survives_reopening(tmp_path: Path) -> None:
    path = state_path(tmp_path, TOPIC, 2)
    first = PartitionStore.open(path, TOPIC, 2)
    first.apply([record("a", 40)], 41, 9)
    first.close()

    again = PartitionStore.open(path, TOPIC, 2)
    try:
        assert (again.next_offset, again.changelog_offset) == (41, 9)
        assert again.record_count() == 1
    finally:
        again.close()


def test_a_file_of_another_partition_or_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = state_path(tmp_path, TOPIC, 1)
    PartitionStore.open(path, TOPIC, 1).close()
    with pytest.raises(StateStoreError, match="holds"):
        PartitionStore.open(path, TOPIC, 2)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateStoreError, match="move it away"):
        PartitionStore.open(garbage, TOPIC, 0)


def test_records_render_as_the_webhook_contract_does() -> None:
    moment = datetime(2026, 11, 23, 9, 41, 7, 123456, tzinfo=UTC)
    rendered = render_record({"-type": "portability.v1.Post", "caption": "é", "created_at": moment})

    assert rendered == '{"caption":"é","created_at":"2026-11-23T09:41:07.123Z"}'
    assert render_record(None) == "null"


@pytest.mark.parametrize(
    ("user", "category", "record_id"),
    [
        ("u1", "post", "post_1"),
        ("a/b", "follow", "x/y%z"),
        ("u%2F", "post", "%25"),
        ("ünï", "profile", "profile"),
    ],
)
def test_changelog_records_read_back_as_written(user: str, category: str, record_id: str) -> None:
    upsert = StoredRecord(
        user, category, record_id, '{"k":"v"}', "2026-01-01T00:00:00.000Z", "c1", 5
    )
    deletion = Deletion(user, category, record_id, 6)

    for change in (upsert, deletion):
        key, value, headers = encode_change(change)
        assert key == changelog_key(user, category, record_id)
        assert decode_changelog(key, value, headers) == change
    assert encode_change(deletion)[1] is None, "a delete is a tombstone"


def test_changelog_checkpoint_and_bad_records() -> None:
    key, value = encode_checkpoint(Position(TOPIC, 3, 120))
    assert key == CHECKPOINT_KEY
    assert decode_changelog(key, value, []) == ChangelogCheckpoint(TOPIC, 3, 120)

    with pytest.raises(ChangelogFormatError):
        decode_changelog(b"no-slashes", b"{}", [("source.offset", b"1")])
    with pytest.raises(ChangelogFormatError):
        decode_changelog(changelog_key("u", "post", "p"), b"{}", [])  # no source offset
    with pytest.raises(ChangelogFormatError):
        decode_changelog(None, b"{}", [])


def test_stored_record_json_is_the_contract_record() -> None:
    factory = ChangeFactory(["u1"], seed=4)
    change = with_record_type(factory.random_change("u1", "post"))
    stored = state_change(change, 0)

    assert isinstance(stored, StoredRecord)
    assert json.loads(stored.record_json) == expected_state([change])[stored.key]["record"]
    assert "-type" not in stored.record_json


def test_the_platform_context_is_kept_beside_the_record_and_in_the_changelog() -> None:
    factory = ChangeFactory(["u1"], seed=5)
    change = factory.random_change("u1", "activity")
    context: ChangeContext = {
        "actor_private": True,
        "shares_visible": False,
        "off_platform": False,
        "activity": None,
    }
    change["context"] = context
    stored = state_change(change, 3)

    assert isinstance(stored, StoredRecord)
    assert stored.context() == context
    assert "actor_private" not in stored.record_json, "the context is never part of the record"
    key, value, headers = encode_change(stored)
    assert decode_changelog(key, value, headers) == stored
