"""The actor's side of audience figures: an account starts and stops counting once, whatever
its number of activities, edits, settings and replays; and its state survives a checkpoint."""

from __future__ import annotations

from typing import Any

import pytest

from portability.privacy import ActivityLedger, load_policy
from portability.simulation import ChangeFactory, UserSettings
from portability.wire import AvroCodec, InProcessSchemaRegistry, SchemaName
from portability.wire.records import AccountChange, AudienceEntry, MatcherCheckpoint

POLICY = load_policy()


@pytest.fixture
async def codec() -> AvroCodec:
    started = AvroCodec(InProcessSchemaRegistry())
    await started.start()
    return started


def deltas(ledger: ActivityLedger, changes: list[AccountChange], first: int = 0) -> list[int]:
    """The entries' deltas the changes give, at offsets from ``first``."""
    entries = [ledger.apply(POLICY, change, first + i) for i, change in enumerate(changes)]
    return [entry["delta"] for entry in entries if entry is not None]


def test_an_account_starts_counting_once_and_stops_with_its_last_activity() -> None:
    factory = ChangeFactory(["fan", "creator"], seed=1)
    ledger = ActivityLedger()
    views = [factory.activity("fan", "view", "p", "creator") for _ in range(3)]
    assert deltas(ledger, views) == [1]  # three views, one account
    assert len(ledger) == 1
    removals = [factory.remove_activity("fan", view["record_id"]) for view in views]
    assert deltas(ledger, removals[:2]) == []  # one view left: still counts
    assert deltas(ledger, removals[2:]) == [-1]
    assert len(ledger) == 0  # nothing kept for an account that no longer counts
    assert ledger.checkpoint() is None


def test_kinds_and_posts_count_apart() -> None:
    factory = ChangeFactory(["fan", "creator"], seed=2)
    ledger = ActivityLedger()
    changes = [
        factory.activity("fan", "view", "p1", "creator"),
        factory.activity("fan", "share", "p1", "creator"),
        factory.activity("fan", "view", "p2", "creator"),
        factory.activity("fan", "share", "p1", "creator"),
    ]
    entries = [ledger.apply(POLICY, change, i) for i, change in enumerate(changes)]
    assert [(e["post_id"], e["kind"]) for e in entries if e is not None] == [
        ("p1", "view"),
        ("p1", "share"),
        ("p2", "view"),
    ]


def test_an_edit_or_a_change_read_again_counts_nothing_twice() -> None:
    factory = ChangeFactory(["fan", "creator"], seed=3)
    ledger = ActivityLedger()
    share = factory.activity("fan", "share", "p", "creator")
    edits = [factory.edit_activity("fan", share["record_id"]) for _ in range(3)]
    assert deltas(ledger, [share, share, *edits, share]) == [1]
    assert ledger.counted("fan", "creator", "p", "share") == {share["record_id"]}


def test_an_edit_under_settings_that_no_longer_count_stops_the_account() -> None:
    factory = ChangeFactory(["fan", "creator"], seed=4)
    ledger = ActivityLedger()
    first = factory.activity("fan", "share", "p", "creator")
    second = factory.activity("fan", "share", "p", "creator")
    assert deltas(ledger, [first, second]) == [1]
    factory.set_settings("fan", UserSettings(shares_visible=False))
    assert deltas(ledger, [factory.edit_activity("fan", first["record_id"])]) == []
    assert deltas(ledger, [factory.edit_activity("fan", second["record_id"])]) == [-1]
    # Their removals, of records that no longer count, change nothing.
    removals = [factory.remove_activity("fan", r["record_id"]) for r in (first, second)]
    assert deltas(ledger, removals) == []


