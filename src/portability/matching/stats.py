"""Counters an operator (and the demo) reads off a running matcher."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["MatcherStats"]


@dataclass(slots=True)
class MatcherStats:
    changes_seen: int = 0
    changes_decoded: int = 0
    changes_matched: int = 0
    changes_dead_lettered: int = 0  # changes whose value did not decode
    deltas_emitted: int = 0
    consent_updates: int = 0
    dead_lettered: int = 0
    # The privacy policy (portability.privacy): changes it kept from every recipient, new
    # versions taken into force, and the audience figures' traffic.
    changes_withheld: int = 0
    policy_reloads: int = 0
    audience_decoded: int = 0  # activity of users without a consent, decoded only to count it
    audience_entries_sent: int = 0  # counted activity sent toward its creator's partition
    audience_updates_applied: int = 0
    audience_duplicates: int = 0  # entries skipped as already counted (a batch matched again)
    audience_deltas: int = 0  # figure deltas sent to creators' consents (in deltas_emitted too)
    batches: int = 0
    last_batch_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
