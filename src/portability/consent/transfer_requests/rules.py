"""What the transfer store checks against a transfer's consent.

A transfer is built only while its consent is active: a snapshot of an older epoch too (its
consent's deltas stamped with that epoch wait for its pages), an archive while its one-time
consent is; and a one-time consent whose archive was built is used up (removal reason
``completed``): another transfer is refused, saying where the archive is.
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from portability.consent.errors import ConflictError
from portability.consent.models import Consent, Transfer

__all__ = ["check_transferable", "consent_active", "used_up"]


def consent_active(session: Session, row: Transfer) -> bool:
    """Whether the transfer's consent is still active (its archive may still go out)."""
    consent = session.get(Consent, row.consent_id)
    return consent is not None and consent.status == "active"


def check_transferable(session: Session, consent: Consent) -> None:
    """Refuse a transfer of a consent that is not an active one-time consent.

    Raises:
        ConflictError: The consent is used up (its archive was built), ended, or ongoing.
    """
    if consent.removal_reason == "completed":
        raise ConflictError(used_up(session, consent))
    if consent.status != "active":
        raise ConflictError(
            f"consent {consent.consent_id!r} is {consent.status}: a transfer needs an active "
            "consent"
        )
    if consent.mode != "one_time":
        raise ConflictError(
            f"consent {consent.consent_id!r} is ongoing: its data flows as deltas after its "
            "initial snapshot; one-time transfers are for one-time consents"
        )


def used_up(session: Session, consent: Consent) -> str:
    """Why a completed one-time consent gets no other transfer, and where its archive is."""
    query = (
        select(Transfer)
        .where(col(Transfer.consent_id) == consent.consent_id, col(Transfer.kind) == "archive")
        .where(col(Transfer.state).in_(("ready", "expired")))
        .order_by(col(Transfer.ready_at).desc())
    )
    built = session.exec(query).first()
    where = ""
    if built is not None and built.state == "ready" and built.expires_at is not None:
        where = (
            f"; its archive {built.transfer_id!r} can be downloaded until "
            f"{built.expires_at.isoformat()} (GET /v1/transfers/{built.transfer_id}/archive)"
        )
    elif built is not None:
        where = f"; its archive {built.transfer_id!r} is {built.state}"
    return (
        f"consent {consent.consent_id!r} is used up: a one-time consent gives one archive and "
        f"its archive was built (removal reason completed){where}. For another copy the user "
        "grants a new consent"
    )