def test_settings_apply_as_they_were_when_each_activity_was_made() -> None:
    factory = ChangeFactory(["fan", "creator"], seed=5)
    ledger = ActivityLedger()
    public = factory.activity("fan", "view", "p", "creator")
    factory.set_settings("fan", UserSettings(private=True))
    private = factory.activity("fan", "view", "p", "creator")
    assert deltas(ledger, [public, private]) == [1]
    assert ledger.counted("fan", "creator", "p", "view") == {public["record_id"]}
    # Removing the public view stops the account: its private view never counted.
    assert deltas(ledger, [factory.remove_activity("fan", public["record_id"])]) == [-1]
    assert deltas(ledger, [factory.remove_activity("fan", private["record_id"])]) == []


def test_what_never_counts() -> None:
    factory = ChangeFactory(["fan", "creator"], seed=6)
    ledger = ActivityLedger()
    changes = [
        factory.activity("fan", "like", "p", "creator"),  # a kind the policy does not count
        factory.activity("fan", "share", "p", "creator", off_platform=True),  # not an event
        factory.activity("creator", "view", "p", "creator"),  # the creator's own post
        factory.random_change("fan", "profile"),
    ]
    assert deltas(ledger, changes) == []
    assert len(ledger) == 0


def test_an_entry_names_the_figure_never_the_actor() -> None:
    factory = ChangeFactory(["fan", "creator"], seed=7)
    entry = ActivityLedger().apply(POLICY, factory.activity("fan", "view", "p", "creator"), 9)
    assert entry is not None
    assert set(entry) == set(AudienceEntry.__annotations__)
    assert "fan" not in {str(value) for value in entry.values()}
    assert (entry["post_owner_id"], entry["post_id"], entry["kind"], entry["delta"]) == (
        "creator",
        "p",
        "view",
        1,
    )
    assert entry["source_offset"] == 9


async def test_the_ledger_survives_a_checkpoint_and_replays_the_same_entries(
    codec: AvroCodec,
) -> None:
    factory = ChangeFactory(["a", "b", "creator"], seed=8)
    ledger = ActivityLedger()
    before = [
        factory.activity("a", "view", "p", "creator"),
        factory.activity("a", "view", "p", "creator"),
        factory.activity("b", "share", "q", "creator"),
    ]
    deltas(ledger, before)
    checkpoint: MatcherCheckpoint = {
        "source_partition": 0,
        "next_offset": 3,
        "sequences": {},
        "written_at": before[0]["occurred_at"],
        "audience": None,
        "counted_activity": ledger.checkpoint(),
    }
    decoded: Any = codec.decode(
        SchemaName.MATCHER_CHECKPOINT, codec.encode(SchemaName.MATCHER_CHECKPOINT, dict(checkpoint))
    )
    restored = ActivityLedger.restore(decoded["counted_activity"])
    assert restored.checkpoint() == ledger.checkpoint()
    after = [
        factory.remove_activity("a", before[0]["record_id"]),
        factory.remove_activity("a", before[1]["record_id"]),
        factory.activity("b", "share", "q", "creator"),
        factory.activity("b", "view", "q", "creator"),
    ]
    # The batch after the checkpoint, matched by the original and again after a crash by a
    # matcher that restored the checkpoint: the same entries at the same offsets.
    first = [ledger.apply(POLICY, change, 3 + i) for i, change in enumerate(after)]
    again = [restored.apply(POLICY, change, 3 + i) for i, change in enumerate(after)]
    assert first == again
    assert [e["delta"] for e in first if e is not None] == [-1, 1]


def test_a_checkpoint_keeps_only_accounts_that_count() -> None:
    factory = ChangeFactory(["a", "creator"], seed=9)
    ledger = ActivityLedger()
    view = factory.activity("a", "view", "p", "creator")
    shares = [factory.activity("a", "share", "p", "creator") for _ in range(2)]
    deltas(ledger, [view, *shares, factory.remove_activity("a", view["record_id"])])
    assert ledger.checkpoint() == [
        {
            "actor_id": "a",
            "post_owner_id": "creator",
            "post_id": "p",
            "kind": "share",
            "record_ids": sorted(share["record_id"] for share in shares),
        }
    ]
    assert ActivityLedger.restore(None).checkpoint() is None
