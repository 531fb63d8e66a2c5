"""The privacy policy end to end: platform -> matcher -> worker -> a real receiving app.

One pipeline for the module (real broker, consent store, matcher, worker, receiver over HTTP)
with its policy in a temporary file the matcher re-reads every 50 ms. What the receiver got
is checked against the same properties the engine's property tests check, computed from what
the platform published; a post's figures count accounts, not activities, through repeats,
removals, a restart and a second matcher taking partitions over; and a new policy version
written while the pipeline runs is in force for the deltas after it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from pipeline_harness import APP_A, APP_B, Pipeline, pipeline_settings, running_pipeline
from portability.broker import EmbeddedBroker
from portability.matching import Matcher
from portability.privacy import default_policy_path, is_tracked, load_policy
from portability.privacy.model import FIGURE_KINDS
from portability.simulation import ChangeFactory, UserSettings
from portability.webhooks.parsing import Delta
from portability.wire.records import AccountChange
from portability.wire.topics import partition_for_user
from privacy.streams import truth, user_ids_in

# One worker runs the whole module (pytest -n): its tests share the module's pipeline.
pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.xdist_group("test_privacy_pipeline"),
]

SHIPPED = load_policy()
KINDS = ("share", "view")


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "privacy-policy.yaml"
    shutil.copyfile(default_policy_path(), path)
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pipeline(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory, policy_file: Path
) -> AsyncIterator[Pipeline]:
    settings = pipeline_settings(tmp_path_factory.mktemp("pipeline")).model_copy(
        update={"privacy_policy_path": policy_file, "privacy_policy_reload_s": 0.05}
    )
    async with running_pipeline(settings, broker.bootstrap) as running:
        yield running


def write_policy(path: Path, body: dict[str, Any]) -> None:
    """Replace the policy file atomically, as the README tells operators to."""
    temporary = path.with_suffix(".new")
    temporary.write_text(yaml.safe_dump(body))
    os.replace(temporary, path)


def figures_of(deltas: list[Delta]) -> dict[str, dict[str, Any]]:
    """The last audience figures received per post."""
    last: dict[str, dict[str, Any]] = {}
    for delta in deltas:
        if delta.category == "post" and delta.record_id.endswith("/audience"):
            assert delta.record is not None
            last[delta.record["post_id"]] = delta.record
    return last


async def test_nothing_leaves_that_the_policy_does_not_allow(pipeline: Pipeline) -> None:
    p = pipeline
    fans = [f"fan{i}" for i in range(9)]
    creator, friend = "creator", "friend"
    users = [creator, friend, *fans]
    factory = ChangeFactory(users, seed=21)
    factory.set_settings("fan7", UserSettings(private=True))
    factory.set_settings("fan8", UserSettings(shares_visible=False))
    grants = {
        creator: ["post", "profile"],
        "fan0": ["activity"],
        "fan7": ["activity", "follow"],
        friend: ["direct_message", "follow"],
    }
    consents = {user: await p.grant(user, APP_A, categories) for user, categories in grants.items()}
    other_app = await p.grant(creator, APP_B, ["profile"])  # no post: never any figures
    await p.wait_matcher_ready()
    version = p.matcher.policy.version
    decoded_before = p.matcher.stats.audience_decoded

    changes: list[AccountChange] = []
    shares = [factory.activity(fan, "share", "post-a", creator) for fan in fans]  # 7 count
    views = [factory.activity(fan, "view", "post-a", creator) for fan in fans[:4]]  # 4: withheld
    changes += shares + views
    changes.append(factory.activity("fan0", "share", "post-b", creator, off_platform=True))
    changes.append(factory.remove_activity("fan1", shares[1]["record_id"]))  # 6 count
    changes.append(factory.activity("fan2", "like", "post-a", creator))  # not counted
    # Accounts, not activities: repeats change no figure (as activities: 8 shares, 6 views).
    changes += [factory.activity("fan3", "share", "post-a", creator) for _ in range(2)]
    changes += [factory.activity("fan2", "view", "post-a", creator) for _ in range(2)]
    again = factory.activity("fan5", "share", "post-a", creator)
    changes += [again, factory.remove_activity("fan5", again["record_id"])]  # fan5 still counts
    for user in (creator, friend, "fan0", "fan7"):
        for category in ("profile", "post", "follow", "activity", "direct_message"):
            changes.append(factory.random_change(user, category))
    await p.publish(changes)

    want = {
        consent.consent_id: [
            c["change_id"]
            for c in changes
            if c["user_id"] == user and c["category"] in grants[user] and is_tracked(c)
        ]
        for user, consent in consents.items()
    }
    for consent_id, change_ids in want.items():
        await p.wait_for_changes(consent_id, change_ids)
    counts = truth(SHIPPED, changes)
    assert counts[(creator, "post-a", "share")] == 6
    assert counts[(creator, "post-a", "view")] == 4
    expected = {"post_id": "post-a", "share_count": 6, "view_count": None}
    creator_consent = consents[creator].consent_id
    await p.wait_until(
        lambda: figures_of(p.receiver.deltas(creator_consent)) == {"post-a": expected},
        f"the creator's figures {expected}",
    )
    await p.wait_idle()

    population = frozenset(users)
    for user, consent in consents.items():
        got = p.receiver.deltas(consent.consent_id)
        own = [d for d in got if not d.record_id.endswith("/audience")]
        # Exactly the subject's own tracked changes in the granted categories, in order.
        assert [d.change_id for d in own] == want[consent.consent_id]
        assert {d.category for d in got} <= set(grants[user])
        assert {d.policy_version for d in got} == {version}
        for delta in got:
            rule = SHIPPED.rule(delta.category)
            assert rule is not None
            for name, value in (delta.record or {}).items():
                if set(user_ids_in(value, population)) - {user}:
                    assert name in rule.other_users_keep, (user, delta.category, name)
    # The creator learnt counts, never who: no fan's id in anything the creator received.
    creator_got = p.receiver.deltas(creator_consent)
    assert not {u for d in creator_got for u in user_ids_in(d.record, population)} - {creator}
    assert all(
        set(f) == {"post_id", *(f"{k}_count" for k in FIGURE_KINDS)}
        for f in figures_of(creator_got).values()
    )
    assert p.receiver.deltas(other_app.consent_id) == [
        d for d in p.receiver.deltas(other_app.consent_id) if d.category == "profile"
    ]
    assert p.matcher.stats.dropped["withheld"] >= 1  # the off-platform share, from fan0's app
    # Of the users without a consent, only their shares and views (and the unshares) were
    # decoded, to count them; the like, a kind the policy does not count, was not.
    counted = {"share", "view"}
    expected_decoded = [
        c
        for c in changes
        if c["user_id"] not in grants
        and c["category"] == "activity"
        and (c["record"] or {"kind": "share"})["kind"] in counted
    ]
    assert p.matcher.stats.audience_decoded - decoded_before == len(expected_decoded) == 17
    assert p.receiver.stats().verification_failures == 0


async def test_a_new_policy_version_takes_effect_without_a_restart(
    pipeline: Pipeline, policy_file: Path
) -> None:
    p = pipeline
    factory = ChangeFactory(["reader"], seed=5)
    consent = await p.grant("reader", APP_B, ["profile"])
    await p.wait_matcher_ready()
    old_version = p.matcher.policy.version
    before = [factory.random_change("reader", "profile")]
    await p.publish(before)
    await p.wait_for_changes(consent.consent_id, [before[0]["change_id"]])
    reloads = p.matcher.stats.policy_reloads

    body = yaml.safe_load(await asyncio.to_thread(policy_file.read_text))
    body["version"] = "2026-12-01.test"
    body["categories"]["profile"] = {
        "keep": ["username", "display_name", "is_private"],
        "drop": ["bio", "region"],
    }
    await asyncio.to_thread(write_policy, policy_file, body)
    matcher = p.matcher
    await p.wait_until(
        lambda: matcher.policy.version == "2026-12-01.test", "the matcher took the new version"
    )
    after = [factory.random_change("reader", "profile")]
    await p.publish(after)
    await p.wait_for_changes(consent.consent_id, [after[0]["change_id"]])

    first, second = p.receiver.deltas(consent.consent_id)
    assert (first.policy_version, second.policy_version) == (old_version, "2026-12-01.test")
    assert first.record is not None
    assert first.record["region"] != ""
    assert second.record is not None
    assert (second.record["bio"], second.record["region"]) == ("", "")
    assert second.record["username"] == after[0]["record"]["username"]  # type: ignore[index]
    assert p.matcher.stats.policy_reloads == reloads + 1


async def test_figures_survive_a_matcher_restart(pipeline: Pipeline) -> None:
    """The counts resume from the checkpoint: a restarted matcher goes on from 6 accounts, not
    from 0, and knows which of them acted more than once (the actor side is checkpointed too)."""
    p = pipeline
    fans = [f"follower{i}" for i in range(8)]
    factory = ChangeFactory(["maker", *fans], seed=8)
    consent = await p.grant("maker", APP_A, ["post"])
    await p.wait_matcher_ready()
    before = [factory.activity(fan, "share", "clip", "maker") for fan in fans[:6]]
    extra = factory.activity(fans[0], "share", "clip", "maker")  # follower0 shares twice
    await p.publish([*before, extra])
    await p.wait_until(lambda: share_count(p, consent.consent_id, "clip") == 6, "six shown")
    await p.wait_idle()

    await p.restart_matcher()
    await p.wait_matcher_ready()
    after = [
        factory.remove_activity(fans[0], extra["record_id"]),  # one share left: still counts
        factory.activity(fans[1], "share", "clip", "maker"),  # counts already
        *(factory.activity(fan, "share", "clip", "maker") for fan in fans[6:]),
    ]
    await p.publish(after)
    await p.wait_until(
        lambda: share_count(p, consent.consent_id, "clip") == 8, "eight shown after the restart"
    )
    await p.publish([factory.remove_activity(fans[0], before[0]["record_id"])])  # its last
    await p.wait_until(lambda: share_count(p, consent.consent_id, "clip") == 7, "seven shown")
    await p.wait_idle()
    got = p.receiver.deltas(consent.consent_id)
    assert [d.sequence for d in got] == list(range(1, len(got) + 1))
    assert len({d.id for d in got}) == len(got)
    figures = p.matcher.audience_figures(partition_for_user("maker", p.runtime.settings.partitions))
    assert figures is not None
    assert figures.count("maker", "clip", "share") == 7


async def test_two_accounts_acting_three_times_each_are_withheld_five_are_shown(
    pipeline: Pipeline,
) -> None:
    """The issue's example, end to end: two accounts each view and share a post three times
    stand for 2 accounts (below the minimum of 5: withheld, no record at all), not 6; five
    accounts viewing and sharing another post once each are shown as 5."""
    p = pipeline
    pair, five = ["twin0", "twin1"], [f"quint{i}" for i in range(5)]
    factory = ChangeFactory(["star", *pair, *five], seed=13)
    consent = await p.grant("star", APP_A, ["post"])
    await p.grant("twin0", APP_B, ["activity"])  # one of the pair through a consent's path
    await p.wait_matcher_ready()
    changes = [
        factory.activity(fan, kind, "often", "star")
        for _ in range(3)
        for fan in pair
        for kind in ("view", "share")
    ]
    changes += [
        factory.activity(fan, kind, "once", "star") for fan in five for kind in ("view", "share")
    ]
    # Last in each of the pair's partitions: once both are counted, so is all before them
    # (a source partition's entries reach the creator's partition in order).
    changes += [factory.activity(fan, "view", "marker", "star") for fan in pair]
    await p.publish(changes)

    partition = partition_for_user("star", p.runtime.settings.partitions)

    def counts(post_id: str) -> list[int]:
        """The post's true counts (shares, views), released or not."""
        figures = p.matcher.audience_figures(partition)
        return [] if figures is None else [figures.count("star", post_id, k) for k in KINDS]

    await p.wait_until(
        lambda: (
            figures_of(p.receiver.deltas(consent.consent_id)).get("once")
            == {"post_id": "once", "share_count": 5, "view_count": 5}
        ),
        "five accounts shown as 5",
    )
    await p.wait_until(lambda: counts("marker") == [0, 2], "the pair's activity all counted")
    assert counts("often") == [2, 2]  # six views and six shares of two accounts
    figures = p.matcher.audience_figures(partition)
    assert figures is not None
    assert figures.released("star", "often") == {}  # never released: nothing was sent
    await p.wait_idle()
    assert "often" not in figures_of(p.receiver.deltas(consent.consent_id))


