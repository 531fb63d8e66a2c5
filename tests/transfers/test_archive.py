"""Archives: zip layout, contents record by record, manifest, checksums, grant, determinism."""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from portability.privacy import PrivacyPolicy, load_policy
from portability.privacy.engine import apply as apply_policy
from portability.runtime import Runtime
from portability.simulation import ChangeFactory
from portability.transfers import PartitionStore, Snapshot, StoredRecord, state_path, write_archive
from portability.transfers.archive import ARCHIVE_FORMAT, MANIFEST_NAME
from portability.transfers.render import state_change
from portability.wire.records import CATEGORIES, AccountChange

from .helpers import Expected, expected_state, of_user, publish, running_view

TOPIC = "t.account.changes"
USER = "u00000001"
OTHER = "u00000002"
GENERATED = datetime(2026, 11, 23, 10, 2, 13, 500000, tzinfo=UTC)


@pytest.fixture
def changes() -> list[AccountChange]:
    """Changes of two users in every category, with deletes (the factory deletes ~1 in 10)."""
    factory = ChangeFactory([USER, OTHER], seed=21)
    made = [
        factory.random_change(user, category)
        for _ in range(30)
        for user in (USER, OTHER)
        for category in CATEGORIES
    ]
    assert any(c["operation"] == "delete" for c in made)
    return made


@pytest.fixture
def store(tmp_path: Path, changes: list[AccountChange]) -> Iterator[PartitionStore]:
    opened = PartitionStore.open(state_path(tmp_path, TOPIC, 4), TOPIC, 4)
    opened.apply([state_change(c, i) for i, c in enumerate(changes)], len(changes), 1)
    yield opened
    opened.close()


def build(store: PartitionStore, path: Path, categories: list[str], **options: Any) -> Any:
    with Snapshot(store.path, USER, categories) as snapshot:
        return write_archive(snapshot, path, generated_at=GENERATED, **options)


