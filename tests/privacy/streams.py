"""A population, its consents and an event stream, run through the policy engine as the
matcher runs it, and an independent statement of what should come out.

``run`` plays the matcher's part without a broker: each change is delivered to its user's
consents through :func:`for_subject`; counted activity is sent on as audience updates, cut into
random source batches, some batches sent again (a source partition matched again after a
crash), the updates of different source partitions interleaved at random, each destination
partition's figures checkpointed and restored at random points. ``truth`` computes the figures
from the changes alone, without the engine.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from portability.matching.consent_index import ActiveConsent
from portability.privacy import (
    AudienceFigures,
    PrivacyPolicy,
    contribution,
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


Event = Act | Unact | Change | Settle


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
        elif isinstance(event, Unact):
            if not live:
                continue
            actor, record_id = live.pop(event.pick % len(live))
            change = factory.remove_activity(actor, record_id)
        elif isinstance(event, Change):
            change = factory.random_change(scenario.users[event.user], event.category)
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
    offsets: dict[int, int] = defaultdict(int)
    entries: dict[int, list[AudienceEntry]] = defaultdict(list)  # per source partition
    for change in outcome.changes:
        source = partition_for_user(change["user_id"], PARTITIONS)
        offset = offsets[source]
        offsets[source] += 1
        consent = outcome.consents.get(change["user_id"])
        if consent is not None and consent.covers(change["category"], 0):
            shaped = for_subject(policy, change)
            if shaped is not None:
                outcome.delivered[consent.consent_id].append(shaped)
        entry = contribution(policy, change, offset)
        if entry is not None:
            entries[source].append(entry)
    for destination, updates in _updates(entries, rnd).items():
        _apply(policy, destination, updates, outcome, rnd)
    return outcome


def _updates(
    entries: dict[int, list[AudienceEntry]], rnd: random.Random
) -> dict[int, list[tuple[int, list[AudienceEntry]]]]:
    """Per destination partition, the updates it reads, in an order the topic allows."""
    streams: dict[int, dict[int, list[list[AudienceEntry]]]] = defaultdict(dict)
    for source, items in entries.items():
        for chunk in _batches(items, rnd):
            by_destination: dict[int, list[AudienceEntry]] = defaultdict(list)
            for entry in chunk:
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


def _batches(items: list[AudienceEntry], rnd: random.Random) -> Iterator[list[AudienceEntry]]:
    """Source batches of random size; now and then a replay of the last few (after a crash)."""
    start = 0
    checkpoint = 0
    while start < len(items):
        end = min(len(items), start + rnd.randint(1, 4))
        yield items[start:end]
        if rnd.random() < 0.25:
            # Matched again from the last checkpoint, cut differently: the same entries.
            yield from _regrouped(items[checkpoint:end], rnd)
        if rnd.random() < 0.5:
            checkpoint = end
        start = end


def _regrouped(items: list[AudienceEntry], rnd: random.Random) -> Iterator[list[AudienceEntry]]:
    start = 0
    while start < len(items):
        end = min(len(items), start + rnd.randint(1, 3))
        yield items[start:end]
        start = end


def _apply(
    policy: PrivacyPolicy,
    destination: int,
    updates: list[tuple[int, list[AudienceEntry]]],
    outcome: Outcome,
    rnd: random.Random,
) -> None:
    figures = AudienceFigures()
    for number, (source, entries) in enumerate(updates):
        if rnd.random() < 0.2:
            figures = AudienceFigures.restore(figures.checkpoint())  # a restart in between
        for release in figures.apply(policy, source, entries):
            consent = outcome.consents.get(release.post_owner_id)
            change = figures_change(release, f"update-{destination}-{number}")
            if consent is not None and consent.covers(change["category"], 0):
                outcome.delivered[consent.consent_id].append(change)
    outcome.duplicates += figures.duplicates


def truth(policy: PrivacyPolicy, changes: list[AccountChange]) -> dict[tuple[str, str, str], int]:
    """The true count per (creator, post, kind), from the changes alone.

    An activity counts while it exists if, when it was made, it was on someone else's post,
    of a kind the policy counts, made on the platform, by a public account (unless the policy
    counts private ones), and for a share by a user showing their shares (unless the policy
    counts hidden ones).
    """
    rule = policy.audience
    live: dict[tuple[str, str], tuple[tuple[str, str, str], bool]] = {}
    for change in changes:
        if change["category"] != "activity":
            continue
        key = (change["user_id"], change["record_id"])
        if change["operation"] == "delete":
            live.pop(key, None)
            continue
        record: dict[str, Any] = change["record"] or {}
        context = change.get("context")
        assert context is not None
        counted = (
            record["kind"] in rule.kinds
            and record["post_owner_id"] != change["user_id"]
            and not context["off_platform"]
            and (rule.count_private_accounts or not context["actor_private"])
            and (rule.count_hidden_shares or record["kind"] != "share" or context["shares_visible"])
        )
        live[key] = ((record["post_owner_id"], record["post_id"], record["kind"]), counted)
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    for target, counted in live.values():
        if counted:
            counts[target] += 1
    return dict(counts)


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
