"""A population, its consents and an event stream, run through the policy engine as the
matcher runs it, and an independent statement of what should come out.

``run`` plays the matcher's part without a broker: each change is delivered to its user's
consents through :func:`for_subject`; each source partition's changes go through an
:class:`ActivityLedger` (the actor side, which sends an entry only when an account starts or
stops counting) in random batches, its ledger checkpointed with each batch and, at random, a
batch's update sent and then the matcher crashed before its checkpoint (the partition matched
again from the last checkpoint, cut differently: the same entries again) or restarted at the
checkpoint; the updates of different source partitions are interleaved at random, and each
destination partition's figures checkpointed, restored and replayed at random points.
``truth`` computes the figures from the changes alone, from the README's words, without the
engine.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from portability.matching.consent_index import ActiveConsent
from portability.privacy import (
    ActivityLedger,
    AudienceFigures,
    PrivacyPolicy,
    figures_change,
    for_subject,
)
from portability.simulation import ChangeFactory, UserSettings
from portability.wire.records import AccountChange, AudienceEntry, Category
from portability.wire.topics import partition_for_user

PARTITIONS = 3
KINDS = ("like", "comment", "view", "share")


@dataclass(frozen=True, slots=True)
class Act:
    """``actor`` likes/comments/views/shares post ``post`` (an index into the posts)."""

    actor: int
    kind: str
    post: int
    off_platform: bool = False


@dataclass(frozen=True, slots=True)
class Unact:
    """The ``pick``-th live activity record (modulo their count) is removed."""

    pick: int


@dataclass(frozen=True, slots=True)
class Edit:
    """The ``pick``-th live activity record (modulo their count) is edited: re-upserted under
    its user's settings now."""

    pick: int


@dataclass(frozen=True, slots=True)
class Change:
    """A random change of ``user`` in ``category`` (records name other users at random)."""

    user: int
    category: Category


@dataclass(frozen=True, slots=True)
class Settle:
    """``user`` changes their privacy settings."""

    user: int
    private: bool
    shares_visible: bool


Event = Act | Unact | Edit | Change | Settle


@dataclass(slots=True)
class Scenario:
    users: list[str]
    settings: list[UserSettings]
    grants: Mapping[str, frozenset[str]]  # user -> granted categories (one consent each)
    posts: list[tuple[str, str]]  # (owner, post id)
    events: list[Event]
    seed: int


@dataclass(slots=True)
class Outcome:
    """What left the engine: per consent, the changes in the order they were sent."""

    changes: list[AccountChange] = field(default_factory=list)
    delivered: dict[str, list[AccountChange]] = field(default_factory=lambda: defaultdict(list))
    consents: dict[str, ActiveConsent] = field(default_factory=dict)
    duplicates: int = 0


def consents_of(scenario: Scenario) -> dict[str, ActiveConsent]:
    return {
        user: ActiveConsent(
            consent_id=f"c_{user}",
            app_id="app",
            user_id=user,
            categories=frozenset(categories),
            granted_at_ms=0,
            expires_at_ms=None,
        )
        for user, categories in scenario.grants.items()
    }


def make_changes(scenario: Scenario) -> list[AccountChange]:
    """The platform's changes for the scenario's events, made by the simulated platform."""
    factory = ChangeFactory(scenario.users, seed=scenario.seed)
    for user, settings in zip(scenario.users, scenario.settings, strict=True):
        factory.set_settings(user, settings)
    live: list[tuple[str, str]] = []
    changes: list[AccountChange] = []
    for event in scenario.events:
        if isinstance(event, Act):
            owner, post_id = scenario.posts[event.post]
            actor = scenario.users[event.actor]
            change = factory.activity(
                actor, event.kind, post_id, owner, off_platform=event.off_platform
            )
            live.append((actor, change["record_id"]))
        elif isinstance(event, Unact | Edit):
            if not live:
                continue
            if isinstance(event, Unact):
                actor, record_id = live.pop(event.pick % len(live))
                change = factory.remove_activity(actor, record_id)
            else:
                actor, record_id = live[event.pick % len(live)]
                change = factory.edit_activity(actor, record_id)
        elif isinstance(event, Change):
            change = factory.random_change(scenario.users[event.user], event.category)
            if change["operation"] == "delete" and change["category"] == "activity":
                # The platform removed one of the user's activity records: no longer live.
                gone = (change["user_id"], change["record_id"])
                live = [item for item in live if item != gone]
        else:
            factory.set_settings(
                scenario.users[event.user], UserSettings(event.private, event.shares_visible)
            )
            continue
        changes.append(change)
    return changes


def run(policy: PrivacyPolicy, scenario: Scenario) -> Outcome:
    """Every change through the engine, as the matcher would send it."""
    rnd = random.Random(scenario.seed)
    outcome = Outcome(changes=make_changes(scenario), consents=consents_of(scenario))
    partitions: dict[int, list[tuple[int, AccountChange]]] = defaultdict(list)
    for change in outcome.changes:
        source = partition_for_user(change["user_id"], PARTITIONS)
        partitions[source].append((len(partitions[source]), change))
        consent = outcome.consents.get(change["user_id"])
        if consent is not None and consent.covers(change["category"], 0):
            shaped = for_subject(policy, change)
            if shaped is not None:
                outcome.delivered[consent.consent_id].append(shaped)
    sent = {source: list(_match(policy, items, rnd)) for source, items in partitions.items()}
    for destination, updates in _updates(sent, rnd).items():
        _apply(policy, destination, updates, outcome, rnd)
    return outcome