def archive_state(path: Path) -> tuple[list[str], dict[str, Any], Expected]:
    """The zip's entry names, its manifest, and its records keyed like the expected state."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read(MANIFEST_NAME))
        state: Expected = {}
        for name in names:
            if name == MANIFEST_NAME:
                continue
            for item in json.loads(archive.read(name)):
                assert set(item) == {"record_id", "category", "occurred_at", "change_id", "record"}
                key = (USER, item["category"], item["record_id"])
                state[key] = {k: item[k] for k in ("record", "occurred_at", "change_id")}
    return names, manifest, state


def test_archive_holds_the_users_records_as_the_contract_renders_them(
    store: PartitionStore, changes: list[AccountChange], tmp_path: Path
) -> None:
    result = build(store, tmp_path / "out" / "archive.zip", list(CATEGORIES))

    names, manifest, state = archive_state(result.path)
    expected = of_user(expected_state(changes), USER)
    assert names == [f"{c}.json" for c in CATEGORIES] + [MANIFEST_NAME]
    assert state == expected
    assert manifest["record_counts"] == {
        c: sum(1 for key in expected if key[1] == c) for c in CATEGORIES
    }
    assert result.record_counts == manifest["record_counts"]


def test_manifest_states_what_the_archive_is_and_checksums_verify(
    store: PartitionStore, changes: list[AccountChange], tmp_path: Path
) -> None:
    result = build(store, tmp_path / "a.zip", ["post", "profile"], policy_version="2026-11")

    _, manifest, _ = archive_state(result.path)
    assert manifest == result.manifest
    assert manifest["format"] == ARCHIVE_FORMAT
    assert manifest["user_id"] == USER
    assert manifest["categories"] == ["post", "profile"]
    assert manifest["policy_version"] == "2026-11"
    assert manifest["generated_at"] == "2026-11-23T10:02:13.500Z"
    assert manifest["source_positions"] == [
        {"topic": TOPIC, "partition": 4, "next_offset": len(changes)}
    ]
    with zipfile.ZipFile(result.path) as archive:
        for file in manifest["files"]:
            data = archive.read(file["name"])
            assert file["sha256"] == hashlib.sha256(data).hexdigest()
            assert file["size_bytes"] == len(data)
            assert file["records"] == len(json.loads(data))
            assert file["records"] == manifest["record_counts"][file["category"]]
    whole = result.path.read_bytes()
    assert result.size_bytes == len(whole)
    assert result.sha256 == hashlib.sha256(whole).hexdigest()


def test_only_the_granted_categories_are_in_the_archive(
    store: PartitionStore, changes: list[AccountChange], tmp_path: Path
) -> None:
    granted = ["follow", "direct_message"]
    result = build(store, tmp_path / "a.zip", granted)

    names, manifest, state = archive_state(result.path)
    assert names == ["follow.json", "direct_message.json", MANIFEST_NAME]
    assert set(manifest["record_counts"]) == set(granted)
    assert state == of_user(expected_state(changes), USER, granted)
    assert state, "the user has records in the granted categories"


def test_default_policy_version_and_an_empty_category(tmp_path: Path) -> None:
    empty = PartitionStore.open(state_path(tmp_path, TOPIC, 0), TOPIC, 0)
    try:
        result = build(empty, tmp_path / "a.zip", ["post"])
    finally:
        empty.close()

    with zipfile.ZipFile(result.path) as archive:
        assert archive.read("post.json") == b"[]\n"
    assert result.manifest["policy_version"] == "unversioned"
    assert result.manifest["record_counts"] == {"post": 0}
    assert result.manifest["source_positions"][0]["next_offset"] == 0


def test_output_is_deterministic_apart_from_generated_at(
    store: PartitionStore, tmp_path: Path
) -> None:
    first = build(store, tmp_path / "1.zip", list(CATEGORIES))
    again = build(store, tmp_path / "2.zip", list(CATEGORIES))
    with Snapshot(store.path, USER, list(CATEGORIES)) as snapshot:
        later = write_archive(snapshot, tmp_path / "3.zip")  # generated now

    assert first.path.read_bytes() == again.path.read_bytes()
    assert first.sha256 == again.sha256
    assert later.sha256 != first.sha256
    assert [f["sha256"] for f in later.manifest["files"]] == [
        f["sha256"] for f in first.manifest["files"]
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", later.manifest["generated_at"])


def test_unknown_category_is_refused(store: PartitionStore, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown categories"):
        build(store, tmp_path / "a.zip", ["post", "photos"])
    assert not (tmp_path / "a.zip").exists()


def test_a_failed_build_leaves_no_file(
    store: PartitionStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(self: Snapshot, category: str) -> Iterator[StoredRecord]:
        raise OSError("disk full")
        yield  # pragma: no cover - makes this a generator, like the real one

    monkeypatch.setattr(Snapshot, "records", failing)
    with pytest.raises(OSError, match="disk full"):
        build(store, tmp_path / "a.zip", ["post"])
    assert list(tmp_path.glob("a.zip*")) == []


async def test_archive_from_the_live_view(runtime: Runtime, tmp_path: Path) -> None:
    factory = ChangeFactory([USER], seed=22)
    made = [factory.random_change(USER, c) for _ in range(10) for c in CATEGORIES]
    await publish(runtime, made)
    async with running_view(runtime, list(range(runtime.settings.partitions))) as view:
        partition = view.partition_of(USER)
        await view.wait_applied(partition, len(made), 60)
        with view.snapshot(USER, ["post", "activity"]) as snapshot:
            result = write_archive(snapshot, tmp_path / "live.zip", generated_at=GENERATED)

    _, manifest, state = archive_state(result.path)
    assert state == of_user(expected_state(made), USER, ["post", "activity"])
    assert manifest["source_positions"] == [
        {"topic": runtime.topics.account_changes, "partition": partition, "next_offset": len(made)}
    ]


STRICT_POLICY = """
version: "test-strict.1"
description: stricter than the shipped rules, so that shaping shows
categories:
  profile:
    keep: [username, display_name, region, is_private]
    drop: [bio]
  post:
    keep: [caption, media_url, visibility, created_at]
  follow:
    keep: [direction]
    other_users:
      keep: [other_user_id, other_username]
  activity:
    keep: [kind, post_id]
    drop: [text, share_target]
    other_users:
      keep: [post_owner_id]
  direct_message:
    keep: [conversation_id, direction, text]
    other_users:
      keep: [other_user_id]
audience:
  kinds: [share, view]
  min_group_size: 5
  count_private_accounts: false
  count_hidden_shares: false
"""


@pytest.fixture
def strict_policy(tmp_path: Path) -> PrivacyPolicy:
    path = tmp_path / "policy.yaml"
    path.write_text(STRICT_POLICY)
    return load_policy(path)


def test_records_ship_as_the_privacy_policy_lets_them_through(
    store: PartitionStore,
    changes: list[AccountChange],
    tmp_path: Path,
    strict_policy: PrivacyPolicy,
) -> None:
    result = build(store, tmp_path / "a.zip", list(CATEGORIES), policy=strict_policy)

    _, manifest, state = archive_state(result.path)
    expected = {
        key: {**value, "record": apply_policy(strict_policy, key[1], value["record"])}
        for key, value in of_user(expected_state(changes), USER).items()
    }
    assert state == expected
    assert manifest["policy_version"] == "test-strict.1"
    shipped = [v["record"] for k, v in state.items() if k[1] in ("profile", "activity")]
    assert shipped
    assert all(r.get("bio", "") == "" and r.get("text") is None for r in shipped)


def test_a_policy_version_other_than_the_policys_is_refused(
    store: PartitionStore, tmp_path: Path, strict_policy: PrivacyPolicy
) -> None:
    with pytest.raises(ValueError, match="not the version of the policy"):
        build(store, tmp_path / "a.zip", ["post"], policy=strict_policy, policy_version="v9")
