"""Verifying a consent's ledger: the hash chain its events carry, with the standard library.

Shown in docs/webhooks.md; tests/receiver/test_ledger.py runs it against bodies built as the
delivery worker builds them.
"""

import hashlib
import json
from typing import Any

NOT_CHAINED = ("id", "sequence", "ledger")  # a delta's keys outside its change digest


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def canonical(value: Any) -> str:
    """JSON with keys sorted at every level and no whitespace: what both sides hash."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class Ledger:
    """One consent's chain, extended by each event your app received the first time."""

    def __init__(self, consent_id: str) -> None:
        self.head = sha256("portability.ledger\n" + consent_id)
        self.events = 0

    def add_delta(self, delta: dict[str, Any]) -> bool:
        """A delta (an object of data.deltas, in order) received the first time: False if
        its ledger value is not the one computed here."""
        if "ledger" not in delta:
            return True  # replayed: not in the chain
        change = {key: value for key, value in delta.items() if key not in NOT_CHAINED}
        digest = sha256(f"{delta['id']}\n{delta['sequence']}\n{sha256(canonical(change))}")
        return self._extend(digest, delta["ledger"])

    def add_event(self, event: dict[str, Any]) -> bool:
        """A snapshot page, authorization.removed or download notice received the first time
        (the whole event): False if its ledger value is not the one computed here."""
        data = event["data"]
        if "ledger" not in data:
            return True  # from a sender without ledgers
        rest = {key: value for key, value in data.items() if key != "ledger"}
        return self._extend(sha256(event["type"] + "\n" + canonical(rest)), data["ledger"])

    def _extend(self, digest: str, sent: str) -> bool:
        self.head = sha256(self.head + digest)
        self.events += 1
        return self.head == sent
