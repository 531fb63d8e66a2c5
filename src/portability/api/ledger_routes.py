"""The ledger's route: a consent's hash chain head and counts, as the platform delivered them.

An app recomputes the chain from what it received (docs/webhooks.md, "The ledger") and
compares its head with this one: equal heads mean it received every event up to the
platform's latest delivered one, unchanged and in order. The app holding the consent, the
platform and operators may ask; another app's consent is 404, as if it did not exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from fastapi import APIRouter
from pydantic import BaseModel, Field

from portability.api.dependencies import Caller, ConsentId, Context, visible_consent
from portability.messages.ledgers import LedgerView, consent_ledger

__all__ = ["LedgerResponse", "ledger_router"]

ledger_router = APIRouter(tags=["consents"])

ALGORITHM: Final = "sha256 chain, see docs/webhooks.md#the-ledger"


class LedgerResponse(BaseModel):
    """A consent's ledger: the chain's value after its latest delivered event, and counts."""

    consent_id: str
    app_id: str
    head: str = Field(
        pattern="^[0-9a-f]{64}$",
        description="The chain's value after the latest event delivered (answered 2xx); the "
        "chain's start while nothing was delivered.",
    )
    events: int = Field(
        ge=0, description="Events in the chain: deltas, snapshot pages, the removal, downloads."
    )
    deltas: int = Field(ge=0)
    pages: int = Field(ge=0, description="Snapshot pages.")
    removals: int = Field(ge=0, description="authorization.removed events (0 or 1).")
    updated_at: datetime | None = Field(
        description="When the latest event in the chain was delivered; null while none was."
    )
    algorithm: str = Field(description="How the chain is computed, and where it is described.")

    @classmethod
    def of(cls, view: LedgerView) -> LedgerResponse:
        return cls(
            consent_id=view.consent_id,
            app_id=view.app_id,
            head=view.head,
            events=view.events,
            deltas=view.deltas,
            pages=view.pages,
            removals=view.removals,
            updated_at=view.updated_at,
            algorithm=ALGORITHM,
        )


@ledger_router.get("/consents/{consent_id}/ledger")
def get_consent_ledger(consent_id: ConsentId, context: Context, caller: Caller) -> LedgerResponse:
    """The consent's ledger head and counts as delivered (the app, the platform, operators).

    Compare ``head`` with the one you computed from what you received: equal, you hold every
    event the platform delivered, unchanged and in order. The platform's head follows the
    message log, a moment behind the deliveries: while it is behind, it is a value your chain
    passed through (compare again shortly). A consent nothing was delivered to has the
    chain's start, and counts 0.
    """
    consent = visible_consent(context, caller, consent_id)
    view = consent_ledger(context.messages.engine, consent.consent_id, consent.app_id)
    return LedgerResponse.of(view)
