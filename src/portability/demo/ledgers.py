"""The demo's ledger check: does each consent's hash chain at the app equal the platform's?

The app's head is the one the reference receiver computed from what it received; the
platform's is what the message log's writer stored from the delivery worker's entries
(``consent_ledgers``, as ``GET /v1/consents/{id}/ledger`` answers it). The writer follows the
deliveries a moment behind, so the check waits, bounded, for the heads to agree before
counting the ones that do. A consent with nothing delivered has the chain's start on both
sides.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from sqlalchemy.engine import Engine

from portability.messages.ledgers import delivered_heads
from portability.receiver import ReceivingApp
from portability.webhooks import ledger

__all__ = ["LedgerCheck", "check_ledger_heads"]

_POLL_S: Final = 0.1


@dataclass(frozen=True, slots=True)
class LedgerCheck:
    """How the consents' ledger heads compared.

    Attributes:
        consents: The consents compared.
        equal: Those whose head at the app is the platform's.
        events: The events in the app's chains, all consents together.
    """

    consents: int
    equal: int
    events: int


async def check_ledger_heads(
    engine: Engine, receiver: ReceivingApp, consent_ids: Collection[str], timeout_s: float
) -> LedgerCheck:
    """Compare the heads of ``consent_ids`` once all are equal or ``timeout_s`` passed (the
    writer catching up), whichever comes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        platform = await asyncio.to_thread(delivered_heads, engine, consent_ids)
        heads = {c: receiver.ledger_head(c) for c in consent_ids}
        equal = sum(
            1
            for c, head in heads.items()
            if platform[c] == (ledger.start(c) if head is None else head.head)
        )
        if equal == len(consent_ids) or time.monotonic() >= deadline:
            events = sum(head.events for head in heads.values() if head is not None)
            return LedgerCheck(len(consent_ids), equal, events)
        await asyncio.sleep(_POLL_S)