async def test_figures_stay_exact_while_a_second_matcher_takes_partitions_over(
    pipeline: Pipeline,
) -> None:
    """Partitions move to a second matcher of the group and back: each one's actor side moves
    with its checkpoint, so repeats and removals keep counting accounts exactly."""
    p = pipeline
    fans = [f"mover{i}" for i in range(8)]
    factory = ChangeFactory(["host", *fans], seed=17)
    consent = await p.grant("host", APP_A, ["post"])
    await p.wait_matcher_ready()
    first = [factory.activity(fan, "share", "reel", "host") for fan in fans[:6]]
    second = [factory.activity(fan, "share", "reel", "host") for fan in fans[:6]]
    await p.publish([*first, *second])  # six accounts, each sharing twice
    await p.wait_until(lambda: share_count(p, consent.consent_id, "reel") == 6, "six shown")

    third = [factory.activity(fan, "share", "reel", "host") for fan in fans[6:] for _ in "ab"]
    other = Matcher(p.runtime, client_id="portability-matcher-second")
    await other.start()
    task = asyncio.create_task(other.run(), name="second matcher")
    try:
        # Both members hold partitions once the rebalance is over (3 partitions, 2 members).
        await p.wait_until(
            lambda: other.ready and p.matcher.ready, "partitions shared by two matchers", 60
        )
        await p.publish(
            [
                *(factory.remove_activity(s["user_id"], s["record_id"]) for s in first[:3]),
                *third,
            ]
        )  # three accounts keep a share each, two join: eight
        await p.wait_until(lambda: share_count(p, consent.consent_id, "reel") == 8, "eight shown")
    finally:
        await other.stop()
        await asyncio.wait_for(task, 10)
    await p.wait_matcher_ready(60)  # every partition back with the first matcher
    await p.publish(
        [
            *(factory.remove_activity(s["user_id"], s["record_id"]) for s in second[:3]),
            factory.remove_activity(fans[6], third[0]["record_id"]),  # one of two: still counts
        ]
    )  # the first three lose their last share: five
    await p.wait_until(lambda: share_count(p, consent.consent_id, "reel") == 5, "five shown")
    await p.wait_idle()
    got = p.receiver.deltas(consent.consent_id)
    assert [d.sequence for d in got] == list(range(1, len(got) + 1))


def share_count(p: Pipeline, consent_id: str, post_id: str) -> int | None:
    """The share count last received for the post (None: withheld or never sent)."""
    count: int | None = (
        figures_of(p.receiver.deltas(consent_id)).get(post_id, {}).get("share_count")
    )
    return count
