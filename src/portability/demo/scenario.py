"""The demo's population and its oracle: which deltas must arrive, and which must never."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from portability.consent import ConsentView
from portability.demo.copies import Copy, platform_copy
from portability.matching import delta_id
from portability.privacy import PrivacyPolicy
from portability.wire.records import CATEGORIES, AccountChange, Category

__all__ = ["Expectations", "Oracle", "choose_grants"]


def choose_grants(
    users: list[str], app_ids: list[str], fraction: float, rnd: random.Random
) -> list[tuple[str, str, list[Category]]]:
    """(user, app, categories) for a ``fraction`` of users, each with 1 to all apps."""
    grants = []
    for user in rnd.sample(users, max(1, int(len(users) * fraction))):
        for app_id in rnd.sample(app_ids, rnd.randint(1, len(app_ids))):
            categories = rnd.sample(list(CATEGORIES), rnd.randint(1, len(CATEGORIES)))
            grants.append((user, app_id, categories))
    return grants


@dataclass(slots=True)
class Expectations:
    """What the oracle concluded, compared with what the receiver got."""

    expected: int = 0
    missing: int = 0
    unexpected: int = 0
    leaks: int = 0
    revoked_allowed: int = 0


@dataclass(slots=True)
class Oracle:
    """An independent statement of the contract, written without the matcher's code.

    A change reaches a consent's app iff the consent is ongoing and active, covers its
    category, and was granted before the change occurred. For a revoked consent, changes that
    occurred before the revocation was acknowledged may still arrive (they may be on the
    wire); any that occurred after it are leaks.

    Consents granted late with a snapshot (``late``) are not compared delta by delta: their
    deltas start at the snapshot's position, not at the grant. The app's copy of them (the
    snapshot, then the deltas) must equal the platform's state instead
    (:meth:`platform_copy`, :mod:`portability.demo.copies`).
    """

    consents: dict[str, ConsentView] = field(default_factory=dict)
    late: dict[str, ConsentView] = field(default_factory=dict)
    revoked_at: dict[str, datetime] = field(default_factory=dict)
    _by_user: dict[str, list[ConsentView]] = field(default_factory=lambda: defaultdict(list))
    _changes: list[AccountChange] = field(default_factory=list)

    def add_consent(self, consent: ConsentView) -> None:
        self.consents[consent.consent_id] = consent
        self._by_user[consent.user_id].append(consent)

    def add_late_consent(self, consent: ConsentView) -> None:
        """A consent granted with a snapshot: checked by its copy, not delta by delta."""
        self.late[consent.consent_id] = consent

    def changed_categories(self) -> dict[str, set[Category]]:
        """Each user with changes recorded so far, with the categories they were in."""
        found: dict[str, set[Category]] = defaultdict(set)
        for change in self._changes:
            found[change["user_id"]].add(change["category"])
        return found

    def platform_copy(self, consent_id: str, policy: PrivacyPolicy) -> Copy:
        """The platform's state of a late consent's user and categories, after every change
        recorded so far."""
        consent = self.late[consent_id]
        return platform_copy(self._changes, consent.user_id, consent.categories, policy)

    def revoked(self, consent_id: str, acknowledged_at: datetime) -> None:
        self.revoked_at[consent_id] = acknowledged_at

    def record(self, changes: Iterable[AccountChange]) -> None:
        self._changes.extend(changes)

    def compare(self, received: dict[str, str]) -> Expectations:
        """``received`` maps each delivered delta id to its consent id."""
        result = Expectations()
        allowed_revoked: set[str] = set()
        expected: set[str] = set()
        occurred: dict[str, datetime] = {}
        for change in self._changes:
            for consent in self._by_user.get(change["user_id"], ()):
                if change["category"] not in consent.categories:
                    continue
                if change["occurred_at"] < consent.granted_at:
                    continue
                identifier = delta_id(consent.consent_id, change["change_id"])
                occurred[identifier] = change["occurred_at"]
                if consent.consent_id in self.revoked_at:
                    allowed_revoked.add(identifier)
                else:
                    expected.add(identifier)
        result.expected = len(expected)
        result.missing = len(expected - received.keys())
        for identifier, consent_id in received.items():
            if identifier in expected:
                continue
            if identifier in allowed_revoked:
                if occurred[identifier] >= self.revoked_at[consent_id]:
                    result.leaks += 1
                else:
                    result.revoked_allowed += 1
            else:
                result.unexpected += 1
        return result
