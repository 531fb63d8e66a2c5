"""The policy file: the shipped one is complete, a broken one says what to fix, a new version
is taken into force without a restart and a bad edit never is."""

from __future__ import annotations

import copy
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from portability.privacy import (
    PolicyError,
    PolicySource,
    apply,
    current_policy,
    default_policy_path,
    for_subject,
    load_policy,
    policy_from_document,
    policy_source,
    reset_current_policy,
)
from portability.privacy.model import record_fields
from portability.settings import Settings
from portability.wire.records import CATEGORIES, AccountChange, ChangeContext

SHIPPED = load_policy()


def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(default_policy_path().read_text())
    return copy.deepcopy(loaded)


def write(path: Path, body: dict[str, Any]) -> None:
    """Replace the file atomically, as the README tells operators to."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(yaml.safe_dump(body))
    os.replace(temporary, path)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_shipped_policy_classifies_every_field_of_every_category() -> None:
    assert SHIPPED.version == document()["version"]
    for category in CATEGORIES:
        rule = SHIPPED.rule(category)
        assert rule is not None
        classified = rule.keep | rule.drop | rule.other_users_keep | rule.other_users_remove
        assert classified == set(record_fields()[category])
    assert SHIPPED.audience.kinds == {"share", "view"}
    assert SHIPPED.audience.min_group_size == 5
    assert not SHIPPED.audience.count_private_accounts
    assert not SHIPPED.audience.count_hidden_shares


def test_the_policy_is_installed_with_the_package() -> None:
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert '"policies" = "portability/privacy/policies"' in pyproject
    assert default_policy_path().name == "privacy-policy.yaml"


def edited(edit: Any) -> dict[str, Any]:
    body = document()
    edit(body)
    return body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            edited(lambda d: d["categories"]["profile"]["keep"].remove("bio")),
            r"categories.profile does not classify bio",
            id="unclassified field",
        ),
        pytest.param(
            edited(lambda d: d["categories"]["post"]["keep"].append("likes")),
            r"names 'likes', which is not a field of the post record",
            id="unknown field",
        ),
        pytest.param(
            edited(lambda d: d["categories"]["post"].update(drop=["caption"])),
            r"field 'caption' is in both keep and drop",
            id="twice",
        ),
        pytest.param(
            edited(
                lambda d: d["categories"]["post"].update(
                    drop=["created_at"], keep=["caption", "media_url", "visibility"]
                )
            ),
            r"'created_at' has no default .* cannot be dropped",
            id="drop without a blank",
        ),
        pytest.param(edited(lambda d: d.update(version="")), r"version must be", id="no version"),
        pytest.param(
            edited(lambda d: d.update(version="unversioned")), r"reserved", id="reserved version"
        ),
        pytest.param(
            edited(lambda d: d["categories"].pop("follow")), r"missing follow", id="no category"
        ),
        pytest.param(
            edited(lambda d: d.update(extra=1)), r"unknown key\(s\) extra", id="unknown key"
        ),
        pytest.param(
            edited(lambda d: d["audience"].update(min_group_size=0)),
            r"min_group_size must be an integer >= 1",
            id="group size",
        ),
        pytest.param(
            edited(lambda d: d["audience"].update(kinds=["like"])),
            r"like cannot be counted",
            id="uncountable kind",
        ),
        pytest.param(
            edited(lambda d: d["audience"].update(count_hidden_shares="no")),
            r"count_hidden_shares must be true or false",
            id="flag",
        ),
    ],
)
def test_an_invalid_policy_says_what_to_fix(body: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        policy_from_document(body)


def test_a_missing_or_broken_file_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(PolicyError, match=r"nowhere.yaml: cannot read the privacy policy"):
        load_policy(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: [unclosed")
    with pytest.raises(PolicyError, match=r"broken.yaml: not valid YAML"):
        load_policy(broken)


def test_dropped_and_removed_fields_are_blanked_and_the_rest_kept() -> None:
    def narrow(body: dict[str, Any]) -> None:
        body["version"] = "narrow-1"
        body["categories"]["profile"] = {
            "keep": ["username", "display_name", "is_private"],
            "drop": ["bio", "region"],
        }
        body["categories"]["direct_message"]["other_users"] = {"remove": ["other_user_id"]}

    policy = policy_from_document(edited(narrow))
    profile = {
        "username": "ada",
        "display_name": "Ada",
        "bio": "hi",
        "region": "GB",
        "is_private": True,
    }
    assert policy.shape("profile", profile) == {
        "username": "ada",
        "display_name": "Ada",
        "bio": "",
        "region": "",
        "is_private": True,
    }
    message = {"conversation_id": "c", "direction": "sent", "other_user_id": "u2", "text": "x"}
    assert policy.shape("direct_message", message) == {**message, "other_user_id": ""}
    # A field the record has but the schema does not (a newer writer's) never passes.
    assert "secret" not in (policy.shape("profile", {**profile, "secret": 1}) or {})


def test_for_subject_drops_the_context_and_withholds_off_platform_shares() -> None:
    share: AccountChange = {
        "change_id": "ch",
        "user_id": "u1",
        "category": "activity",
        "operation": "upsert",
        "record_id": "a1",
        "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
        "record": {
            "kind": "share",
            "post_id": "p",
            "post_owner_id": "u2",
            "text": None,
            "share_target": "story",
        },
        "context": {
            "actor_private": True,
            "shares_visible": False,
            "off_platform": False,
            "activity": None,
        },
    }
    shaped = for_subject(SHIPPED, share)
    assert shaped is not None
    assert shaped["context"] is None
    assert shaped["record"] == share["record"]  # the sharer's own activity, all of it
    off = copy.deepcopy(share)
    assert off["context"] is not None
    off["context"]["off_platform"] = True
    assert for_subject(SHIPPED, off) is None


def test_apply_for_archives_respects_the_grant_and_the_platforms_rules() -> None:
    post = {"caption": "c", "media_url": "m", "visibility": "public", "created_at": 0}
    assert apply("post", post, granted=["post"], policy=SHIPPED) == post
    assert apply("post", post, granted=["profile"], policy=SHIPPED) is None
    assert apply("post", None, policy=SHIPPED) is None
    context: ChangeContext = {
        "actor_private": False,
        "shares_visible": True,
        "off_platform": True,
        "activity": None,
    }
    assert apply("activity", {"kind": "share"}, context=context, policy=SHIPPED) is None


def test_a_new_version_is_taken_into_force_when_the_file_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policy.yaml"
    write(path, document())
    clock = Clock()
    source = PolicySource(path, check_every_s=5.0, clock=clock)
    assert source.poll().version == SHIPPED.version

    write(path, edited(lambda d: d.update(version="2026-12-01.1")))
    assert source.poll().version == SHIPPED.version  # not checked before 5 s
    clock.now = 5.0
    with caplog.at_level(logging.INFO, logger="portability.privacy.loader"):
        assert source.poll().version == "2026-12-01.1"
    assert source.reloads == 1
    assert f"privacy policy 2026-12-01.1 in force (was {SHIPPED.version})" in caplog.text


def test_a_bad_edit_is_refused_and_the_version_in_force_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policy.yaml"
    write(path, document())
    source = PolicySource(path, check_every_s=1.0, clock=Clock())

    path.write_text("version: [unclosed")
    assert not source.check()
    write(path, edited(lambda d: d["audience"].update(min_group_size=2)))  # same version
    with caplog.at_level(logging.ERROR, logger="portability.privacy.loader"):
        assert not source.check()
    assert "rules changed but its version" in caplog.text
    assert source.refusals == 2
    assert source.policy == SHIPPED
    write(path, document())  # the same rules again: nothing to do
    assert not source.check()
    assert source.reloads == 0


def test_one_policy_file_has_one_source_in_a_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The matcher and the transfers role of one process share the file's source: a refused
    edit is logged once, not once by each (and another file has a source of its own)."""
    path, other = tmp_path / "policy.yaml", tmp_path / "other.yaml"
    write(path, document())
    write(other, edited(lambda d: d.update(version="other-1")))
    reset_current_policy()
    try:
        settings = Settings(privacy_policy_path=path, privacy_policy_reload_s=0.001)
        matcher_side = policy_source(settings)
        transfers_side = policy_source(settings.model_copy())
        assert transfers_side is matcher_side
        assert policy_source(settings.model_copy(update={"privacy_policy_path": other})) is not (
            matcher_side
        )

        path.write_text("version: [unclosed")
        with caplog.at_level(logging.ERROR, logger="portability.privacy.loader"):
            assert not matcher_side.check()
            assert current_policy(settings) == SHIPPED  # the transfers role's next archive
        # Counted at the level asked for: an earlier test may have left INFO records on.
        assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1, caplog.text
        assert matcher_side.refusals == 1
    finally:
        reset_current_policy()


def test_current_policy_is_the_process_wide_source(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    write(path, edited(lambda d: d.update(version="process-1")))
    reset_current_policy()
    try:
        settings = Settings(privacy_policy_path=path, privacy_policy_reload_s=0.001)
        assert current_policy(settings).version == "process-1"
        post = {"caption": "c", "media_url": "m", "visibility": "public", "created_at": 0}
        assert apply("post", post, granted=["post"]) == post
    finally:
        reset_current_policy()