def _match(
    policy: PrivacyPolicy, items: list[tuple[int, AccountChange]], rnd: random.Random
) -> Iterator[list[AudienceEntry]]:
    """The entries of each batch one source partition's matchers send, in the order sent.

    A batch's update is sent, then its checkpoint (next offset and ledger) written; now and
    then a matcher crashes in between, and the partition is matched again from the last
    checkpoint (by this matcher or another: a ledger restored from the checkpoint), cut into
    batches differently. Now and then a matcher restarts right at the checkpoint.
    """
    ledger = ActivityLedger()
    checkpoint: tuple[int, Any] = (0, None)
    position = 0
    while position < len(items):
        end = min(len(items), position + rnd.randint(1, 4))
        batch = [ledger.apply(policy, change, offset) for offset, change in items[position:end]]
        yield [entry for entry in batch if entry is not None]
        roll = rnd.random()
        if roll < 0.2:
            position, state = checkpoint  # crashed before the checkpoint: matched again
            ledger = ActivityLedger.restore(state)
            continue
        checkpoint = (end, ledger.checkpoint())
        if roll < 0.35:
            ledger = ActivityLedger.restore(checkpoint[1])  # a restart, or another matcher
        position = end


def _updates(
    sent: dict[int, list[list[AudienceEntry]]], rnd: random.Random
) -> dict[int, list[tuple[int, list[AudienceEntry]]]]:
    """Per destination partition, the updates it reads, in an order the topic allows."""
    streams: dict[int, dict[int, list[list[AudienceEntry]]]] = defaultdict(dict)
    for source, batches in sent.items():
        for batch in batches:
            by_destination: dict[int, list[AudienceEntry]] = defaultdict(list)
            for entry in batch:
                by_destination[partition_for_user(entry["post_owner_id"], PARTITIONS)].append(entry)
            for destination, part in by_destination.items():
                streams[destination].setdefault(source, []).append(part)
    merged: dict[int, list[tuple[int, list[AudienceEntry]]]] = {}
    for destination, by_source in streams.items():
        # Sources interleave at random; each source's updates stay in their order.
        queues = {source: list(updates) for source, updates in by_source.items()}
        order: list[tuple[int, list[AudienceEntry]]] = []
        while queues:
            source = rnd.choice(sorted(queues))
            order.append((source, queues[source].pop(0)))
            if not queues[source]:
                del queues[source]
        merged[destination] = order
    return merged


def _apply(
    policy: PrivacyPolicy,
    destination: int,
    updates: list[tuple[int, list[AudienceEntry]]],
    outcome: Outcome,
    rnd: random.Random,
) -> None:
    """The destination's matchers read its updates; now and then one restarts at its
    checkpoint, or crashes before it and reads the last update again (the same deltas)."""
    figures = AudienceFigures()
    checkpoint: tuple[int, Any] = (0, None)
    number = 0
    sent: dict[str, AccountChange] = {}
    while number < len(updates):
        source, entries = updates[number]
        for release in figures.apply(policy, source, entries):
            consent = outcome.consents.get(release.post_owner_id)
            change = figures_change(release, f"update-{destination}-{number}")
            if consent is None or not consent.covers(change["category"], 0):
                continue
            first = sent.setdefault(change["change_id"], change)
            if first is not change:
                # Read again after a crash: the very same delta, which the app drops by id.
                assert first == change
                continue
            outcome.delivered[consent.consent_id].append(change)
        roll = rnd.random()
        if roll < 0.1:
            outcome.duplicates += figures.duplicates
            number, state = checkpoint
            figures = AudienceFigures.restore(state)
            continue
        number += 1
        checkpoint = (number, figures.checkpoint())
        if roll < 0.2:
            outcome.duplicates += figures.duplicates
            figures = AudienceFigures.restore(checkpoint[1])
    outcome.duplicates += figures.duplicates


def truth(policy: PrivacyPolicy, changes: list[AccountChange]) -> dict[tuple[str, str, str], int]:
    """Each post's true figures, per (creator, post, kind), from the changes alone.

    In the README's words, a figure says "how many others shared and viewed the post", and
    stands on *accounts* (at least ``min_group_size`` of them to be released). So a figure is
    the number of accounts, other than the creator, with at least one live activity of that
    kind on the post that counts. An activity counts if, as the platform described it when it
    was made (or last edited), it was made on the platform, of a kind the policy counts, by a
    public account (unless the policy counts private ones), and for a share by a user showing
    their shares (unless the policy counts hidden ones). Removing an activity removes it from
    the count it was in; an account counts once however many of its activities count.
    """
    rule = policy.audience
    # (account, activity record) -> (the figure it is about, whether it counts)
    live: dict[tuple[str, str], tuple[tuple[str, str, str], bool]] = {}
    for change in changes:
        if change["category"] != "activity":
            continue
        account = change["user_id"]
        if change["operation"] == "delete":
            live.pop((account, change["record_id"]), None)
            continue
        record: dict[str, Any] = change["record"] or {}
        context = change.get("context")
        assert context is not None
        kind = record["kind"]
        counts = (
            kind in rule.kinds
            and record["post_owner_id"] != account
            and not context["off_platform"]
            and (rule.count_private_accounts or not context["actor_private"])
            and (rule.count_hidden_shares or kind != "share" or context["shares_visible"])
        )
        live[(account, change["record_id"])] = (
            (record["post_owner_id"], record["post_id"], kind),
            counts,
        )
    accounts: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for (account, _record_id), (figure, counts) in live.items():
        if counts:
            accounts[figure].add(account)
    return {figure: len(who) for figure, who in accounts.items()}


def user_ids_in(value: object, users: frozenset[str]) -> Iterator[str]:
    """Every whole string in ``value`` (nested) that is one of ``users``."""
    if isinstance(value, str):
        if value in users:
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from user_ids_in(item, users)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from user_ids_in(item, users)
