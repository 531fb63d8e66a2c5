"""Verifying each consent's ledger: the hash chain an app recomputes from what it received.

Every event of a consent carries the chain's value after it (a delta in its object, a
notification in ``data``; see :mod:`portability.webhooks.ledger`, the contract's definition).
The receiver keeps its own chain per consent, extended by what it received the first time,
in arrival order, and compares: a delta missing, changed or out of order makes the body's
value differ from the receiver's. Such a mismatch is counted (``ledger_mismatches``) and
logged with both values, and the receiver goes on from *its own* value: its head is what it
received, which is what an app compares with the platform's
(``GET /v1/consents/{consent_id}/ledger``).

Events received again (a delta whose id, or sequence, was already received; another event
whose ``webhook-id`` was) do not extend the chain. Deltas without a ``ledger`` value (a
replay's) and notifications without one (from a sender that predates the ledger) are counted
``ledger_unchained`` and do not extend it either.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from portability.webhooks import ledger
from portability.webhooks.ledger import LEDGER_FIELD, LedgerHead
from portability.wire.notifications import AUTHORIZATION_REMOVED, DOWNLOAD_READY, SNAPSHOT

__all__ = ["CHAINED_NOTIFICATIONS", "LedgerChecker"]

_log = logging.getLogger(__name__)

CHAINED_NOTIFICATIONS: Final = frozenset({SNAPSHOT, AUTHORIZATION_REMOVED, DOWNLOAD_READY})
"""Notifications that extend their consent's chain (any other type does if it carries a value)."""
_REMEMBERED_EVENT_IDS: Final = 100_000


@dataclass(slots=True)
class _Chain:
    head: str
    events: int = 0
    deltas: int = 0
    pages: int = 0
    removals: int = 0


class LedgerChecker:
    """Each consent's chain as received, checked against the values the events carry.

    Args:
        counts: The receiver's counters: ``ledger_mismatches``, ``ledger_unchained``.
        remembered_event_ids: How many notification ``webhook-id``s are kept to tell a
            redelivery (the oldest are forgotten: a redelivery comes within hours, not after
            this many other notifications).
    """

    def __init__(
        self,
        counts: collections.Counter[str],
        *,
        remembered_event_ids: int = _REMEMBERED_EVENT_IDS,
    ) -> None:
        self._counts = counts
        self._chains: dict[str, _Chain] = {}
        self._event_ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._remembered = remembered_event_ids

    def head(self, consent_id: str) -> LedgerHead | None:
        """The consent's chain as received; None before any chained event of it arrived."""
        chain = self._chains.get(consent_id)
        if chain is None:
            return None
        return LedgerHead(chain.head, chain.events, chain.deltas, chain.pages, chain.removals)

    def delta(self, app_id: str, consent_id: str, delta: Mapping[str, Any]) -> None:
        """Extend the consent's chain with a delta received for the first time (its object in
        ``data.deltas``, as parsed), and compare with the value it carries."""
        value = delta.get(LEDGER_FIELD)
        if not isinstance(value, str):
            self._counts["ledger_unchained"] += 1
            return
        digest = ledger.delta_digest(delta["id"], delta["sequence"], ledger.change_digest(delta))
        chain = self._extend(consent_id, digest)
        chain.deltas += 1
        self._compare(app_id, consent_id, f"delta {delta['sequence']}", value, chain)

    def notification(
        self, app_id: str, event_type: str, data: Mapping[str, Any], webhook_id: str
    ) -> None:
        """Extend the consent's chain with a notification (page, removal, download notice),
        unless its ``webhook-id`` was received before, and compare with its value."""
        consent_id = data.get("consent_id")
        if not isinstance(consent_id, str) or self._seen(webhook_id):
            return
        value = data.get(LEDGER_FIELD)
        if not isinstance(value, str):
            if event_type in CHAINED_NOTIFICATIONS:
                self._counts["ledger_unchained"] += 1
            return
        chain = self._extend(consent_id, ledger.event_digest(event_type, data))
        chain.pages += event_type == SNAPSHOT
        chain.removals += event_type == AUTHORIZATION_REMOVED
        self._compare(app_id, consent_id, f"{event_type} {webhook_id}", value, chain)

    def _extend(self, consent_id: str, digest: str) -> _Chain:
        chain = self._chains.get(consent_id)
        if chain is None:
            chain = self._chains[consent_id] = _Chain(ledger.start(consent_id))
        chain.head = ledger.extend(chain.head, digest)
        chain.events += 1
        return chain

    def _compare(self, app_id: str, consent_id: str, what: str, sent: str, chain: _Chain) -> None:
        if sent == chain.head:
            return
        self._counts["ledger_mismatches"] += 1
        _log.warning(
            "ledger mismatch in consent %s at %s (event %d): the body says %s, what was "
            "received makes %s; going on from the latter",
            consent_id,
            what,
            chain.events,
            sent,
            chain.head,
            extra={
                "consent_id": consent_id,
                "app_id": app_id,
                "event": what,
                "ledger_sent": sent,
                "ledger_computed": chain.head,
            },
        )

    def _seen(self, webhook_id: str) -> bool:
        """Whether ``webhook_id`` came before; remembers it (and forgets the oldest)."""
        if webhook_id in self._event_ids:
            return True
        self._event_ids[webhook_id] = None
        if len(self._event_ids) > self._remembered:
            self._event_ids.popitem(last=False)
        return False
