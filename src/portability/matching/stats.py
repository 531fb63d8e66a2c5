"""Counters an operator (and the demo) reads off a running matcher."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any, Final

__all__ = ["DROP_REASONS", "MatcherStats"]

# Why a valid change of account.changes reaches no app (docs/publishing-account-changes.md):
# no_consent - its user holds no active consent (decided on the key, never decoded);
# not_granted - the user's consents do not grant its category (or it predates them);
# withheld - the privacy policy keeps it from every recipient (e.g. an off-platform share).
DROP_REASONS: Final = ("no_consent", "not_granted", "withheld")


@dataclass(slots=True)
class MatcherStats:
    changes_seen: int = 0
    changes_decoded: int = 0
    changes_matched: int = 0
    # Valid changes that reach no app, by reason (DROP_REASONS).
    dropped: Counter[str] = field(default_factory=Counter)
    # Changes breaking the producer contract at the door, dead-lettered here, by fault.
    dead_lettered_by_fault: Counter[str] = field(default_factory=Counter)
    # Changes whose body breaks the contract: never delivered; the state view letters them.
    refused_by_fault: Counter[str] = field(default_factory=Counter)
    deltas_emitted: int = 0
    consent_updates: int = 0
    dead_lettered: int = 0
    # The privacy policy (portability.privacy): new versions taken into force, and the
    # audience figures' traffic.
    policy_reloads: int = 0
    audience_decoded: int = 0  # activity of users without a consent, decoded only to count it
    audience_entries_sent: int = 0  # counted activity sent toward its creator's partition
    audience_updates_applied: int = 0
    audience_duplicates: int = 0  # entries skipped as already counted (a batch matched again)
    audience_deltas: int = 0  # figure deltas sent to creators' consents (in deltas_emitted too)
    batches: int = 0
    last_batch_seconds: float = 0.0

    @property
    def changes_dead_lettered(self) -> int:
        """Changes dead-lettered by this matcher (every fault)."""
        return sum(self.dead_lettered_by_fault.values())

    def as_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it rebuilds a Counter from its (key, count) pairs, counting
        # the pairs ({"no_consent": 2} became {("no_consent", 2): 1}), and the /stats/ view
        # then failed (500) on the tuple keys once a matcher had dropped a change.
        counters = {item.name: getattr(self, item.name) for item in fields(self)}
        counters |= {k: dict(v) for k, v in counters.items() if isinstance(v, Counter)}
        counters["changes_dead_lettered"] = self.changes_dead_lettered
        return counters
